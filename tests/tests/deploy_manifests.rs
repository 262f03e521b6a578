//! `examples/deploy/`: every document parses as YAML into the Kubernetes API type of its
//! kind (a schema check without a cluster), and the pieces fit together: the Role grants
//! exactly what the Kubernetes executor needs, the binding names it, the Deployment runs two
//! replicas as that service account with readiness on `/readyz` and the secrets by reference,
//! and the Service selects the Deployment's pods. `kubectl apply --dry-run=client` accepts them
//! (against the API-server double, which answers discovery), and PyPI's `kubernetes-validate`
//! passes every document against the Kubernetes JSON schemas in strict mode. The Deployment
//! runs the image `cargo xtask image` builds (tests/tests/image.rs checks the image itself).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rdev_tests::doubles::kube_api::FakeKubeApi;
use rdev_tests::harness::kubernetes::{kubernetes_validate, validated_documents};
use serde_json::Value;
use xtask::image;

/// `examples/deploy`, the manifests' directory.
fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy")
}

/// The manifests of [`deploy_dir`], sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("examples/deploy exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of every manifest, as `(file, document)`.
fn documents() -> Vec<(String, Value)> {
    let files = manifest_files();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
        documents.extend(parsed.into_iter().map(|doc| (name.clone(), doc)));
    }
    documents
}

/// The one document of `kind`, deserialized into its API type.
fn one<T: serde::de::DeserializeOwned>(documents: &[(String, Value)], kind: &str) -> T {
    let matching: Vec<&(String, Value)> = documents
        .iter()
        .filter(|(_, doc)| doc["kind"] == kind)
        .collect();
    assert_eq!(matching.len(), 1, "exactly one {kind}");
    let (file, doc) = matching[0];
    serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: {kind} does not match the API schema: {e}"))
}

#[test]
fn every_document_is_a_known_kind_in_the_rdev_namespace() {
    let documents = documents();
    let kinds: BTreeSet<&str> = documents
        .iter()
        .map(|(_, doc)| doc["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "Deployment",
            "Namespace",
            "NetworkPolicy",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ])
    );
    for (file, doc) in &documents {
        assert!(doc["apiVersion"].is_string(), "{file}: apiVersion");
        assert!(doc["metadata"]["name"].is_string(), "{file}: name");
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "rdev", "{file}: namespace");
        }
    }
    let namespace: Namespace = one(&documents, "Namespace");
    assert_eq!(namespace.metadata.name.as_deref(), Some("rdev"));
}

#[test]
fn the_role_grants_only_what_the_executor_needs_and_is_bound_to_rdev() {
    let documents = documents();
    let account: ServiceAccount = one(&documents, "ServiceAccount");
    let role: Role = one(&documents, "Role");
    let binding: RoleBinding = one(&documents, "RoleBinding");
    let rules = role.rules.expect("rules");
    let resources: BTreeSet<String> = rules
        .iter()
        .flat_map(|rule| rule.resources.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        resources,
        BTreeSet::from(
            [
                "networkpolicies",
                "persistentvolumeclaims",
                "pods",
                "pods/exec",
                "pods/portforward"
            ]
            .map(String::from)
        )
    );
    for rule in &rules {
        let resources = rule.resources.clone().unwrap_or_default();
        let group = if resources == ["networkpolicies"] {
            "networking.k8s.io"
        } else {
            ""
        };
        assert_eq!(
            rule.api_groups.as_deref(),
            Some(&[group.to_owned()][..]),
            "{resources:?}: core group, NetworkPolicies in their own"
        );
        assert!(
            !rule.verbs.iter().any(|verb| verb == "*"),
            "no wildcard verbs"
        );
    }
    let exec = rules
        .iter()
        .find(|rule| {
            rule.resources
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r == "pods/exec"))
        })
        .expect("exec rule");
    // The exec and port-forward WebSocket upgrades are GETs, authorized as `create`.
    assert!(exec.verbs.iter().any(|verb| verb == "create"));
    assert!(exec.verbs.iter().any(|verb| verb == "get"));

    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
}

#[test]
fn the_deployment_runs_two_ready_checked_replicas_with_secret_references() {
    let documents = documents();
    let account: ServiceAccount = one(&documents, "ServiceAccount");
    let deployment: Deployment = one(&documents, "Deployment");
    let service: Service = one(&documents, "Service");
    let spec = deployment.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let template_labels: BTreeMap<String, String> = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("template labels");
    let selector = spec.selector.match_labels.expect("selector");
    assert!(
        selector
            .iter()
            .all(|(k, v)| template_labels.get(k) == Some(v))
    );
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name, account.metadata.name);
    let container = &pod.containers[0];
    let probe = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("HTTP readiness probe");
    assert_eq!(probe.path.as_deref(), Some("/readyz"));

    let env = container.env.clone().unwrap_or_default();
    for (name, key) in [
        ("RDEV_DATABASE_URL", "database-url"),
        ("RDEV_MASTER_KEY", "master-key"),
    ] {
        let var = env
            .iter()
            .find(|var| var.name == name)
            .unwrap_or_else(|| panic!("{name} is set"));
        assert!(var.value.is_none(), "{name} is never inline");
        let reference = var
            .value_from
            .as_ref()
            .and_then(|from| from.secret_key_ref.as_ref())
            .unwrap_or_else(|| panic!("{name} comes from a Secret"));
        assert_eq!(reference.key, key);
    }

    let port_names: BTreeSet<String> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|port| port.name.clone())
        .collect();
    let service = service.spec.expect("service spec");
    let service_selector = service.selector.expect("service selector");
    assert!(
        service_selector
            .iter()
            .all(|(k, v)| template_labels.get(k) == Some(v)),
        "the Service selects the Deployment's pods"
    );
    for port in service.ports.expect("ports") {
        match port.target_port {
            Some(IntOrString::String(name)) => {
                assert!(port_names.contains(&name), "target port {name} exists")
            }
            other => panic!("target port by name expected, got {other:?}"),
        }
    }
}

/// The Deployment runs what `cargo xtask image` builds, the way the image expects: its tag,
/// its command, its uid, its port, and a writable volume at its data directory.
#[test]
fn the_deployment_runs_the_image_cargo_xtask_image_builds() {
    let documents = documents();
    let deployment: Deployment = one(&documents, "Deployment");
    let pod = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(image::default_tag().as_str())
    );
    assert_eq!(container.command, None, "the image's entrypoint runs");
    assert_eq!(container.args.as_deref(), Some(&["serve".to_owned()][..]));
    let security = pod.security_context.expect("pod securityContext");
    assert_eq!(security.run_as_user, Some(i64::from(image::IMAGE_UID)));
    assert_eq!(security.run_as_group, Some(i64::from(image::IMAGE_UID)));
    let ports: Vec<i32> = container
        .ports
        .iter()
        .flatten()
        .map(|port| port.container_port)
        .collect();
    assert_eq!(ports, vec![i32::from(image::IMAGE_PORT)]);
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    assert!(
        mounts.iter().any(|m| m.mount_path == image::IMAGE_DATA_DIR),
        "a volume at the image's data directory: {mounts:?}"
    );
}

#[test]
fn rdev_runs_hardened_and_every_pod_is_fenced_by_a_network_policy() {
    let documents = documents();
    let deployment: Deployment = one(&documents, "Deployment");
    let template = deployment.spec.expect("spec").template;
    let labels = template
        .metadata
        .and_then(|m| m.labels)
        .expect("template labels");
    let pod = template.spec.expect("pod spec");
    let pod_security = pod.security_context.expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|uid| uid > 0));
    assert_eq!(
        pod_security.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("RuntimeDefault")
    );
    let container = &pod.containers[0];
    let security = container
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    assert!(limits.contains_key("cpu") && limits.contains_key("memory"));

    let policies: Vec<NetworkPolicy> = documents
        .iter()
        .filter(|(_, doc)| doc["kind"] == "NetworkPolicy")
        .map(|(file, doc)| {
            serde_json::from_value(doc.clone())
                .unwrap_or_else(|e| panic!("{file}: NetworkPolicy does not match the API: {e}"))
        })
        .collect();
    let selecting = |wanted: &BTreeMap<String, String>| {
        policies
            .iter()
            .filter_map(|p| p.spec.as_ref())
            .find(|spec| {
                spec.pod_selector
                    .as_ref()
                    .and_then(|selector| selector.match_labels.as_ref())
                    .is_some_and(|m| m.iter().all(|(k, v)| wanted.get(k) == Some(v)))
            })
            .cloned()
            .expect("a policy selects these pods")
    };
    let project_pod = BTreeMap::from([
        ("rdev.orchard9.ai/project".to_owned(), "true".to_owned()),
        ("rdev.orchard9.ai/project-id".to_owned(), "any".to_owned()),
    ]);
    let floor = selecting(&project_pod);
    assert_eq!(
        floor.policy_types,
        Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
    );
    assert!(
        floor.ingress.is_none() && floor.egress.is_none(),
        "deny all"
    );

    let own = selecting(&labels);
    let ingress_ports: Vec<IntOrString> = own
        .ingress
        .iter()
        .flatten()
        .flat_map(|rule| rule.ports.clone().unwrap_or_default())
        .filter_map(|port| port.port)
        .collect();
    let container_ports: Vec<IntOrString> = container
        .ports
        .iter()
        .flatten()
        .map(|port| IntOrString::Int(port.container_port))
        .collect();
    assert_eq!(ingress_ports, container_ports, "only the HTTP port is open");
    assert!(own.egress.is_some_and(|rules| !rules.is_empty()));
}

/// Every manifest against the Kubernetes JSON schemas in strict mode, offline; the same
/// check refuses a misspelt field, which the k8s-openapi parse above would silently drop.
#[test]
fn every_manifest_passes_strict_schema_validation_and_a_typo_does_not() {
    let files = manifest_files();
    let output = match kubernetes_validate(&files) {
        Ok(output) => output,
        Err(reason) => return rdev_tests::harness::skip_or_fail(&reason),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "strict validation failed: {report}"
    );
    assert_eq!(
        validated_documents(&output),
        documents().len(),
        "every document validated: {report}"
    );

    let scratch = tempfile::tempdir().expect("tempdir");
    let typo = scratch.path().join("typo.yaml");
    let deployment = std::fs::read_to_string(deploy_dir().join("deployment.yaml")).expect("read");
    let misspelt = deployment.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem");
    assert_ne!(misspelt, deployment, "the field to misspell is there");
    std::fs::write(&typo, misspelt).expect("write");
    let output = kubernetes_validate(&[typo]).expect("ran before");
    assert!(
        !output.status.success(),
        "a misspelt field passed strict validation"
    );
}

/// `kubectl apply --dry-run=client --validate=false -f <dir>` against the loopback API-server
/// double (client dry-run still asks a server for discovery and for the current objects;
/// the double answers discovery and "not found"), through a throwaway kubeconfig so the
/// developer's clusters stay out of it. `None` when kubectl is not installed.
fn kubectl_dry_run(dir: &std::path::Path) -> Option<std::process::Output> {
    let api = FakeKubeApi::start().expect("API double");
    let scratch = tempfile::tempdir().expect("tempdir");
    let kubeconfig = scratch.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: double, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: none, user: {{}}}}]\n\
             contexts: [{{name: double, context: {{cluster: double, user: none}}}}]\n\
             current-context: double\n",
            api.url()
        ),
    )
    .expect("kubeconfig");
    let output = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", scratch.path())
        .arg("--cache-dir")
        .arg(scratch.path().join("cache"))
        .args(["apply", "--dry-run=client", "--validate=false", "-f"])
        .arg(dir)
        .output();
    match output {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("running kubectl: {e}"),
    }
}

#[test]
fn kubectl_client_dry_run_accepts_every_manifest_and_refuses_broken_ones() {
    let Some(output) = kubectl_dry_run(&deploy_dir()) else {
        return rdev_tests::harness::skip_or_fail("kubectl is not installed");
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubectl refused the manifests: {stderr}"
    );
    let seen: BTreeSet<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_suffix(" created (dry run)"))
        .collect();
    let expected: BTreeSet<String> = documents()
        .iter()
        .map(|(_, doc)| {
            let kind = doc["kind"].as_str().unwrap_or_default().to_lowercase();
            let group = doc["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .rsplit_once('/')
                .map(|(group, _)| format!(".{group}"))
                .unwrap_or_default();
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            format!("{kind}{group}/{name}")
        })
        .collect();
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(seen, expected, "kubectl applied every document: {stdout}");

    // The same run fails on a manifest kubectl cannot parse or map to a resource.
    for broken in [
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
        "apiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: typo\n",
    ] {
        let scratch = tempfile::tempdir().expect("tempdir");
        std::fs::write(scratch.path().join("broken.yaml"), broken).expect("write");
        let output = kubectl_dry_run(scratch.path()).expect("kubectl ran before");
        assert!(!output.status.success(), "kubectl accepted {broken:?}");
    }
}
