//! Project templates end to end: every built-in renders (defaults, variables, refusals), its
//! `.woodpecker.yaml` has the structure Woodpecker expects, operator templates load with
//! their safety checks, the Woodpecker client works against the loopback double, and the
//! setup service creates projects (files, first commit, CI registration, retry) over real
//! SQLite and PostgreSQL stores.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rdev::adapters::local::seed::{LocalProvisioner, LocalSeeder};
use rdev::adapters::store::{StoreOptions, connect};
use rdev::adapters::woodpecker::{WoodpeckerClient, WoodpeckerConfig};
use rdev::adapters::workspace_files::write_files;
use rdev::api::ApiError;
use rdev::domain::{AuditEntry, CiState, CredentialName, MasterKey, ProjectId, QueueConfig};
use rdev::ports::{Ci, CiError, CiSecret, SecretValue, Stores};
use rdev::services::project_setup::{CreateProject, ProjectSetupService, SetupError};
use rdev::services::templates::{Template, TemplateCatalog, TemplateError, TemplateOrigin};
use rdev_tests::doubles::woodpecker::{ForgeRepo, WoodpeckerDouble, step_id};
use serde_json::{Value, json};

const TOKEN: &str = "wp-pat-0123456789";
const TOKEN_CREDENTIAL: &str = "WOODPECKER_TOKEN";

fn project(id: &str) -> ProjectId {
    ProjectId::parse(id).expect("valid id")
}

fn vars(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A request for project `id` from `template`, with no variables, repository or CI.
fn new_project(id: &str, template: &str) -> CreateProject {
    CreateProject {
        id: id.into(),
        template: template.into(),
        vars: BTreeMap::new(),
        repo: None,
        ci_repo: None,
        display_name: None,
    }
}

/// The Rust template's `demo`, wired to the CI repository `acme/demo`.
fn rust_demo() -> CreateProject {
    CreateProject {
        vars: vars(&[("name", json!("demo"))]),
        ci_repo: Some("acme/demo".into()),
        ..new_project("demo", "rust")
    }
}

fn rendered(template: &Template, given: &[(&str, Value)]) -> BTreeMap<String, String> {
    let resolved = template.resolve(&vars(given)).expect("valid vars");
    template
        .render_files(&project("demo"), &resolved)
        .expect("renders")
        .into_iter()
        .map(|f| (f.path, String::from_utf8(f.contents).expect("utf-8")))
        .collect()
}

/// Checks the structure Woodpecker expects: `when` with `manual` among the events, and
/// steps that each have an image and a non-empty list of commands.
fn check_pipeline(template: &str, text: &str) -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)
        .unwrap_or_else(|e| panic!("{template}: .woodpecker.yaml is not YAML: {e}\n{text}"));
    let when = doc.get("when").expect("when");
    let conditions: Vec<&serde_yaml::Value> = match when {
        serde_yaml::Value::Sequence(list) => list.iter().collect(),
        other => vec![other],
    };
    let manual = conditions.iter().any(|c| match c.get("event") {
        Some(serde_yaml::Value::Sequence(events)) => {
            events.iter().any(|e| e.as_str() == Some("manual"))
        }
        Some(serde_yaml::Value::String(event)) => event == "manual",
        _ => false,
    });
    assert!(manual, "{template}: `when` lacks the manual event");
    let steps = doc
        .get("steps")
        .and_then(serde_yaml::Value::as_sequence)
        .unwrap_or_else(|| panic!("{template}: steps must be a list"));
    assert!(!steps.is_empty(), "{template}: no steps");
    steps
        .iter()
        .map(|step| {
            let name = step
                .get("name")
                .and_then(|n| n.as_str())
                .expect("step name");
            let image = step.get("image").and_then(|i| i.as_str()).unwrap_or("");
            assert!(!image.is_empty(), "{template}/{name}: no image");
            let commands = step
                .get("commands")
                .and_then(serde_yaml::Value::as_sequence)
                .unwrap_or_else(|| panic!("{template}/{name}: no commands"));
            assert!(!commands.is_empty(), "{template}/{name}: empty commands");
            assert!(
                commands
                    .iter()
                    .all(|c| c.as_str().is_some_and(|c| !c.is_empty()))
            );
            name.to_owned()
        })
        .collect()
}

#[test]
fn every_builtin_renders_with_defaults_and_a_valid_pipeline() {
    let catalog = TemplateCatalog::builtin();
    assert!(catalog.problems().is_empty(), "{:?}", catalog.problems());
    let names: Vec<&str> = catalog.list().map(Template::name).collect();
    assert_eq!(names, ["blank", "node", "python", "rust"]);
    for template in catalog.list() {
        assert_eq!(template.origin, TemplateOrigin::Builtin);
        let files = rendered(template, &[]);
        assert!(!files.contains_key("template.toml"));
        assert!(files.keys().all(|p| !p.ends_with(".jinja")), "{files:?}");
        assert!(
            files.values().all(|t| !t.contains("{{")),
            "unrendered braces"
        );
        let pipeline = files
            .get(".woodpecker.yaml")
            .unwrap_or_else(|| panic!("{} has no .woodpecker.yaml", template.name()));
        check_pipeline(template.name(), pipeline);
        assert!(template.info().variables.iter().all(|v| !v.required()));
    }
}

#[test]
fn variables_reach_files_and_paths() {
    let catalog = TemplateCatalog::builtin();
    let rust = catalog.get("rust").expect("rust");
    let files = rendered(
        rust,
        &[
            ("name", json!("demo")),
            ("edition", json!("2021")),
            ("clippy", json!("false")),
        ],
    );
    assert!(files["Cargo.toml"].contains("name = \"demo\""));
    assert!(files["Cargo.toml"].contains("edition = \"2021\""));
    assert!(files["README.md"].contains("project `demo`"));
    let steps = check_pipeline("rust", &files[".woodpecker.yaml"]);
    assert_eq!(steps, ["build", "test"]);
    let with_lint = rendered(rust, &[("clippy", json!(true))]);
    assert_eq!(
        check_pipeline("rust", &with_lint[".woodpecker.yaml"]),
        ["build", "lint", "test"]
    );
    assert!(
        with_lint["Cargo.toml"].contains("name = \"app\""),
        "default"
    );

    let python = catalog.get("python").expect("python");
    let files = rendered(
        python,
        &[
            ("package", json!("tool_kit")),
            ("python_version", json!("3.13")),
        ],
    );
    assert!(files.contains_key("src/tool_kit/__init__.py"), "{files:?}");
    assert!(files["tests/test_greeting.py"].contains("from tool_kit import"));
    assert!(files[".woodpecker.yaml"].contains("python:3.13"));

    let node = catalog.get("node").expect("node");
    let files = rendered(node, &[("name", json!("web-app"))]);
    let package: Value = serde_json::from_str(&files["package.json"]).expect("package.json");
    assert_eq!(package["name"], "web-app");
}

#[test]
fn invalid_values_are_refused_naming_the_variable() {
    let catalog = TemplateCatalog::builtin();
    let rust = catalog.get("rust").expect("rust");
    let invalid = |given: &[(&str, Value)]| rust.resolve(&vars(given)).expect_err("refused");
    for (given, variable) in [
        (vec![("name", json!("Demo!"))], "name"),
        (vec![("name", json!("a".repeat(300)))], "name"),
        (vec![("edition", json!("2018"))], "edition"),
        (vec![("clippy", json!("maybe"))], "clippy"),
        (vec![("clippy", json!(3))], "clippy"),
    ] {
        match invalid(&given) {
            TemplateError::InvalidValue {
                template,
                variable: v,
                ..
            } => {
                assert_eq!(template, "rust");
                assert_eq!(v, variable);
            }
            other => panic!("{given:?}: {other:?}"),
        }
    }
    assert!(matches!(
        invalid(&[("colour", json!("red"))]),
        TemplateError::UnknownVariable { variable, .. } if variable == "colour"
    ));
    assert!(matches!(
        catalog.get("cobol"),
        Err(TemplateError::NotFound { .. })
    ));
    let message = invalid(&[("edition", json!("2018"))]).to_string();
    assert!(
        message.contains("rust") && message.contains("edition"),
        "{message}"
    );
}

fn write_template(root: &Path, name: &str, manifest: &str, files: &[(&str, &str)]) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("template.toml"), manifest).expect("manifest");
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
}

const PATHY: &str = r#"
name = "pathy"
description = "a variable in a path, without a pattern"
[[variables]]
name = "dir"
type = "string"
[[variables]]
name = "required_flag"
type = "bool"
"#;

#[test]
fn a_variable_in_a_path_cannot_escape() {
    let root = tempfile::tempdir().expect("tempdir");
    write_template(
        root.path(),
        "pathy",
        PATHY,
        &[("{{ dir }}/note.txt.jinja", "{{ dir }}\n")],
    );
    let catalog = TemplateCatalog::load(Some(root.path()));
    assert!(catalog.problems().is_empty(), "{:?}", catalog.problems());
    let pathy = catalog.get("pathy").expect("pathy");
    for bad in ["../x", "..", "a/b", "/etc", ".", "", "a\\b"] {
        match pathy.resolve(&vars(&[
            ("dir", json!(bad)),
            ("required_flag", json!(true)),
        ])) {
            Err(TemplateError::InvalidValue {
                variable, reason, ..
            }) => {
                assert_eq!(variable, "dir");
                assert!(reason.contains("path"), "{reason}");
            }
            other => panic!("{bad:?} accepted: {other:?}"),
        }
    }
    assert!(matches!(
        pathy.resolve(&vars(&[("dir", json!("ok"))])),
        Err(TemplateError::MissingVariable { variable, .. }) if variable == "required_flag"
    ));
    let files = rendered(
        pathy,
        &[("dir", json!("notes")), ("required_flag", json!(false))],
    );
    assert_eq!(files["notes/note.txt"], "notes\n");
}

#[test]
fn unsafe_template_files_are_refused() {
    let files = |extra: &str| {
        vec![
            (
                "template.toml".to_owned(),
                b"name = \"t\"\ndescription = \"\"\n".to_vec(),
            ),
            (extra.to_owned(), b"x".to_vec()),
        ]
    };
    for bad in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        ".git/config",
        "./a",
    ] {
        match Template::from_files("t", TemplateOrigin::Builtin, files(bad)) {
            Err(TemplateError::UnsafePath { template, file, .. }) => {
                assert_eq!(template, "t");
                assert_eq!(file, bad);
            }
            other => panic!("{bad:?} accepted: {other:?}"),
        }
    }
    // A literal `..` produced by rendering is caught after rendering too.
    let sneaky = vec![
        (
            "template.toml".to_owned(),
            b"name = \"t\"\ndescription = \"\"\n".to_vec(),
        ),
        ("{{ '..' }}/x".to_owned(), b"x".to_vec()),
    ];
    let template = Template::from_files("t", TemplateOrigin::Builtin, sneaky).expect("loads");
    let resolved = template.resolve(&BTreeMap::new()).expect("no vars");
    assert!(matches!(
        template.render_files(&project("demo"), &resolved),
        Err(TemplateError::UnsafePath { .. })
    ));
}

#[test]
fn operator_templates_add_override_and_report_problems() {
    let root = tempfile::tempdir().expect("tempdir");
    write_template(
        root.path(),
        "rust",
        "name = \"rust\"\ndescription = \"our own rust\"\n",
        &[("README.md", "ours\n")],
    );
    write_template(
        root.path(),
        "go",
        "name = \"go\"\ndescription = \"Go\"\n",
        &[(
            ".woodpecker.yaml",
            "when:\n  - event: manual\nsteps:\n  - name: t\n    image: golang\n    commands: [go test ./...]\n",
        )],
    );
    write_template(
        root.path(),
        "misnamed",
        "name = \"other\"\ndescription = \"\"\n",
        &[],
    );
    write_template(
        root.path(),
        "linked",
        "name = \"linked\"\ndescription = \"\"\n",
        &[],
    );
    std::os::unix::fs::symlink("/etc/hostname", root.path().join("linked/host")).expect("symlink");
    write_template(
        root.path(),
        "badsyntax",
        "name = \"badsyntax\"\ndescription = \"\"\n",
        &[("x.txt.jinja", "{% if %}")],
    );

    let catalog = TemplateCatalog::load(Some(root.path()));
    let rust = catalog.get("rust").expect("rust");
    assert_eq!(rust.manifest.description, "our own rust");
    assert!(matches!(rust.origin, TemplateOrigin::Operator(_)));
    assert!(!rust.info().builtin);
    let go = catalog.get("go").expect("go added");
    check_pipeline("go", &rendered(go, &[])[".woodpecker.yaml"]);
    assert!(catalog.get("python").is_ok(), "built-ins stay");
    for missing in ["misnamed", "linked", "badsyntax"] {
        assert!(catalog.get(missing).is_err(), "{missing} loaded");
    }
    let problems = catalog.problems();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.iter().any(|p| matches!(p,
        TemplateError::UnsafePath { template, file, .. } if template == "linked" && file == "host")));
    assert!(problems.iter().any(|p| matches!(p,
        TemplateError::Manifest { template, .. } if template == "misnamed")));
    assert!(problems.iter().any(|p| matches!(p,
        TemplateError::Render { template, file, .. } if template == "badsyntax" && file == "x.txt.jinja")));
}

#[test]
fn rendering_cannot_follow_a_symlink_out_of_the_workspace() {
    let outside = tempfile::tempdir().expect("outside");
    let workspace = tempfile::tempdir().expect("workspace");
    std::os::unix::fs::symlink(outside.path(), workspace.path().join("src")).expect("symlink");
    let catalog = TemplateCatalog::builtin();
    let rust = catalog.get("rust").expect("rust");
    let resolved = rust.resolve(&BTreeMap::new()).expect("defaults");
    let files = rust
        .render_files(&project("demo"), &resolved)
        .expect("renders");
    let (file, _reason) =
        write_files(workspace.path(), files).expect_err("the symlink must not be followed");
    assert!(file.starts_with("src/"), "{file}");
    assert_eq!(std::fs::read_dir(outside.path()).expect("read").count(), 0);
}

#[test]
fn rendering_into_a_workspace_keeps_existing_files() {
    let workspace = tempfile::tempdir().expect("workspace");
    std::fs::write(workspace.path().join("README.md"), "mine\n").expect("write");
    let catalog = TemplateCatalog::builtin();
    let blank = catalog.get("blank").expect("blank");
    let resolved = blank.resolve(&BTreeMap::new()).expect("defaults");
    let files = blank
        .render_files(&project("demo"), &resolved)
        .expect("renders");
    let report = write_files(workspace.path(), files).expect("writes");
    assert_eq!(report.skipped, ["README.md"]);
    assert_eq!(report.written, [".woodpecker.yaml"]);
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("README.md")).expect("read"),
        "mine\n"
    );
}

// ---- Woodpecker client against the double ----------------------------------------------

struct Secrets(BTreeMap<String, String>);

#[async_trait::async_trait]
impl rdev::ports::SecretResolver for Secrets {
    async fn resolve(&self, name: &str) -> Result<Option<SecretValue>, rdev::ports::SecretError> {
        Ok(self.0.get(name).map(SecretValue::new))
    }
}

fn forge_repos() -> Vec<ForgeRepo> {
    vec![
        ForgeRepo {
            forge_remote_id: "9001".into(),
            full_name: "acme/other".into(),
            id: 0,
            active: false,
        },
        ForgeRepo {
            forge_remote_id: "9002".into(),
            full_name: "acme/demo".into(),
            id: 0,
            active: false,
        },
    ]
}

fn client(url: &str, token: &str) -> WoodpeckerClient {
    let secrets = Secrets(BTreeMap::from([(
        TOKEN_CREDENTIAL.to_owned(),
        token.to_owned(),
    )]));
    WoodpeckerClient::new(
        WoodpeckerConfig {
            url: url.to_owned(),
            token_credential: CredentialName::parse(TOKEN_CREDENTIAL).expect("name"),
        },
        Arc::new(secrets),
    )
    .expect("client")
}

#[tokio::test]
async fn the_woodpecker_client_speaks_the_rest_api() {
    let double = WoodpeckerDouble::start(TOKEN, forge_repos())
        .await
        .expect("double");
    let ci = client(&double.url(), TOKEN);

    let repo = ci.activate("acme/demo").await.expect("activate");
    assert_eq!(repo.full_name, "acme/demo");
    assert_eq!(repo.forge_remote_id, "9002");
    assert!(repo.id > 0);
    let again = ci.activate("acme/demo").await.expect("already active");
    assert_eq!(again.id, repo.id);

    let secret = CiSecret {
        name: "DEPLOY_KEY".into(),
        value: SecretValue::new("s3cr3t"),
        events: vec!["push".into(), "manual".into()],
    };
    ci.set_secret(repo.id, &secret)
        .await
        .expect("create secret");
    let rotated = CiSecret {
        value: SecretValue::new("n3w"),
        ..secret
    };
    ci.set_secret(repo.id, &rotated)
        .await
        .expect("update secret");

    let variables = BTreeMap::from([("CRATE".to_owned(), "demo".to_owned())]);
    let pipeline = ci
        .trigger(repo.id, "main", &variables)
        .await
        .expect("trigger");
    assert_eq!(pipeline.number, 1);
    assert_eq!(pipeline.status, "pending");
    assert!(!pipeline.is_finished());

    double.set_status(repo.id, 1, "success");
    let now = ci.pipeline(repo.id, 1).await.expect("status");
    assert!(now.is_finished());
    assert_eq!(now.steps.len(), 1);
    assert_eq!(now.steps[0].id, step_id(1));
    let logs = ci.logs(repo.id, 1).await.expect("logs");
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].text, "+ cargo test");
    assert_eq!(logs[1].step, "test");
    assert!(logs[1].text.contains("on main: success"));

    let state = double.state();
    assert_eq!(state.unauthorized, 0);
    assert_eq!(
        state
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str()))
            .collect::<Vec<_>>(),
        [("DEPLOY_KEY", "n3w")]
    );
    assert_eq!(state.secrets[0].events, ["push", "manual"]);
    assert_eq!(state.pipelines[0].branch, "main");
    assert_eq!(state.pipelines[0].variables, variables);
    assert_eq!(
        state
            .requests
            .iter()
            .filter(|r| r.starts_with("POST /api/repos?"))
            .collect::<Vec<_>>(),
        ["POST /api/repos?forge_remote_id=9002"]
    );
}

#[tokio::test]
async fn woodpecker_errors_carry_method_path_status_and_no_secret() {
    let double = WoodpeckerDouble::start(TOKEN, forge_repos())
        .await
        .expect("double");
    let wrong = client(&double.url(), "wrong-token-value");
    let error = wrong.activate("acme/demo").await.expect_err("401");
    match &error {
        CiError::Status {
            method,
            path,
            status,
            body,
        } => {
            assert_eq!(method, "GET");
            assert_eq!(path, "/api/user/repos?all=true");
            assert_eq!(*status, 401);
            assert!(body.contains("Unauthorized"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.to_string().contains("wrong-token-value"));
    assert_eq!(double.state().unauthorized, 1);

    let ci = client(&double.url(), TOKEN);
    assert_eq!(
        ci.activate("acme/missing").await,
        Err(CiError::RepoNotFound("acme/missing".into()))
    );
    double.fail("/api/repos", 502, 1);
    let error = ci.activate("acme/demo").await.expect_err("502");
    assert!(
        matches!(&error, CiError::Status { method, status: 502, path, .. }
            if method == "POST" && path == "/api/repos?forge_remote_id=9002"),
        "{error:?}"
    );
    let missing = Secrets(BTreeMap::new());
    let no_token = WoodpeckerClient::new(
        WoodpeckerConfig {
            url: double.url(),
            token_credential: CredentialName::parse(TOKEN_CREDENTIAL).expect("name"),
        },
        Arc::new(missing),
    )
    .expect("client");
    assert!(matches!(
        no_token.activate("acme/demo").await,
        Err(CiError::Credential(_))
    ));
}

// ---- The setup service over real stores ----------------------------------------------

fn git_log(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("git")
        .args(["log", "--format=%an <%ae>|%s"])
        .current_dir(dir)
        .output()
        .expect("git log");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn service(stores: &Stores, root: &Path, double: &WoodpeckerDouble) -> ProjectSetupService {
    stores
        .credentials
        .put(
            &CredentialName::parse(TOKEN_CREDENTIAL).expect("name"),
            &SecretValue::new(TOKEN),
        )
        .await
        .expect("put token");
    let ci = WoodpeckerClient::new(
        WoodpeckerConfig {
            url: double.url(),
            token_credential: CredentialName::parse(TOKEN_CREDENTIAL).expect("name"),
        },
        stores.credentials.clone(),
    )
    .expect("client");
    ProjectSetupService::new(
        stores,
        Arc::new(LocalSeeder::new(root.join("workspaces")).allow_local_repos(true)),
        Arc::new(LocalProvisioner),
        Some(Arc::new(ci)),
        Some(root.join("templates")),
    )
}

async fn audit_actions(stores: &Stores) -> Vec<String> {
    stores
        .audit
        .list(0, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect()
}

/// The whole flow, against whichever database `stores` is.
async fn creates_registers_and_retries(stores: Stores) {
    let root = tempfile::tempdir().expect("root");
    let double = WoodpeckerDouble::start(TOKEN, forge_repos())
        .await
        .expect("double");
    let setup = service(&stores, root.path(), &double).await;
    assert!(setup.templates().iter().any(|t| t.name == "rust"));
    // A subscription made before the project exists hears of its creation and its CI.
    stores
        .webhooks
        .create_webhook(rdev::domain::NewWebhook {
            id: "wh-demo".into(),
            project_id: project("demo"),
            url: "https://hooks.example.com/demo".into(),
            event_types: Vec::new(),
            description: None,
            secret: rdev::domain::WebhookSecret::from_random(&[3; 32]),
        })
        .await
        .expect("webhook");

    let created = setup.create("admin", rust_demo()).await.expect("created");
    let workspace = root.path().join("workspaces/demo");
    let cargo = std::fs::read_to_string(workspace.join("Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("name = \"demo\""));
    assert!(workspace.join(".woodpecker.yaml").is_file());
    assert!(created.commit.is_some());
    assert_eq!(
        git_log(&workspace),
        ["rdev <rdev@localhost>|Create project demo from template rust"]
    );
    assert_eq!(created.setup.template, "rust");
    assert_eq!(created.setup.vars["name"], json!("demo"));
    assert_eq!(created.setup.vars["clippy"], json!(true));
    assert_eq!(
        created.setup.ci.state,
        CiState::Registered,
        "{:?}",
        created.setup.ci
    );
    {
        let state = double.state();
        assert!(
            state
                .repos
                .iter()
                .any(|r| r.full_name == "acme/demo" && r.active)
        );
        assert_eq!(state.pipelines.len(), 1);
        assert_eq!(state.pipelines[0].branch, "main");
        assert_eq!(state.pipelines[0].variables["CRATE"], "demo");
    }
    let stored = stores
        .projects
        .get(&project("demo"))
        .await
        .expect("project stored");
    assert_eq!(stored.id.as_str(), "demo");

    // Status, then the finished pipeline is audited once.
    let status = setup
        .ci_status("admin", &project("demo"), false)
        .await
        .expect("status");
    assert_eq!(
        status.pipeline.as_ref().map(|p| p.status.as_str()),
        Some("pending")
    );
    let repo_id = status.registration.repo_id.expect("repo id");
    double.set_status(repo_id, 1, "failure");
    let status = setup
        .ci_status("admin", &project("demo"), true)
        .await
        .expect("status");
    assert_eq!(
        status.registration.pipeline_status.as_deref(),
        Some("failure")
    );
    assert!(!status.logs.is_empty());
    setup
        .ci_status("admin", &project("demo"), false)
        .await
        .expect("again");
    assert_eq!(
        audit_actions(&stores).await,
        [
            "project.created",
            "ci.pipeline.started",
            "ci.pipeline.finished"
        ]
    );
    let queued = stores
        .webhooks
        .claim_deliveries("test", 10, std::time::Duration::from_secs(60))
        .await
        .expect("claim");
    let types: Vec<&str> = queued.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "project.created",
            "ci.pipeline.started",
            "ci.pipeline.finished"
        ]
    );
    let finished: Value = serde_json::from_str(&queued[2].payload).expect("JSON");
    assert_eq!(finished["data"]["status"], "failure");
    assert_eq!(finished["data"]["project_id"], "demo");

    // Same id again: refused, nothing touched.
    let again = setup
        .create("admin", new_project("demo", "blank"))
        .await
        .expect_err("conflict");
    let shown = again.to_string();
    assert_eq!(ApiError::from(again).status.as_u16(), 409, "{shown}");
    assert!(workspace.join("Cargo.toml").is_file());

    // Bad inputs never create anything.
    for (id, template, given) in [
        ("Bad_Id", "rust", vec![]),
        ("other", "cobol", vec![]),
        ("other", "rust", vec![("name", json!("../x"))]),
    ] {
        let error = setup
            .create(
                "admin",
                CreateProject {
                    vars: vars(&given),
                    ..new_project(id, template)
                },
            )
            .await
            .expect_err("refused");
        let status = ApiError::from(error).status.as_u16();
        assert!(matches!(status, 400 | 404), "{status}");
    }
    assert!(!root.path().join("workspaces/other").exists());

    // CI fails: the project still exists, and registration can be retried.
    double.fail("/api/repos", 500, 1);
    let created = setup
        .create(
            "admin",
            CreateProject {
                ci_repo: Some("acme/other".into()),
                display_name: Some("Flaky".into()),
                ..new_project("flaky", "python")
            },
        )
        .await
        .expect("created despite CI");
    assert_eq!(created.setup.ci.state, CiState::Failed);
    let reason = created.setup.ci.error.clone().expect("reason");
    assert!(
        reason.contains("POST /api/repos?forge_remote_id=9001") && reason.contains("500"),
        "{reason}"
    );
    assert!(!reason.contains(TOKEN));
    assert!(stores.projects.get(&project("flaky")).await.is_ok());
    assert!(
        root.path()
            .join("workspaces/flaky/src/app/__init__.py")
            .is_file()
    );
    let retried = setup
        .register_ci("admin", &project("flaky"))
        .await
        .expect("retry");
    assert_eq!(retried.state, CiState::Registered);
    assert_eq!(retried.error, None);
    assert_eq!(
        setup
            .setup(&project("flaky"))
            .await
            .expect("setup")
            .ci
            .state,
        CiState::Registered
    );
    let actions = audit_actions(&stores).await;
    assert_eq!(
        actions[3..],
        [
            "project.created",
            "ci.registration.failed",
            "ci.pipeline.started"
        ]
    );
    assert!(
        stores
            .audit
            .verify()
            .await
            .expect("verify")
            .first_broken
            .is_none()
    );
}

fn store_options() -> StoreOptions {
    StoreOptions {
        queue: QueueConfig::default(),
        master_key: MasterKey::from_bytes([9; 32]),
    }
}

#[tokio::test]
async fn setup_service_end_to_end_on_sqlite() {
    let db = tempfile::tempdir().expect("db dir");
    let url = format!("sqlite://{}", db.path().join("rdev.db").display());
    let stores = connect(&url, store_options()).await.expect("sqlite");
    creates_registers_and_retries(stores).await;
}

#[tokio::test]
async fn setup_service_end_to_end_on_postgres() {
    let Some(db) = rdev_tests::harness::postgres::TestDatabase::create().await else {
        return;
    };
    let stores = connect(&db.url, store_options()).await.expect("postgres");
    creates_registers_and_retries(stores).await;
}

#[tokio::test]
async fn a_cloned_repository_gets_the_template_on_top() {
    let root = tempfile::tempdir().expect("root");
    let origin = root.path().join("origin");
    std::fs::create_dir_all(&origin).expect("mkdir");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&origin)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "dev")
            .env("GIT_AUTHOR_EMAIL", "dev@example.com")
            .env("GIT_COMMITTER_NAME", "dev")
            .env("GIT_COMMITTER_EMAIL", "dev@example.com")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(origin.join("README.md"), "upstream\n").expect("write");
    git(&["add", "README.md"]);
    git(&["commit", "--quiet", "-m", "Upstream"]);

    let db = root.path().join("rdev.db");
    let stores = connect(&format!("sqlite://{}", db.display()), store_options())
        .await
        .expect("sqlite");
    let double = WoodpeckerDouble::start(TOKEN, forge_repos())
        .await
        .expect("double");
    let setup = service(&stores, root.path(), &double).await;
    let repo = format!("file://{}", origin.display());
    let created = setup
        .create(
            "admin",
            CreateProject {
                repo: Some(repo.clone()),
                ci_repo: Some("acme/demo".into()),
                ..new_project("cloned", "blank")
            },
        )
        .await
        .expect("created");
    assert_eq!(created.files.skipped, ["README.md"]);
    assert_eq!(created.files.written, [".woodpecker.yaml"]);
    let workspace = root.path().join("workspaces/cloned");
    assert_eq!(
        std::fs::read_to_string(workspace.join("README.md")).expect("read"),
        "upstream\n"
    );
    assert_eq!(
        git_log(&workspace),
        [
            "rdev <rdev@localhost>|Create project cloned from template blank",
            "dev <dev@example.com>|Upstream"
        ]
    );
    assert_eq!(created.setup.repo.as_deref(), Some(repo.as_str()));

    // The default seeder refuses the host's filesystem.
    let strict = ProjectSetupService::new(
        &stores,
        Arc::new(LocalSeeder::new(root.path().join("workspaces"))),
        Arc::new(LocalProvisioner),
        None,
        None,
    );
    let error = strict
        .create(
            "admin",
            CreateProject {
                repo: Some(repo),
                ..new_project("sneaky", "blank")
            },
        )
        .await
        .expect_err("refused");
    assert!(matches!(error, SetupError::Seed(_)), "{error}");
    assert_eq!(ApiError::from(error).status.as_u16(), 400);
    assert!(!root.path().join("workspaces/sneaky").exists());
}

#[tokio::test]
async fn removing_a_project_removes_its_setup() {
    use rdev::adapters::sqlite::SqliteStore;
    use rdev::domain::{CiRegistration, NewProject, NewProjectSetup};
    let db = tempfile::tempdir().expect("db dir");
    let url = format!("sqlite://{}", db.path().join("rdev.db").display());
    let store = SqliteStore::connect(&url, store_options())
        .await
        .expect("sqlite");
    let stores = store.stores();
    let setup = NewProjectSetup {
        template: "blank".into(),
        vars: BTreeMap::from([("title".to_owned(), json!("x"))]),
        repo: None,
        ci_repo: None,
        ci: CiRegistration::pending(),
    };
    let new = NewProject {
        id: project("gone"),
        display_name: None,
    };
    stores
        .setups
        .create_with_setup(new.clone(), setup.clone())
        .await
        .expect("created");
    assert!(matches!(
        stores.setups.create_with_setup(new, setup).await,
        Err(rdev::ports::StoreError::Conflict(_))
    ));
    sqlx::query("DELETE FROM projects WHERE id = 'gone'")
        .execute(store.pool())
        .await
        .expect("delete project");
    assert!(matches!(
        stores.setups.get_setup(&project("gone")).await,
        Err(rdev::ports::StoreError::NotFound { .. })
    ));
}

// ---- The CI poller ------------------------------------------------------------------------

async fn finished_entries(stores: &Stores) -> Vec<AuditEntry> {
    stores
        .audit
        .list(0, 1000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "ci.pipeline.finished")
        .collect()
}

fn pipeline_polls(double: &WoodpeckerDouble, repo: i64) -> usize {
    let path = format!("GET /api/repos/{repo}/pipelines/1");
    double
        .state()
        .requests
        .iter()
        .filter(|r| r.starts_with(&path))
        .count()
}

/// Waits (up to 20 s) until `done` holds, checking every 20 ms.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `rdev serve` with Woodpecker configured records `ci.pipeline.finished` on its own, once,
/// while nobody reads `GET /projects/{id}/ci`, and stops polling a finished pipeline.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_polls_a_pipeline_until_it_finishes_and_records_it_once() {
    use rdev::services::project_setup::poller::{POLLER_ACTOR, PollerConfig};
    use rdev_tests::harness::server::TestServer;
    use std::time::Duration;

    let double = WoodpeckerDouble::start(TOKEN, forge_repos())
        .await
        .expect("double");
    let url = double.url();
    let server = TestServer::sqlite_with(|config| {
        config.woodpecker = Some(WoodpeckerConfig {
            url,
            token_credential: CredentialName::parse(TOKEN_CREDENTIAL).expect("name"),
        });
        config.ci_poll = PollerConfig {
            interval: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
        };
    })
    .await;
    let put = server
        .request(
            reqwest::Method::PUT,
            &format!("/credentials/{TOKEN_CREDENTIAL}"),
            Some(&server.admin),
        )
        .json(&json!({"value": TOKEN}))
        .send()
        .await
        .expect("PUT credential");
    assert!(put.status().is_success(), "{}", put.status());
    let created = server
        .request(reqwest::Method::POST, "/projects", Some(&server.admin))
        .json(
            &json!({"id": "demo", "template": "rust", "vars": {"name": "demo"},
                      "ci_repo": "acme/demo"}),
        )
        .send()
        .await
        .expect("POST /projects");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let created: Value = created.json().await.expect("JSON");
    assert_eq!(created["setup"]["ci"]["state"], "registered", "{created}");
    let repo = created["setup"]["ci"]["repo_id"].as_i64().expect("repo id");
    let stores = server.server().state().stores.clone();
    let setup = server.server().state().setup.clone();
    let status = async || {
        setup
            .setup(&project("demo"))
            .await
            .expect("setup")
            .ci
            .pipeline_status
    };

    // Pending, then running: polled and stored, nothing audited.
    eventually("the poller asks CI", async || {
        pipeline_polls(&double, repo) >= 2
    })
    .await;
    double.set_status(repo, 1, "running");
    eventually("running is stored", async || {
        status().await.as_deref() == Some("running")
    })
    .await;
    assert!(finished_entries(&stores).await.is_empty());

    // A CI outage is survived (with backoff), then the pipeline finishes.
    double.fail("/api/repos", 502, 3);
    double.set_status(repo, 1, "success");
    eventually("the finish is audited", async || {
        !finished_entries(&stores).await.is_empty()
    })
    .await;
    assert_eq!(status().await.as_deref(), Some("success"));
    let polls = pipeline_polls(&double, repo);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let finished = finished_entries(&stores).await;
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0].details["status"], "success");
    assert_eq!(finished[0].details["pipeline"], 1);
    assert_eq!(
        pipeline_polls(&double, repo),
        polls,
        "a finished pipeline is not polled again"
    );
    let actors: Vec<String> = finished_entries(&stores)
        .await
        .into_iter()
        .map(|e| e.actor)
        .collect();
    assert_eq!(actors, [POLLER_ACTOR]);
    assert!(
        !double.state().requests.iter().any(|r| r.contains("/logs/")),
        "nobody read the CI status page"
    );
    server.stop().await;
}

/// Two replicas (each its own pool on one PostgreSQL database) polling the same pipeline as
/// fast as they can record its finish exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_polling_one_database_record_a_finish_once() {
    let Some(db) = rdev_tests::harness::postgres::TestDatabase::create().await else {
        return;
    };
    let root = tempfile::tempdir().expect("root");
    let double = WoodpeckerDouble::start(TOKEN, forge_repos())
        .await
        .expect("double");
    let first = connect(&db.url, store_options()).await.expect("postgres");
    let second = connect(&db.url, store_options()).await.expect("postgres");
    let a = service(&first, root.path(), &double).await;
    let b = service(&second, root.path(), &double).await;
    let created = a.create("admin", rust_demo()).await.expect("created");
    let repo = created.setup.ci.repo_id.expect("repo id");
    // Each replica polls until nothing is left to watch.
    let poll = |service: ProjectSetupService| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut finished = 0;
        loop {
            let report = service.poll_unfinished("replica").await.expect("poll");
            assert!(report.errors.is_empty(), "{report:?}");
            finished += report.finished;
            if report.watching == 0 && report.finished == 0 {
                return finished;
            }
            assert!(std::time::Instant::now() < deadline, "still watching");
        }
    };
    let (ra, rb) = (tokio::spawn(poll(a.clone())), tokio::spawn(poll(b.clone())));
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    double.set_status(repo, 1, "success");
    let seen = ra.await.expect("replica a") + rb.await.expect("replica b");
    assert!(seen >= 1, "a replica saw the finish");
    assert_eq!(finished_entries(&first).await.len(), 1);
    assert!(a.poll_unfinished("replica").await.expect("poll").finished == 0);
}
