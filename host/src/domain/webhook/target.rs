//! Which network targets a webhook may reach: the URL's syntax and the class of every
//! address it resolves to (the SSRF policy).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::WebhookError;

/// Longest accepted target URL.
pub const MAX_URL_LEN: usize = 2048;

/// What kind of address a webhook target resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetClass {
    Public,
    Private,
    Loopback,
    LinkLocal,
    UniqueLocal,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    Multicast,
    Unspecified,
    /// Broadcast, reserved and documentation ranges: never a real endpoint.
    Reserved,
}

impl std::fmt::Display for TargetClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::UniqueLocal => "unique-local",
            Self::SharedAddressSpace => "shared (CGNAT)",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Reserved => "reserved",
        })
    }
}

impl TargetClass {
    /// Classifies an address; IPv4 embedded in IPv6 (mapped, compatible, NAT64) is judged
    /// as the IPv4 address it carries, so `::ffff:10.0.0.1` is private.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Self {
        let [a, b, ..] = ip.octets();
        if ip.is_unspecified() || a == 0 {
            Self::Unspecified
        } else if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_private() {
            Self::Private
        } else if ip.is_link_local() {
            Self::LinkLocal
        } else if a == 100 && (64..128).contains(&b) {
            Self::SharedAddressSpace
        } else if ip.is_multicast() {
            Self::Multicast
        } else if ip.is_broadcast() || ip.is_documentation() || a >= 240 || (a == 192 && b == 0) {
            Self::Reserved
        } else {
            Self::Public
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Self {
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        let segments = ip.segments();
        // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form (::a.b.c.d).
        if (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0; 4])
            || (segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
        {
            let [.., a, b, c, d] = ip.octets();
            return Self::of_v4(Ipv4Addr::new(a, b, c, d));
        }
        if ip.is_unspecified() {
            Self::Unspecified
        } else if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_multicast() {
            Self::Multicast
        } else if segments[0] & 0xffc0 == 0xfe80 || segments[0] & 0xffc0 == 0xfec0 {
            Self::LinkLocal
        } else if segments[0] & 0xfe00 == 0xfc00 {
            Self::UniqueLocal
        } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
            Self::Reserved
        } else {
            Self::Public
        }
    }

    /// Whether a webhook may target this class. `allow_private` (an operator's choice, e.g.
    /// for receivers on the same network) admits private, loopback, link-local,
    /// unique-local and CGNAT addresses; multicast, unspecified and reserved never are.
    pub fn allowed(self, allow_private: bool) -> bool {
        match self {
            Self::Public => true,
            Self::Private
            | Self::Loopback
            | Self::LinkLocal
            | Self::UniqueLocal
            | Self::SharedAddressSpace => allow_private,
            Self::Multicast | Self::Unspecified | Self::Reserved => false,
        }
    }
}

/// Checks one resolved address against the policy.
pub fn check_target(ip: IpAddr, allow_private: bool) -> Result<(), WebhookError> {
    let class = TargetClass::of(ip);
    if class.allowed(allow_private) {
        Ok(())
    } else {
        Err(WebhookError::TargetForbidden {
            target: ip.to_string(),
            class,
        })
    }
}

/// Where a webhook URL points, once its syntax is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    /// An IP literal: checkable without DNS.
    Ip(IpAddr),
    /// A name: checked after resolution.
    Name(String),
}

/// Checks a target URL's syntax: absolute `http`/`https`, a host, no fragment, at most
/// [`MAX_URL_LEN`]. Returns the host to check against the address policy.
pub fn check_url(url: &str) -> Result<UrlHost, WebhookError> {
    if url.len() > MAX_URL_LEN {
        return Err(WebhookError::InvalidUrl(format!(
            "longer than {MAX_URL_LEN} characters"
        )));
    }
    let parsed = url::Url::parse(url).map_err(|e| WebhookError::InvalidUrl(format!("{e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::InvalidUrl(format!(
            "scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    if parsed.fragment().is_some() {
        return Err(WebhookError::InvalidUrl("a fragment is not allowed".into()));
    }
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Ok(UrlHost::Ip(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => Ok(UrlHost::Ip(IpAddr::V6(ip))),
        Some(url::Host::Domain(name)) if !name.is_empty() => Ok(UrlHost::Name(name.to_owned())),
        _ => Err(WebhookError::InvalidUrl("a host is required".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classifier_refuses_internal_ranges() {
        let class = |s: &str| TargetClass::of(s.parse().expect("ip"));
        assert_eq!(class("10.1.2.3"), TargetClass::Private);
        assert_eq!(class("172.16.0.1"), TargetClass::Private);
        assert_eq!(class("192.168.1.1"), TargetClass::Private);
        assert_eq!(class("127.0.0.1"), TargetClass::Loopback);
        assert_eq!(class("169.254.169.254"), TargetClass::LinkLocal);
        assert_eq!(class("100.64.0.1"), TargetClass::SharedAddressSpace);
        assert_eq!(class("224.0.0.1"), TargetClass::Multicast);
        assert_eq!(class("0.0.0.0"), TargetClass::Unspecified);
        assert_eq!(class("255.255.255.255"), TargetClass::Reserved);
        assert_eq!(class("::1"), TargetClass::Loopback);
        assert_eq!(class("::"), TargetClass::Unspecified);
        assert_eq!(class("fe80::1"), TargetClass::LinkLocal);
        assert_eq!(class("fd12:3456::1"), TargetClass::UniqueLocal);
        assert_eq!(class("ff02::1"), TargetClass::Multicast);
        assert_eq!(class("::ffff:10.0.0.1"), TargetClass::Private);
        assert_eq!(class("::ffff:127.0.0.1"), TargetClass::Loopback);
        assert_eq!(class("64:ff9b::a9fe:a9fe"), TargetClass::LinkLocal);
        assert_eq!(class("93.184.216.34"), TargetClass::Public);
        assert_eq!(class("2606:4700::1111"), TargetClass::Public);
        assert!(check_target("127.0.0.1".parse().expect("ip"), true).is_ok());
        assert!(check_target("127.0.0.1".parse().expect("ip"), false).is_err());
        assert!(check_target("0.0.0.0".parse().expect("ip"), true).is_err());
        assert!(check_target("8.8.8.8".parse().expect("ip"), false).is_ok());
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert_eq!(
            check_url("https://hooks.example.com/x?y=1"),
            Ok(UrlHost::Name("hooks.example.com".into()))
        );
        assert_eq!(
            check_url("http://[::1]:8080/"),
            Ok(UrlHost::Ip("::1".parse().expect("ip")))
        );
        for bad in [
            "ftp://example.com/",
            "not a url",
            "http://",
            "https://x.example/#f",
        ] {
            assert_eq!(
                check_url(bad).map_err(|e| e.code()),
                Err("invalid_webhook_url"),
                "{bad}"
            );
        }
    }
}
