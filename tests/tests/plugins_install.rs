//! `rdev plugins publish|install|list|remove` against a real OCI registry (Debian's
//! `docker-registry`) and a real `rdev serve` watching the plugins directory: the grants are
//! shown and confirmation required, a wrong pinned digest and a corrupted blob are refused
//! with nothing installed, an install is hot-reloaded and recorded in the lock file, a
//! removal takes the provider away, and `install --locked` reproduces a wiped plugins
//! directory from its lock file and refuses a tag that moved.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use rdev::domain::ContentDigest;
use rdev_tests::harness::bin::{assert_failed_saying, output_text, rdev};
use rdev_tests::harness::oci_registry::OciRegistry;
use rdev_tests::harness::plugins::ver_plugin;
use rdev_tests::harness::server::ServeProcess;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// `rdev <args>` with no terminal on stdin.
fn cli(args: &[&str]) -> Output {
    std::process::Command::new(rdev())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rdev")
}

fn sha256_of(path: &Path) -> String {
    ContentDigest::of(&std::fs::read(path).expect("file exists"))
        .hex()
        .to_owned()
}

/// Installs `reference` into `dir`, confirming with `--yes` when `yes`.
fn install_from(reference: &str, dir: &Path, yes: bool) -> Output {
    let dir = dir.to_str().expect("utf-8 path");
    let mut args = vec!["plugins", "install", reference, "--plugins-dir", dir];
    if yes {
        args.push("--yes");
    }
    cli(&args)
}

/// Waits until `GET /providers` shows `provider` at `version` (or absent for `None`).
async fn wait_served(server: &ServeProcess, provider: &str, version: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.served_version(provider).await.as_deref() != version {
        assert!(
            Instant::now() < deadline,
            "{provider} never became {version:?}:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `rdev plugins publish` pushed: `versioned-v1` as `ver`.
struct Published {
    /// `<registry>/rdev/ver:1.0.0`.
    reference: String,
    /// The same, pinned to the manifest digest publish printed.
    pinned: String,
    component_sha: String,
}

/// A registry on loopback holding [`publish`]'s `ver`; `None` (after `skip_or_fail`)
/// where no registry can run.
async fn published() -> Option<(OciRegistry, Published)> {
    let registry = OciRegistry::start().await?;
    let published = publish(&registry);
    Some((registry, published))
}

/// Publishes `versioned-v1` as `ver` to `registry` with the CLI.
fn publish(registry: &OciRegistry) -> Published {
    publish_version(registry, "1.0.0")
}

/// Publishes `versioned-v1` as `ver`, its manifest saying `version`, under the tag `1.0.0`
/// (another version is another manifest digest behind the same tag: a moved tag).
fn publish_version(registry: &OciRegistry, version: &str) -> Published {
    let local = ver_plugin(version);
    let component_sha = sha256_of(&local.path().join("ver.wasm"));
    let reference = format!("{}/rdev/ver:1.0.0", registry.host);
    let wasm = local.path().join("ver.wasm");
    let published = cli(&[
        "plugins",
        "publish",
        wasm.to_str().expect("utf-8"),
        &reference,
    ]);
    assert!(published.status.success(), "{}", output_text(&published));
    let stdout = String::from_utf8_lossy(&published.stdout);
    let pinned = stdout
        .split_whitespace()
        .find(|word| word.contains("@sha256:"))
        .unwrap_or_else(|| panic!("publish prints the pinned reference: {stdout}"))
        .to_owned();
    Published {
        reference,
        pinned,
        component_sha,
    }
}

#[tokio::test]
async fn plugins_install_from_a_registry_verified_confirmed_and_hot_reloaded() {
    let Some((registry, published)) = published().await else {
        return;
    };
    let Published {
        reference,
        pinned,
        component_sha,
    } = published;
    let digest = pinned.rsplit_once('@').expect("pinned").1.to_owned();

    let plugins = tempfile::tempdir().expect("tempdir");
    let server = ServeProcess::start(plugins.path(), &[]).await;
    let empty = |dir: &Path| std::fs::read_dir(dir).expect("readable").next().is_none();

    // No terminal and no --yes: the grants are shown, nothing is installed.
    let refused = install_from(&reference, plugins.path(), false);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    let shown = output_text(&refused);
    assert!(
        shown.contains("it asks to:") && shown.contains("run programs:"),
        "{shown}"
    );
    assert!(shown.contains("--yes"), "{shown}");
    assert!(
        empty(plugins.path()),
        "nothing written without confirmation"
    );

    // A pinned digest the registry does not hold: refused, naming it, nothing written (a
    // registry serving other content under it is the corrupted-blob case below).
    let wrong = format!("{reference}@sha256:{}", "0".repeat(64));
    let unknown = install_from(&wrong, plugins.path(), true);
    assert!(!unknown.status.success(), "{}", output_text(&unknown));
    let said = output_text(&unknown);
    assert!(
        said.contains(&wrong) && said.contains("not found"),
        "{said}"
    );
    assert!(empty(plugins.path()));

    // Confirmed, pinned to the published digest: installed, locked and hot-reloaded.
    let installed = install_from(&pinned, plugins.path(), true);
    assert!(installed.status.success(), "{}", output_text(&installed));
    let lock = std::fs::read_to_string(plugins.path().join("rdev-plugins.lock")).expect("lock");
    assert!(lock.contains(&pinned) && lock.contains(&digest), "{lock}");
    assert!(lock.contains(&component_sha), "{lock}");
    wait_served(&server, "ver", Some("1.0.0")).await;
    let done = server.run_to_end("installed", "ver", "quick").await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["provenance"]["component_sha256"], json!(component_sha));

    let listed = cli(&[
        "plugins",
        "list",
        "--plugins-dir",
        plugins.path().to_str().expect("utf-8"),
    ]);
    let listing = output_text(&listed);
    assert!(
        listed.status.success() && listing.contains("ver") && listing.contains(&digest),
        "{listing}"
    );

    // A blob corrupted in the registry's storage: the download does not match its digest.
    let blob = registry.blob_path(&format!("sha256:{component_sha}"));
    let mut bytes = std::fs::read(&blob).expect("blob stored");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).expect("corrupt the blob");
    let corrupted = install_from(&reference, plugins.path(), true);
    assert_failed_saying(&corrupted, "digest mismatch");
    assert_eq!(sha256_of(&plugins.path().join("ver.wasm")), component_sha);

    let dir = plugins.path().to_str().expect("utf-8");
    let removed = cli(&["plugins", "remove", "ver", "--plugins-dir", dir]);
    assert!(removed.status.success(), "{}", output_text(&removed));
    assert!(!plugins.path().join("ver.wasm").exists());
    let lock = std::fs::read_to_string(plugins.path().join("rdev-plugins.lock")).expect("lock");
    assert!(!lock.contains("ver"), "{lock}");
    wait_served(&server, "ver", None).await;
    let again = cli(&["plugins", "remove", "ver", "--plugins-dir", dir]);
    assert!(!again.status.success(), "{}", output_text(&again));
}

/// `rdev plugins install --locked --lock-file <copy>` into a wiped plugins directory
/// installs exactly the pinned files again, leaves a plugin already present alone, and
/// refuses (exit 1, naming the plugin, nothing written) once the tag serves another digest.
#[tokio::test]
async fn a_lock_file_reproduces_the_plugin_set_and_refuses_a_moved_tag() {
    let Some((registry, Published { reference, .. })) = published().await else {
        return;
    };
    let plugins = tempfile::tempdir().expect("tempdir");
    let dir = plugins.path().join("plugins");
    let installed = install_from(&reference, &dir, true);
    assert!(installed.status.success(), "{}", output_text(&installed));
    let files = |dir: &Path| {
        ["ver.wasm", "ver.toml", "rdev-plugins.lock"]
            .map(|name| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")))
    };
    let before = files(&dir);
    // A deployment keeps its lock file beside its configuration, not in the plugins dir.
    let kept = plugins.path().join("deploy.lock");
    std::fs::copy(dir.join("rdev-plugins.lock"), &kept).expect("keep the lock");
    let restore = |dir: &Path| {
        cli(&[
            "plugins",
            "install",
            "--locked",
            "--lock-file",
            kept.to_str().expect("utf-8"),
            "--plugins-dir",
            dir.to_str().expect("utf-8"),
            "--yes",
        ])
    };

    let unchanged = restore(&dir);
    assert!(unchanged.status.success(), "{}", output_text(&unchanged));
    assert!(
        output_text(&unchanged).contains("ver: already installed"),
        "{}",
        output_text(&unchanged)
    );

    std::fs::remove_dir_all(&dir).expect("wipe the plugins directory");
    let restored = restore(&dir);
    assert!(restored.status.success(), "{}", output_text(&restored));
    assert_eq!(files(&dir), before, "the same files, byte for byte");

    // The tag now serves another manifest (version 1.0.1): refused, nothing written.
    let moved = publish_version(&registry, "1.0.1");
    assert_eq!(moved.reference, reference);
    let new_digest = moved.pinned.rsplit_once('@').expect("pinned").1.to_owned();
    std::fs::remove_dir_all(&dir).expect("wipe again");
    let refused = restore(&dir);
    assert_eq!(refused.status.code(), Some(1), "{}", output_text(&refused));
    let said = output_text(&refused);
    assert!(
        said.contains("ver: not installed")
            && said.contains("now resolves to")
            && said.contains(&new_digest),
        "{said}"
    );
    assert!(said.contains("1 of 1 plugins not installed: ver"), "{said}");
    assert!(!dir.join("ver.wasm").exists() && !dir.join("ver.toml").exists());

    let no_lock = cli(&[
        "plugins",
        "install",
        "--locked",
        "--plugins-dir",
        plugins.path().join("empty").to_str().expect("utf-8"),
    ]);
    assert_failed_saying(&no_lock, "no lock file at");
}

/// A reference without a registry and a malformed digest are refused before any network
/// access, naming what is wrong.
#[test]
fn malformed_references_are_refused_with_the_expected_form() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let no_registry = install_from("acme/echo:1.0.0", plugins.path(), true);
    assert_failed_saying(&no_registry, "names no registry");
    let short_digest = install_from("127.0.0.1:1/acme/echo@sha256:abc", plugins.path(), true);
    assert_failed_saying(&short_digest, "is not a digest");
}

/// `POST /providers/install`: members are refused, a malformed reference is 422, admins see
/// the grants first, installing needs `accept_grants`, reloads at once and is audited; a
/// corrupted layer is 422 `digest_mismatch` and an unknown artifact 404.
#[tokio::test]
async fn the_api_installs_after_the_grants_are_accepted() {
    let Some((registry, published)) = published().await else {
        return;
    };
    let Published {
        reference,
        pinned,
        component_sha,
    } = published;
    let plugins = tempfile::tempdir().expect("tempdir");
    let server = ServeProcess::start(plugins.path(), &[]).await;
    let post = |body| server.admin_call(Method::POST, "/providers/install", Some(body));

    let member = json!({"name": "member", "role": "member", "projects": ["p"]});
    let (status, member) = server
        .admin_call(Method::POST, "/tokens", Some(member))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let member = member["token"].as_str().expect("member token");
    let install = json!({"reference": reference, "accept_grants": true});
    let (status, refused) = server
        .call(Method::POST, "/providers/install", member, Some(install))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(!plugins.path().join("ver.wasm").exists());

    let (status, invalid) = post(json!({"reference": "no-registry-here"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{invalid}");
    assert_eq!(invalid["error"]["code"], "invalid_reference", "{invalid}");

    let (status, preview) = post(json!({"reference": reference})).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["installed"], false);
    assert_eq!(preview["component_sha256"], json!(component_sha));
    assert!(
        preview["grants"].to_string().contains("run programs"),
        "{preview}"
    );
    assert!(!plugins.path().join("ver.wasm").exists());

    let (status, installed) = post(json!({"reference": pinned, "accept_grants": true})).await;
    assert_eq!(status, StatusCode::CREATED, "{installed}");
    assert!(installed["reload"].is_object(), "{installed}");
    wait_served(&server, "ver", Some("1.0.0")).await;
    let audit = server.get("/audit?action=providers.installed").await;
    assert_eq!(
        audit["entries"][0]["details"]["reference"],
        json!(pinned),
        "{audit}"
    );

    let missing = format!("{}/rdev/nothing:1", registry.host);
    let (status, absent) = post(json!({"reference": missing, "accept_grants": true})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{absent}");

    let blob = registry.blob_path(&format!("sha256:{component_sha}"));
    let mut bytes = std::fs::read(&blob).expect("blob stored");
    bytes[0] ^= 0xff;
    std::fs::write(&blob, bytes).expect("corrupt the blob");
    let (status, refused) = post(json!({"reference": reference, "accept_grants": true})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["code"], "digest_mismatch", "{refused}");
}
