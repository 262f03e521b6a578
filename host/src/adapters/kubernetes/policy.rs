//! The project's NetworkPolicy: ingress only from rdev's own pods, egress to cluster DNS and
//! the allow-listed address ranges.
//!
//! A NetworkPolicy matches packets by address and port, never by host name, so an allow-list
//! of host names (what the confined local executor's egress proxy enforces) cannot be written
//! as one. Rules here are CIDRs with an optional TCP port; a host name is refused with an
//! error saying so. Clusters that need host-name rules run an egress proxy, allow its
//! address here and hand its URL to the pods (see docs/kubernetes.md).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};

/// Namespace and labels of the cluster DNS pods every project pod may query (CoreDNS as
/// kubeadm, GKE, EKS and AKS deploy it).
const DNS_NAMESPACE: &str = "kube-system";
const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

/// One allowed destination: an address range (`10.0.0.0/8`, a bare address meaning just that
/// one) and, optionally, a TCP port (`10.0.0.0/8:443`, `[2001:db8::/32]:443`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    address: IpAddr,
    prefix: u8,
    port: Option<u16>,
}

/// A rule that is not a CIDR with an optional port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid egress rule {rule:?}: {reason}")]
pub struct EgressRuleError {
    pub rule: String,
    pub reason: &'static str,
}

impl std::str::FromStr for EgressRule {
    type Err = EgressRuleError;

    fn from_str(rule: &str) -> Result<Self, EgressRuleError> {
        let err = |reason| EgressRuleError {
            rule: rule.to_owned(),
            reason,
        };
        let trimmed = rule.trim();
        let (range, port) = match trimmed.strip_prefix('[') {
            Some(v6) => {
                let (range, after) = v6.split_once(']').ok_or_else(|| err("`[` is not closed"))?;
                match after.strip_prefix(':') {
                    Some(port) => (range, Some(port)),
                    None if after.is_empty() => (range, None),
                    None => return Err(err("text after `]`")),
                }
            }
            None if trimmed.matches(':').count() == 1 => {
                let (range, port) = trimmed.split_once(':').ok_or_else(|| err("no port"))?;
                (range, Some(port))
            }
            None => (trimmed, None),
        };
        let port = port
            .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0))
            .map(|p| p.ok_or_else(|| err("the port is not a number from 1 to 65535")))
            .transpose()?;
        let (address, prefix) = match range.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (range, None),
        };
        let address: IpAddr = address.parse().map_err(|_| {
            err(
                "NetworkPolicy matches addresses, not host names: allow the address range, \
                 or run an egress proxy and allow its address (docs/kubernetes.md)",
            )
        })?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("the prefix length is out of range"))?,
            None => max,
        };
        Ok(Self {
            address,
            prefix,
            port,
        })
    }
}

/// Read from configuration as its text form, so a bad rule fails loading with the reason.
impl<'de> serde::Deserialize<'de> for EgressRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.port, self.address) {
            (Some(port), IpAddr::V6(_)) => write!(f, "[{}]:{port}", self.cidr()),
            (Some(port), IpAddr::V4(_)) => write!(f, "{}:{port}", self.cidr()),
            (None, _) => f.write_str(&self.cidr()),
        }
    }
}

impl EgressRule {
    /// The range in the notation a NetworkPolicy's `ipBlock` takes.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }

    /// The TCP port, if the rule names one (none: every port and protocol).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    fn peer(&self) -> Value {
        let mut rule = json!({"to": [{"ipBlock": {"cidr": self.cidr()}}]});
        if let Some(port) = self.port {
            rule["ports"] = json!([{"protocol": "TCP", "port": port}]);
        }
        rule
    }
}

/// The NetworkPolicy selecting exactly the project's pod (by the same labels the executor
/// finds it with): ingress only from pods labelled `ingress_from`, egress only to cluster DNS
/// and `egress`. Exec and port-forward reach the pod through the kubelet, not the pod network,
/// so they keep working under it.
pub fn network_policy(
    name: &str,
    labels: &BTreeMap<String, String>,
    selector: &BTreeMap<String, String>,
    ingress_from: &BTreeMap<String, String>,
    egress: &[EgressRule],
) -> Value {
    let dns = json!({
        "to": [{
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": DNS_NAMESPACE}
            },
            "podSelector": {"matchLabels": {DNS_LABEL.0: DNS_LABEL.1}},
        }],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    });
    let egress: Vec<Value> = std::iter::once(dns)
        .chain(egress.iter().map(EgressRule::peer))
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": ingress_from}}]}],
            "egress": egress,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_cidrs_with_an_optional_port() {
        for (rule, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.0.0.0/8:443", "10.0.0.0/8:443"),
            ("192.0.2.7", "192.0.2.7/32"),
            (" 192.0.2.7:5432 ", "192.0.2.7/32:5432"),
            ("[2001:db8::/32]:443", "[2001:db8::/32]:443"),
            ("2001:db8::1", "2001:db8::1/128"),
            ("[::]", "::/128"),
        ] {
            let parsed: EgressRule = rule.parse().unwrap_or_else(|e| panic!("{rule}: {e}"));
            assert_eq!(parsed.to_string(), shown);
        }
        for rule in [
            "api.anthropic.com",
            "api.anthropic.com:443",
            "*.github.com",
            "10.0.0.0/33",
            "10.0.0.0/8:0",
            "10.0.0.0/8:https",
            "[2001:db8::/32",
            "[2001:db8::/129]",
            "",
        ] {
            assert!(rule.parse::<EgressRule>().is_err(), "{rule:?} accepted");
        }
    }

    #[test]
    fn the_policy_admits_rdev_in_and_dns_plus_the_rules_out() {
        let selector = BTreeMap::from([("project-id".to_owned(), "p".to_owned())]);
        let from = BTreeMap::from([("app".to_owned(), "rdev".to_owned())]);
        let rules: Vec<EgressRule> = ["10.1.0.0/16:443", "192.0.2.1"]
            .iter()
            .map(|r| r.parse().expect("rule"))
            .collect();
        let policy = network_policy("rdev-p", &selector, &selector, &from, &rules);
        let spec = &policy["spec"];
        assert_eq!(spec["podSelector"]["matchLabels"]["project-id"], "p");
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            spec["ingress"],
            json!([{"from": [{"podSelector": {"matchLabels": {"app": "rdev"}}}]}])
        );
        let egress = spec["egress"].as_array().expect("egress");
        assert_eq!(egress.len(), 3);
        assert_eq!(egress[0]["ports"][0]["port"], 53);
        assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "10.1.0.0/16");
        assert_eq!(
            egress[1]["ports"],
            json!([{"protocol": "TCP", "port": 443}])
        );
        assert_eq!(egress[2]["to"][0]["ipBlock"]["cidr"], "192.0.2.1/32");
        assert!(egress[2].get("ports").is_none(), "every port");
    }
}
