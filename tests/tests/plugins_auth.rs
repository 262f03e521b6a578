//! `rdev plugins publish/install` and `POST /providers/install` against a real
//! `docker-registry` that requires credentials: HTTP Basic through htpasswd (the entry made by
//! Debian's `htpasswd`), and the OCI token flow (`WWW-Authenticate: Bearer realm=…`) with a
//! token service the registry verifies for real. Credentials come from `--username` with
//! `--password-stdin`, `RDEV_REGISTRY_USERNAME`/`RDEV_REGISTRY_PASSWORD`, docker's
//! `config.json` (inline or through a credential helper), or (over the API) a stored
//! credential; missing or wrong ones are refused
//! with a clear error that never contains the password.

use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};

use base64::Engine as _;
use rdev::domain::ContentDigest;
use rdev_tests::harness::bin::{assert_failed_saying, output_text, rdev};
use rdev_tests::harness::oci_registry::{OciRegistry, RegistryAuth};
use rdev_tests::harness::plugins::ver_plugin;
use rdev_tests::harness::server::ServeProcess;
use reqwest::{Method, StatusCode};
use serde_json::json;

const USER: &str = "alice";
const PASSWORD: &str = "pw-7f3a9c1e-never-shown";
const WRONG: &str = "wrong-5d2b8e44-never-shown";

/// `rdev <args>` with `env`, `stdin` as its input, and a docker config directory of its own
/// (`docker_config`, empty unless the test wrote a login there).
fn cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>, docker_config: &Path) -> Output {
    let mut child = std::process::Command::new(rdev())
        .args(args)
        .env_remove("RDEV_REGISTRY_USERNAME")
        .env_remove("RDEV_REGISTRY_PASSWORD")
        .env("DOCKER_CONFIG", docker_config)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rdev");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("rdev ends")
}

/// Asserts `output` failed with `expected` in it and neither password anywhere.
fn refused_with(output: &Output, expected: &str) {
    let said = assert_failed_saying(output, expected);
    assert!(
        !said.contains(PASSWORD) && !said.contains(WRONG),
        "a password leaked: {said}"
    );
}

/// The registry's users: `USER` with `PASSWORD`, checked by htpasswd basic auth.
fn htpasswd() -> RegistryAuth {
    RegistryAuth::Htpasswd {
        username: USER.into(),
        password: PASSWORD.into(),
    }
}

/// The same user behind the OCI token flow.
fn token_flow() -> RegistryAuth {
    RegistryAuth::Token {
        username: USER.into(),
        password: PASSWORD.into(),
    }
}

/// `ver` 1.0.0 (the `versioned-v1` test guest) in a directory of its own; its component sha.
fn local_plugin() -> (tempfile::TempDir, String) {
    let local = ver_plugin("1.0.0");
    let sha = ContentDigest::of(&std::fs::read(local.path().join("ver.wasm")).expect("wasm"))
        .hex()
        .to_owned();
    (local, sha)
}

/// Publish and install through `registry` as the CLI would be used against it: refused
/// without credentials and with a wrong password, accepted with `--password-stdin`, the
/// environment and docker's config.json.
async fn publish_and_install(registry: &OciRegistry) {
    let (local, component_sha) = local_plugin();
    let wasm = local.path().join("ver.wasm");
    let wasm = wasm.to_str().expect("utf-8");
    let reference = format!("{}/rdev/ver:1.0.0", registry.host);
    let docker = tempfile::tempdir().expect("tempdir");
    let no_login = docker.path().join("none");

    let publish = ["plugins", "publish", wasm, &reference];
    let anonymous = cli(&publish, &[], None, &no_login);
    refused_with(&anonymous, "asks for credentials and none were given");

    let publish_as = |password: &str| {
        let args = [&publish[..], &["--username", USER, "--password-stdin"]].concat();
        cli(&args, &[], Some(&format!("{password}\n")), &no_login)
    };
    let wrong = publish_as(WRONG);
    refused_with(&wrong, "refused the credentials of user \"alice\"");

    let published = publish_as(PASSWORD);
    assert!(published.status.success(), "{}", output_text(&published));
    assert!(!output_text(&published).contains(PASSWORD));

    let plugins = tempfile::tempdir().expect("tempdir");
    let dir = plugins.path().to_str().expect("utf-8");
    let install_args = [
        "plugins",
        "install",
        &reference,
        "--plugins-dir",
        dir,
        "--yes",
    ];
    let anonymous = cli(&install_args, &[], None, &no_login);
    refused_with(&anonymous, "asks for credentials and none were given");
    let wrong_env = [
        ("RDEV_REGISTRY_USERNAME", USER),
        ("RDEV_REGISTRY_PASSWORD", WRONG),
    ];
    refused_with(
        &cli(&install_args, &wrong_env, None, &no_login),
        "refused the credentials of user \"alice\"",
    );
    assert!(!plugins.path().join("ver.wasm").exists());

    let env = [
        ("RDEV_REGISTRY_USERNAME", USER),
        ("RDEV_REGISTRY_PASSWORD", PASSWORD),
    ];
    let installed = cli(&install_args, &env, None, &no_login);
    assert!(installed.status.success(), "{}", output_text(&installed));
    let sha = |path: &Path| {
        ContentDigest::of(&std::fs::read(path).expect("file"))
            .hex()
            .to_owned()
    };
    assert_eq!(sha(&plugins.path().join("ver.wasm")), component_sha);

    // `docker login`'s config.json, keyed by the registry as docker writes it.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = json!({"auths": {format!("http://{}", registry.host): {"auth": auth}}});
    std::fs::write(docker.path().join("config.json"), config.to_string()).expect("config");
    std::fs::remove_dir_all(plugins.path()).expect("wipe");
    let from_config = cli(&install_args, &[], None, docker.path());
    assert!(
        from_config.status.success(),
        "{}",
        output_text(&from_config)
    );
    assert_eq!(sha(&plugins.path().join("ver.wasm")), component_sha);

    // A credential helper, as a `docker login` with a keychain leaves it: the registry's
    // `credHelpers` entry, else `credsStore`, ahead of the inline login above.
    let helpers = tempfile::tempdir().expect("tempdir");
    let path = credential_helper(helpers.path(), &registry.host);
    let with_helper = |secret: Option<&str>| {
        let mut env = vec![("PATH", path.as_str())];
        env.extend(secret.map(|s| ("HELPER_SECRET", s)));
        cli(&install_args, &env, None, docker.path())
    };
    for config in [
        json!({"auths": {registry.host.clone(): {}}, "credHelpers": {registry.host.clone(): "rdevtest"}}),
        json!({"auths": {registry.host.clone(): {}}, "credsStore": "rdevtest"}),
    ] {
        std::fs::write(docker.path().join("config.json"), config.to_string()).expect("config");
        std::fs::remove_dir_all(plugins.path()).expect("wipe");
        let from_helper = with_helper(Some(PASSWORD));
        assert!(
            from_helper.status.success(),
            "{config}: {}",
            output_text(&from_helper)
        );
        assert_eq!(sha(&plugins.path().join("ver.wasm")), component_sha);
    }
    std::fs::remove_dir_all(plugins.path()).expect("wipe");
    refused_with(
        &with_helper(Some(WRONG)),
        "refused the credentials of user \"alice\"",
    );
    // A helper without a login for the registry: anonymous, as with docker.
    refused_with(
        &with_helper(None),
        "asks for credentials and none were given",
    );
    let absent = json!({"credsStore": "rdev-absent"});
    std::fs::write(docker.path().join("config.json"), absent.to_string()).expect("config");
    refused_with(&with_helper(None), "docker-credential-rdev-absent");
}

/// Writes `docker-credential-rdevtest` into `dir`, a helper speaking docker's protocol: `get`
/// with the registry on stdin answers `alice` and `$HELPER_SECRET` for `host`, else "not
/// found". Returns a `PATH` with `dir` first.
fn credential_helper(dir: &Path, host: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let script = dir.join("docker-credential-rdevtest");
    let body = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nserver=$(cat)\n\
         if [ -n \"$HELPER_SECRET\" ] && [ \"$server\" = \"{host}\" ]; then\n\
         printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"%s\"}}' \"$server\" \"$HELPER_SECRET\"\n\
         else echo 'credentials not found in native keychain'; exit 1; fi\n"
    );
    std::fs::write(&script, body).expect("write the helper");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[tokio::test]
async fn htpasswd_basic_auth_for_publish_and_install() {
    let Some(registry) = OciRegistry::start_with(htpasswd()).await else {
        return;
    };
    publish_and_install(&registry).await;
}

#[tokio::test]
async fn the_oci_token_flow_for_publish_and_install() {
    let Some(registry) = OciRegistry::start_with(token_flow()).await else {
        return;
    };
    publish_and_install(&registry).await;
    let tokens = registry.tokens.as_ref().expect("a token service");
    assert!(tokens.issued() > 0, "the token flow was used");
    assert!(
        tokens.refused() > 0,
        "the wrong password reached the token service"
    );
}

/// `POST /providers/install` with `"credential"`: the stored `username:password` is used; an
/// unknown, malformed or wrong credential is a 422 naming it, never showing the value.
#[tokio::test]
async fn the_api_installs_with_a_stored_credential() {
    let Some(registry) = OciRegistry::start_with(token_flow()).await else {
        return;
    };
    let (local, _) = local_plugin();
    let reference = format!("{}/rdev/ver:1.0.0", registry.host);
    let published = cli(
        &[
            "plugins",
            "publish",
            local.path().to_str().expect("utf-8"),
            &reference,
        ],
        &[
            ("RDEV_REGISTRY_USERNAME", USER),
            ("RDEV_REGISTRY_PASSWORD", PASSWORD),
        ],
        None,
        &local.path().join("no-docker"),
    );
    assert!(published.status.success(), "{}", output_text(&published));

    let plugins = tempfile::tempdir().expect("tempdir");
    let server = ServeProcess::start(plugins.path(), &[]).await;
    for (name, value) in [
        ("REGISTRY_LOGIN", format!("{USER}:{PASSWORD}")),
        ("REGISTRY_WRONG", format!("{USER}:{WRONG}")),
        ("REGISTRY_BARE", PASSWORD.to_owned()),
    ] {
        server.put_credential(name, &value).await;
    }
    let post = |body| server.admin_call(Method::POST, "/providers/install", Some(body));
    let no_secret = |answer: &serde_json::Value| {
        let shown = answer.to_string();
        assert!(
            !shown.contains(PASSWORD) && !shown.contains(WRONG),
            "{shown}"
        );
    };
    for (credential, code) in [
        (None, "registry_unauthorized"),
        (Some("REGISTRY_WRONG"), "registry_unauthorized"),
        (Some("REGISTRY_BARE"), "invalid_credential"),
        (Some("ABSENT"), "unknown_credential"),
    ] {
        let (status, refused) = post(json!({
            "reference": reference, "accept_grants": true, "credential": credential,
        }))
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{credential:?}: {refused}"
        );
        assert_eq!(refused["error"]["code"], code, "{refused}");
        no_secret(&refused);
    }
    assert!(!plugins.path().join("ver.wasm").exists());

    let (status, installed) = post(json!({
        "reference": reference, "accept_grants": true, "credential": "REGISTRY_LOGIN",
    }))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{installed}");
    no_secret(&installed);
    assert!(plugins.path().join("ver.wasm").exists());
    let audit = server.get("/audit?action=providers.installed").await;
    assert_eq!(
        audit["entries"][0]["details"]["credential"], "REGISTRY_LOGIN",
        "{audit}"
    );
    no_secret(&audit);
    assert!(
        !server.logs().contains(PASSWORD),
        "the server log shows the password"
    );
}
