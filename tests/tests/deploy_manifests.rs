//! `examples/deploy/`: every document parses as YAML into the Kubernetes API type of its
//! kind (a schema check without a cluster), and the pieces fit together: the Role grants
//! exactly what the Kubernetes executor needs, the binding names it, the Deployment runs two
//! replicas as that service account with readiness on `/readyz` and the secrets by reference,
//! and the Service selects the Deployment's pods.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// Every document of every manifest, as `(file, document)`.
fn documents() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/deploy exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
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
                "persistentvolumeclaims",
                "pods",
                "pods/exec",
                "pods/portforward"
            ]
            .map(String::from)
        )
    );
    for rule in &rules {
        assert_eq!(
            rule.api_groups.as_deref(),
            Some(&[String::new()][..]),
            "core group only"
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

/// Runs kubectl on `dir` with no cluster: `annotate --local` decodes every document with
/// kubectl's own decoder and maps its kind without discovery (`apply`/`create
/// --dry-run=client` still ask an API server for the mapping). A throwaway empty kubeconfig
/// keeps the developer's clusters out of it. `None` when kubectl is not installed.
fn kubectl_local(dir: &std::path::Path) -> Option<std::process::Output> {
    let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
    let output = std::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig.path())
        .args(["annotate", "--local", "-o", "json", "-f"])
        .arg(dir)
        .arg("rdev.orchard9.ai/checked=true")
        .output();
    match output {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("running kubectl: {e}"),
    }
}

#[test]
fn kubectl_reads_every_manifest_and_refuses_a_broken_one() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy");
    let Some(output) = kubectl_local(&dir) else {
        return rdev_tests::harness::skip_or_fail("kubectl is not installed");
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl refused the manifests: {stderr}");
    let listed: Value = serde_json::from_slice(&output.stdout).expect("kubectl prints JSON");
    let items = listed["items"].as_array().expect("a List of every document");
    let seen: BTreeSet<(String, String)> = items
        .iter()
        .map(|item| {
            assert_eq!(item["metadata"]["annotations"]["rdev.orchard9.ai/checked"], "true");
            (
                item["kind"].as_str().unwrap_or_default().to_owned(),
                item["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = documents()
        .iter()
        .map(|(_, doc)| {
            (
                doc["kind"].as_str().unwrap_or_default().to_owned(),
                doc["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(seen, expected, "kubectl saw every document");

    // The same check on a manifest kubectl cannot decode fails.
    let broken = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        broken.path().join("broken.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n",
    )
    .expect("write");
    let output = kubectl_local(broken.path()).expect("kubectl ran before");
    assert!(!output.status.success(), "a broken manifest must fail");
}
