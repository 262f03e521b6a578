//! What a project pod is made of: the operator's defaults, which a template's `[workspace]`
//! may override in part, including the hardening every pod gets.

use std::collections::BTreeMap;

use crate::domain::WorkspaceSpec;

use super::policy::{EgressRule, EgressRuleError};

/// The uid (and gid, and fsGroup) project pods run as: unprivileged, the same number the
/// confined local executor uses, so files in a workspace look alike under both executors.
pub const DEFAULT_POD_UID: i64 = 64_000;

/// CPU limit (and request) of a project pod unless the operator or template sets one.
pub const DEFAULT_CPU: &str = "1";
/// Memory limit (and request) of a project pod unless the operator or template sets one.
pub const DEFAULT_MEMORY: &str = "2Gi";
/// Size limit of the pod's `/tmp` (an emptyDir, counted against the node's ephemeral storage).
pub const DEFAULT_TMP_SIZE: &str = "1Gi";

/// What a project pod is made of (the project template's part, with operator defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTemplate {
    pub image: String,
    /// The container's command; the image must keep running for exec to reach it.
    pub command: Vec<String>,
    /// Size of the workspace volume (which also holds HOME), e.g. `10Gi`.
    pub storage: String,
    pub storage_class: Option<String>,
    /// Requests and limits alike (Guaranteed QoS: a busy agent cannot starve its neighbours
    /// beyond what was scheduled for it).
    pub cpu: String,
    pub memory: String,
    /// Size limit of the writable `/tmp`.
    pub tmp_size: String,
    /// A service account without API access; its token is never mounted.
    pub service_account: Option<String>,
    /// Extra labels on the pod and its volume (cost allocation, policies); the project
    /// labels the executor selects by always win.
    pub labels: BTreeMap<String, String>,
    /// uid, gid and fsGroup of the pod; never 0 (`runAsNonRoot` is always set).
    pub run_as_user: i64,
    /// Whether the image's filesystem is mounted read-only; only the workspace volume (HOME
    /// included) and `/tmp` are writable. Images that must write elsewhere (installing
    /// packages at run time) need a template saying `read_only_root = false`.
    pub read_only_root: bool,
    /// Where the project's pod may connect besides cluster DNS (the NetworkPolicy's egress).
    pub egress: Vec<EgressRule>,
    /// Labels of rdev's own pods: the only pods the NetworkPolicy admits as ingress.
    pub ingress_from: BTreeMap<String, String>,
}

impl PodTemplate {
    /// An image that sleeps forever, with a 10 GiB workspace, [`DEFAULT_CPU`] and
    /// [`DEFAULT_MEMORY`], as [`DEFAULT_POD_UID`] on a read-only root, reachable from pods
    /// labelled `app.kubernetes.io/name=rdev` and reaching nothing but DNS.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            command: vec!["sleep".to_owned(), "infinity".to_owned()],
            storage: "10Gi".to_owned(),
            storage_class: None,
            cpu: DEFAULT_CPU.to_owned(),
            memory: DEFAULT_MEMORY.to_owned(),
            tmp_size: DEFAULT_TMP_SIZE.to_owned(),
            service_account: None,
            labels: BTreeMap::new(),
            run_as_user: DEFAULT_POD_UID,
            read_only_root: true,
            egress: Vec::new(),
            ingress_from: BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "rdev".to_owned(),
            )]),
        }
    }

    /// The template's workspace wishes over these operator defaults. A template's egress list
    /// replaces the operator's; a rule NetworkPolicy cannot express is an error.
    pub fn merged(&self, spec: &WorkspaceSpec) -> Result<Self, EgressRuleError> {
        let mut merged = self.clone();
        if let Some(image) = &spec.image {
            merged.image = image.clone();
        }
        if let Some(storage) = &spec.storage {
            merged.storage = storage.clone();
        }
        if let Some(cpu) = &spec.cpu {
            merged.cpu = cpu.clone();
        }
        if let Some(memory) = &spec.memory {
            merged.memory = memory.clone();
        }
        if let Some(read_only) = spec.read_only_root {
            merged.read_only_root = read_only;
        }
        if let Some(egress) = &spec.egress {
            merged.egress = egress
                .iter()
                .map(|rule| rule.parse())
                .collect::<Result<_, _>>()?;
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_templates_workspace_overrides_only_what_it_names() {
        let mut defaults = PodTemplate::new("buildpack-deps:bookworm-scm");
        defaults.memory = "1Gi".into();
        defaults.storage_class = Some("fast".into());
        defaults.labels.insert("team".into(), "dev".into());
        defaults.egress = vec!["10.0.0.0/8:443".parse().expect("rule")];
        let spec = WorkspaceSpec {
            image: Some("rust:1.95".into()),
            cpu: Some("2".into()),
            storage: Some("20Gi".into()),
            read_only_root: Some(false),
            ..WorkspaceSpec::default()
        };
        let merged = defaults.merged(&spec).expect("merged");
        assert_eq!(merged.image, "rust:1.95");
        assert_eq!(merged.cpu, "2");
        assert_eq!(merged.memory, "1Gi", "kept from the defaults");
        assert_eq!(merged.storage, "20Gi");
        assert_eq!(merged.storage_class.as_deref(), Some("fast"));
        assert_eq!(merged.labels["team"], "dev");
        assert!(!merged.read_only_root);
        assert_eq!(merged.egress, defaults.egress);
        assert_eq!(
            defaults.merged(&WorkspaceSpec::default()).expect("merged"),
            defaults
        );
    }

    #[test]
    fn a_templates_egress_replaces_the_defaults_and_host_names_are_refused() {
        let defaults = PodTemplate::new("img");
        let spec = WorkspaceSpec {
            egress: Some(vec!["192.0.2.10:8443".into()]),
            ..WorkspaceSpec::default()
        };
        let merged = defaults.merged(&spec).expect("merged");
        assert_eq!(merged.egress.len(), 1);
        assert_eq!(merged.egress[0].to_string(), "192.0.2.10/32:8443");

        let spec = WorkspaceSpec {
            egress: Some(vec!["api.anthropic.com:443".into()]),
            ..WorkspaceSpec::default()
        };
        let error = defaults.merged(&spec).expect_err("host names refused");
        assert!(error.to_string().contains("egress proxy"), "{error}");
    }
}
