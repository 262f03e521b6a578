//! What the provisioner sends the API server for a project, read back from the API-server
//! double: a pod that runs non-root with a fixed uid, no capabilities, no privilege
//! escalation, the runtime's seccomp profile, no service-account token, a read-only root
//! (unless the template needs it writable) and resource limits; and a NetworkPolicy that
//! admits only rdev's pods in and only DNS and the allow-list out. Deleting the project
//! removes both; a bad template or a foreign object creates (and deletes) nothing of others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdev::adapters::kubernetes::{
    Credentials, DEFAULT_CPU, DEFAULT_MEMORY, DEFAULT_POD_UID, KubernetesExecutor,
    KubernetesProvisioner, PodTemplate,
};
use rdev::domain::{ProjectId, WorkspaceSpec};
use rdev::ports::{ProvisionError, WorkspaceProvisioner};
use rdev_tests::harness::kubernetes::{
    KubeProject, kubernetes_validate, project_labels, project_pod, validated_documents,
};
use rdev_tests::harness::runtime::MapSecrets;
use serde_json::{Value, json};

fn id(value: &str) -> ProjectId {
    ProjectId::parse(value).expect("id")
}

/// The API-server double (with an unrelated project's pod) and a provisioner over it.
async fn provisioner(defaults: PodTemplate) -> (KubeProject, KubernetesProvisioner) {
    let pod = project_pod("other", Arc::new(MapSecrets::default())).await;
    provisioner_with(pod, defaults).await
}

/// A provisioner with `defaults` on the same double and executor settings as `pod`.
async fn provisioner_with(
    pod: KubeProject,
    defaults: PodTemplate,
) -> (KubeProject, KubernetesProvisioner) {
    let executor = KubernetesExecutor::connect(
        Credentials::Url(pod.api.url()),
        pod.executor.config().clone(),
        Arc::new(MapSecrets::default()),
    )
    .await
    .expect("client");
    let provisioner =
        KubernetesProvisioner::new(Arc::new(executor), defaults, Duration::from_secs(30))
            .poll_every(Duration::from_millis(20));
    (pod, provisioner)
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(object["metadata"]["labels"].clone()).expect("labels")
}

#[tokio::test]
async fn the_pod_is_hardened_and_fenced_by_its_network_policy_until_deletion() {
    let mut defaults = PodTemplate::new("ghcr.io/orchard9/workspace:1");
    defaults.labels.insert("team".into(), "dev".into());
    defaults.egress = vec!["10.20.0.0/16:443".parse().expect("rule")];
    let (pod, provisioner) = provisioner(defaults).await;
    let api = &pod.api;
    let project = id("locked");
    provisioner
        .provision(&project, &WorkspaceSpec::default())
        .await
        .expect("provisioned");

    let created = api.created_pod("rdev-locked").expect("pod created");
    let spec = &created["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
    let pod_security = &spec["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    for field in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert_eq!(pod_security[field], DEFAULT_POD_UID, "{field}");
    }
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault");

    let container = &spec["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["privileged"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    let resources = json!({"cpu": DEFAULT_CPU, "memory": DEFAULT_MEMORY});
    assert_eq!(container["resources"]["requests"], resources);
    assert_eq!(container["resources"]["limits"], resources);

    // With the root read-only, the writable places are the workspace volume (HOME on it)
    // and an emptyDir /tmp (TMPDIR, the wrapper's state).
    let workspace_dir = pod.executor.config().workspace_dir.clone();
    let home = pod.executor.config().home_dir.clone();
    assert!(home.starts_with(&workspace_dir), "HOME on the volume");
    let mounts: BTreeMap<String, String> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["mountPath"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        BTreeMap::from([
            ("workspace".to_owned(), workspace_dir),
            ("tmp".to_owned(), "/tmp".to_owned())
        ])
    );
    let volumes = spec["volumes"].as_array().expect("volumes");
    let tmp = volumes
        .iter()
        .find(|v| v["name"] == "tmp")
        .expect("tmp volume");
    assert_eq!(tmp["emptyDir"]["sizeLimit"], "1Gi");
    let env = container["env"].as_array().expect("env");
    assert!(env.contains(&json!({"name": "HOME", "value": home})));
    assert!(env.contains(&json!({"name": "TMPDIR", "value": "/tmp"})));

    // The NetworkPolicy selects exactly this pod's labels.
    let policy = api
        .network_policy("rdev-locked")
        .expect("NetworkPolicy created");
    assert_eq!(policy["metadata"]["labels"]["team"], "dev");
    let selector: BTreeMap<String, String> =
        serde_json::from_value(policy["spec"]["podSelector"]["matchLabels"].clone())
            .expect("selector");
    assert_eq!(
        selector,
        BTreeMap::from([
            ("rdev.orchard9.ai/project".to_owned(), "true".to_owned()),
            (
                "rdev.orchard9.ai/project-id".to_owned(),
                "locked".to_owned()
            ),
        ])
    );
    let pod_labels = labels_of(&created);
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let other = project_labels_selecting(&selector, "other");
    assert!(!other, "another project's pod is not selected");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rdev"}}}]}])
    );
    let egress = policy["spec"]["egress"].as_array().expect("egress");
    assert_eq!(egress.len(), 2, "DNS and the one allowed range: {egress:?}");
    assert_eq!(
        egress[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
        "kube-dns"
    );
    assert_eq!(
        egress[0]["ports"],
        json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
    );
    assert_eq!(
        egress[1],
        json!({"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 443}]})
    );

    // Both objects as sent pass the Kubernetes schemas in strict mode (no unknown field).
    let scratch = tempfile::tempdir().expect("tempdir");
    let files: Vec<std::path::PathBuf> = [("pod", &created), ("policy", &policy)]
        .into_iter()
        .map(|(name, object)| {
            let path = scratch.path().join(format!("{name}.json"));
            std::fs::write(&path, object.to_string()).expect("write");
            path
        })
        .collect();
    match kubernetes_validate(&files) {
        Ok(output) => {
            assert!(
                output.status.success(),
                "strict validation: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(validated_documents(&output), 2);
        }
        Err(reason) => rdev_tests::harness::skip_or_fail(&reason),
    }

    provisioner.deprovision(&project).await.expect("deleted");
    assert!(api.created_pod("rdev-locked").is_none());
    assert!(api.pvc("rdev-locked-workspace").is_none());
    assert!(api.network_policy("rdev-locked").is_none());
}

/// Whether `selector` would select the pod of `project` (it must not, for another project).
fn project_labels_selecting(selector: &BTreeMap<String, String>, project: &str) -> bool {
    let labels: BTreeMap<String, String> = project_labels(project)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[tokio::test]
async fn a_template_may_keep_the_root_writable_and_set_its_own_egress() {
    let (pod, provisioner) = provisioner(PodTemplate::new("img")).await;
    let spec = WorkspaceSpec {
        read_only_root: Some(false),
        cpu: Some("3".into()),
        egress: Some(vec!["192.0.2.10".into(), "[2001:db8::/32]:8443".into()]),
        ..WorkspaceSpec::default()
    };
    provisioner
        .provision(&id("builder"), &spec)
        .await
        .expect("provisioned");
    let created = pod.api.created_pod("rdev-builder").expect("pod");
    let container = &created["spec"]["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        false
    );
    // Everything else stays hardened.
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(container["resources"]["limits"]["cpu"], "3");
    let policy = pod.api.network_policy("rdev-builder").expect("policy");
    let cidrs: Vec<&str> = policy["spec"]["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .filter_map(|rule| rule["to"][0]["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(cidrs, ["192.0.2.10/32", "2001:db8::/32"]);
}

#[tokio::test]
async fn a_host_name_rule_or_a_root_uid_creates_nothing() {
    let (pod, provisioner) = provisioner(PodTemplate::new("img")).await;
    let spec = WorkspaceSpec {
        egress: Some(vec!["api.anthropic.com:443".into()]),
        ..WorkspaceSpec::default()
    };
    let error = provisioner
        .provision(&id("named"), &spec)
        .await
        .expect_err("host names cannot be NetworkPolicy rules");
    assert!(matches!(error, ProvisionError::Failed { .. }), "{error:?}");
    assert!(error.to_string().contains("egress proxy"), "{error}");
    assert!(pod.api.pvc("rdev-named-workspace").is_none());
    assert!(pod.api.network_policy("rdev-named").is_none());
    assert!(pod.api.created_pod("rdev-named").is_none());

    let mut root = PodTemplate::new("img");
    root.run_as_user = 0;
    let (pod, provisioner) = provisioner_with(pod, root).await;
    let error = provisioner
        .provision(&id("rooted"), &WorkspaceSpec::default())
        .await
        .expect_err("uid 0 refused");
    assert!(error.to_string().contains("non-root"), "{error}");
    assert!(pod.api.pvc("rdev-rooted-workspace").is_none());
    assert!(pod.api.created_pod("rdev-rooted").is_none());
}

#[tokio::test]
async fn a_foreign_network_policy_is_left_alone_and_the_volume_removed() {
    let (pod, provisioner) = provisioner(PodTemplate::new("img")).await;
    pod.api.add_network_policy("rdev-taken");
    let error = provisioner
        .provision(&id("taken"), &WorkspaceSpec::default())
        .await
        .expect_err("conflict");
    assert!(matches!(error, ProvisionError::Exists(_)), "{error:?}");
    assert!(
        pod.api.network_policy("rdev-taken").is_some(),
        "not ours, kept"
    );
    assert!(
        pod.api.pvc("rdev-taken-workspace").is_none(),
        "ours, removed"
    );
    assert!(pod.api.created_pod("rdev-taken").is_none());
}
