//! `cargo xtask image`: the image the Containerfile describes, built by the real buildah
//! (Debian's, vfs storage, chroot isolation), pushed to a real registry (Debian's
//! docker-registry) and pulled back over the registry API, and read from the OCI layout xtask
//! writes. Every digest verifies (manifest, config, each layer and its uncompressed diff id);
//! the config runs `rdev serve` as uid 65532 with the data volume, port and Kubernetes
//! executor `examples/deploy/` expects; the root filesystem holds rdev, the bundled plugins,
//! TLS roots, passwd/group, /tmp and the data volume and nothing else (besides the shared
//! libraries of a dynamically linked binary); and the binary taken out of the image runs from
//! that root filesystem alone, as the image's user: `rdev --version`, then `rdev serve` with
//! the image's environment against the Kubernetes API-server double, answering `/readyz` and
//! listing every bundled provider as serving on `GET /providers`.
//!
//! The test builds its image from the harness's debug `rdev` (dynamically linked, so the
//! image carries the `ldd` closure); the ignored `release_image` test builds the real one
//! (static musl release binary, minutes of compiling) through the same checks.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdev_tests::doubles::kube_api::FakeKubeApi;
use rdev_tests::harness::kubernetes::NAMESPACE;
use rdev_tests::harness::oci_registry::OciRegistry;
use rdev_tests::harness::server::printed_admin_token;
use rdev_tests::harness::{self, bin, plugins};
use serde_json::Value;
use sha2::{Digest, Sha256};
use xtask::image::{
    self, IMAGE_BINARY, IMAGE_DATA_DIR, IMAGE_PLUGINS_DIR, IMAGE_UID, ImageOptions,
};
use xtask::plugins::Layout;

/// The manifest types a registry may answer with for a single-platform image.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_of_the_debug_binary_is_valid_minimal_non_root_and_serves() {
    let binary = bin::rdev();
    let libraries = image::shared_libraries(&binary).expect("ldd");
    assert!(
        !libraries.is_empty(),
        "the harness's debug rdev is dynamically linked"
    );
    check_built_image(Some(binary), &libraries).await;
}

/// The real image: the static release binary, no shared library in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compiles rdev for musl in release mode (minutes); run with --run-ignored only"]
async fn release_image() {
    check_built_image(None, &[]).await;
}

/// Builds the image (from `binary`, else the static release build), pushes it to a fresh
/// registry, and checks the pulled image and the OCI layout, its root filesystem (expecting
/// exactly `libraries` besides rdev's own files) and the extracted binary.
async fn check_built_image(binary: Option<PathBuf>, libraries: &[PathBuf]) {
    if !prerequisites() {
        return;
    }
    let Some(registry) = OciRegistry::start().await else {
        return;
    };
    let plugins_dir = plugins::plugins_dir();
    let scratch = tempfile::tempdir().expect("scratch dir");
    let layout = Layout::new(xtask::workspace_root());
    let mut options = ImageOptions::new(&layout);
    options.rdev = binary;
    options.plugins_dir = Some(plugins_dir.clone());
    options.out_dir = scratch.path().join("image");
    let version = env!("CARGO_PKG_VERSION");
    options.push = Some(format!(
        "docker://{}/orchard9/rdev:{version}",
        registry.host
    ));
    options.tls_verify = false;
    assert_eq!(options.tag, format!("ghcr.io/orchard9/rdev:{version}"));
    let built = tokio::task::spawn_blocking(move || image::build(&layout, &options))
        .await
        .expect("the build task")
        .expect("cargo xtask image builds");

    let pulled = pull(&registry.host, "orchard9/rdev", version).await;
    let local = read_layout(&built.oci_layout);
    assert_eq!(
        pulled.config_digest, local.config_digest,
        "the registry and the OCI layout hold the same image"
    );
    check_config(&pulled.config);

    let rootfs = scratch.path().join("rootfs");
    extract(&pulled, &rootfs);
    check_rootfs(&rootfs, &plugins_dir, libraries);
    run_from_rootfs(&rootfs, &pulled.config, &plugins_dir, scratch.path()).await;
}

/// buildah, chroot and root (to extract owners and change to the image's user) are here;
/// else the test is skipped (failed in CI).
fn prerequisites() -> bool {
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !runs("buildah", "--version") {
        harness::skip_or_fail("buildah not installed (apt-get install buildah)");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !runs("chroot", "--version") {
        harness::skip_or_fail("extracting and running the image needs root and chroot");
        return false;
    }
    true
}

/// An image as read back: its config and its layers, compressed as stored.
struct Image {
    config: Value,
    config_digest: String,
    layers: Vec<(String, Vec<u8>)>,
}

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Checks that `bytes` is what `descriptor` names (digest and size).
fn verify(descriptor: &Value, bytes: &[u8], what: &str) {
    assert_eq!(
        descriptor["digest"].as_str(),
        Some(sha256(bytes).as_str()),
        "{what}: digest"
    );
    assert_eq!(
        descriptor["size"].as_u64(),
        Some(bytes.len() as u64),
        "{what}: size"
    );
}

/// Pulls `name:reference` over the registry API, verifying every digest.
async fn pull(host: &str, name: &str, reference: &str) -> Image {
    let http = harness::http_client();
    let response = http
        .get(format!("http://{host}/v2/{name}/manifests/{reference}"))
        .header("Accept", MANIFEST_TYPES)
        .send()
        .await
        .expect("manifest request");
    assert_eq!(response.status(), 200, "the pushed tag is there");
    let named = response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .expect("a manifest digest")
        .to_owned();
    let body = response.bytes().await.expect("manifest body");
    assert_eq!(sha256(&body), named, "the manifest's digest");
    let manifest: Value = serde_json::from_slice(&body).expect("manifest JSON");
    let blob = |descriptor: &Value| {
        let url = format!(
            "http://{host}/v2/{name}/blobs/{}",
            descriptor["digest"].as_str().expect("a digest")
        );
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.expect("blob request");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("blob body").to_vec()
        }
    };
    let config_bytes = blob(&manifest["config"]).await;
    verify(&manifest["config"], &config_bytes, "config");
    let mut layers = Vec::new();
    for descriptor in manifest["layers"].as_array().expect("layers") {
        let bytes = blob(descriptor).await;
        verify(descriptor, &bytes, "layer");
        let media_type = descriptor["mediaType"].as_str().expect("mediaType");
        layers.push((media_type.to_owned(), bytes));
    }
    Image {
        config: serde_json::from_slice(&config_bytes).expect("config JSON"),
        config_digest: sha256(&config_bytes),
        layers,
    }
}

/// Reads the one image of the OCI layout at `dir`, verifying every digest.
fn read_layout(dir: &Path) -> Image {
    let read =
        |path: PathBuf| std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let oci_layout: Value =
        serde_json::from_slice(&read(dir.join("oci-layout"))).expect("oci-layout JSON");
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&read(dir.join("index.json"))).expect("index");
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one image in the layout: {index}");
    let blob = |descriptor: &Value, what: &str| {
        let digest = descriptor["digest"].as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("sha256");
        let bytes = read(dir.join("blobs/sha256").join(hex));
        verify(descriptor, &bytes, what);
        bytes
    };
    let manifest: Value =
        serde_json::from_slice(&blob(&manifests[0], "manifest")).expect("manifest JSON");
    let config_bytes = blob(&manifest["config"], "config");
    let layers = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|d| {
            let media_type = d["mediaType"].as_str().expect("mediaType").to_owned();
            (media_type, blob(d, "layer"))
        })
        .collect();
    Image {
        config: serde_json::from_slice(&config_bytes).expect("config JSON"),
        config_digest: sha256(&config_bytes),
        layers,
    }
}

/// The config runs `rdev serve` as a non-root user, with the data volume, the port and the
/// environment `examples/deploy/deployment.yaml` relies on.
fn check_config(config: &Value) {
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let run = &config["config"];
    let user = run["User"].as_str().expect("a User");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .expect("a numeric uid");
    assert_ne!(uid, 0, "the image's user is not root");
    assert_eq!(user, format!("{IMAGE_UID}:{IMAGE_UID}"));
    assert_eq!(run["Entrypoint"], serde_json::json!([IMAGE_BINARY]));
    assert_eq!(run["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(run["WorkingDir"], IMAGE_DATA_DIR);
    assert!(run["ExposedPorts"]["8080/tcp"].is_object(), "{run}");
    assert!(run["Volumes"][IMAGE_DATA_DIR].is_object(), "{run}");
    let env: BTreeSet<&str> = run["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "RDEV_LISTEN=0.0.0.0:8080".to_owned(),
        format!("RDEV_DATA_DIR={IMAGE_DATA_DIR}"),
        format!("RDEV_PLUGINS_DIR={IMAGE_PLUGINS_DIR}"),
        "RDEV_EXECUTOR=kubernetes".to_owned(),
    ] {
        assert!(env.contains(expected.as_str()), "{expected} in {env:?}");
    }
    let layers = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    assert!(!layers.is_empty());
}

/// Unpacks every layer in order into `rootfs` as root (owners kept), checking each
/// uncompressed layer against the config's diff id and that none deletes anything.
fn extract(image: &Image, rootfs: &Path) {
    std::fs::create_dir_all(rootfs).expect("rootfs dir");
    let diff_ids = image.config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids");
    assert_eq!(diff_ids.len(), image.layers.len());
    for ((media_type, compressed), diff_id) in image.layers.iter().zip(diff_ids) {
        let tar = match media_type.as_str() {
            "application/vnd.oci.image.layer.v1.tar" => compressed.clone(),
            t if t.ends_with("tar+gzip") || t.ends_with("tar.gzip") => {
                pipe("gzip", &["-dc"], compressed)
            }
            other => panic!("unexpected layer type {other}"),
        };
        assert_eq!(Some(sha256(&tar).as_str()), diff_id.as_str(), "diff id");
        let listing = String::from_utf8(pipe("tar", &["-t"], &tar)).expect("UTF-8 names");
        assert!(
            !listing.lines().any(|name| name.contains(".wh.")),
            "a scratch image deletes nothing:\n{listing}"
        );
        let dir = rootfs.to_str().expect("UTF-8 path");
        pipe(
            "tar",
            &[
                "-x",
                "--same-owner",
                "--same-permissions",
                "--numeric-owner",
                "-C",
                dir,
            ],
            &tar,
        );
    }
}

/// Runs `program args` with `input` on stdin and returns its stdout; it must succeed.
fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("output");
    writer.join().expect("writer").expect("write stdin");
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Every entry of `rootfs` (relative paths) with its metadata, without following links.
fn walk(rootfs: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut entries = Vec::new();
    let mut pending = vec![rootfs.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                pending.push(path.clone());
            }
            let relative = path.strip_prefix(rootfs).expect("inside").to_path_buf();
            entries.push((relative, meta));
        }
    }
    entries
}

/// The root filesystem holds exactly rdev, the bundled plugins (byte for byte), TLS roots,
/// passwd/group and `libraries`; root owns all of it but the data volume (the image's
/// user's), and nothing else is writable by anyone but root except the sticky /tmp.
fn check_rootfs(rootfs: &Path, plugins_dir: &Path, libraries: &[PathBuf]) {
    let rel = |path: &str| PathBuf::from(path.trim_start_matches('/'));
    let plugin_files = image::bundled_plugin_files(plugins_dir).expect("bundled plugins");
    let mut expected: BTreeSet<PathBuf> = [
        IMAGE_BINARY,
        "/etc/passwd",
        "/etc/group",
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    .into_iter()
    .map(rel)
    .collect();
    for file in &plugin_files {
        let name = file.file_name().expect("name");
        let inside = rel(IMAGE_PLUGINS_DIR).join(name);
        let copied = std::fs::read(rootfs.join(&inside)).expect("the plugin is in the image");
        assert!(
            copied == std::fs::read(file).expect("plugin"),
            "{} is the built plugin",
            inside.display()
        );
        expected.insert(inside);
    }
    expected.extend(libraries.iter().map(|l| rel(&l.to_string_lossy())));
    let empty_dirs: BTreeSet<PathBuf> = ["/tmp", IMAGE_DATA_DIR].into_iter().map(rel).collect();
    let entries = walk(rootfs);
    let files: BTreeSet<PathBuf> = entries
        .iter()
        .filter(|(_, meta)| !meta.is_dir())
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(files, expected, "the image's files");
    for (path, meta) in &entries {
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            assert!(
                expected
                    .iter()
                    .chain(&empty_dirs)
                    .any(|f| f.starts_with(path)),
                "unexpected directory {}",
                path.display()
            );
        } else {
            assert!(meta.is_file(), "{} is a regular file", path.display());
        }
        let owner = if *path == rel(IMAGE_DATA_DIR) {
            IMAGE_UID
        } else {
            0
        };
        assert_eq!(
            (meta.uid(), meta.gid()),
            (owner, owner),
            "{} owner",
            path.display()
        );
        if *path == rel("/tmp") {
            assert_eq!(mode, 0o1777, "/tmp is sticky and world-writable");
        } else {
            assert_eq!(
                mode & 0o022,
                0,
                "{} is writable by others: {mode:o}",
                path.display()
            );
        }
    }
    let binary = rootfs.join(rel(IMAGE_BINARY));
    let mode = std::fs::metadata(&binary)
        .expect("binary")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "rdev is executable");
}

/// The image's own environment (its `Env`), as a runtime hands it to the entrypoint.
fn image_env(config: &Value) -> Vec<(String, String)> {
    config["config"]["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `chroot` into the extracted image as its user (no supplementary groups), with only the
/// image's environment plus `extra`.
fn in_image(rootfs: &Path, config: &Value, extra: &[(&str, String)]) -> Command {
    let user = config["config"]["User"].as_str().expect("User");
    let group = user.split(':').nth(1).expect("a group");
    let mut command = Command::new("chroot");
    command
        .arg(format!("--userspec={user}"))
        .arg(format!("--groups={group}"))
        .arg(rootfs)
        .env_clear()
        .envs(image_env(config))
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null());
    command
}

/// Kills the server when the test ends, passing or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary from the image runs on the image's files alone, as the image's user:
/// `--version`, then the entrypoint and command with a loopback listen address (the
/// container's port mapping) against the Kubernetes API-server double.
async fn run_from_rootfs(rootfs: &Path, config: &Value, plugins_dir: &Path, logs: &Path) {
    let version = in_image(rootfs, config, &[])
        .arg(IMAGE_BINARY)
        .arg("--version")
        .output()
        .expect("run rdev --version");
    let printed = String::from_utf8_lossy(&version.stdout);
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        printed.trim(),
        format!("rdev {}", env!("CARGO_PKG_VERSION"))
    );

    let api = FakeKubeApi::start().expect("API-server double");
    let ready = format!("{IMAGE_DATA_DIR}/ready");
    let log = |name: &str| std::fs::File::create(logs.join(name)).expect("log file");
    let mut command = in_image(
        rootfs,
        config,
        &[
            ("RDEV_KUBERNETES_API_URL", api.url()),
            ("RDEV_KUBERNETES_NAMESPACE", NAMESPACE.to_owned()),
        ],
    );
    let entrypoint = config["config"]["Entrypoint"]
        .as_array()
        .expect("Entrypoint");
    let cmd = config["config"]["Cmd"].as_array().expect("Cmd");
    let argv: Vec<&str> = entrypoint
        .iter()
        .chain(cmd)
        .filter_map(Value::as_str)
        .collect();
    command
        .args(&argv)
        .args(["--listen", "127.0.0.1:0", "--ready-file", &ready])
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"));
    let server = Killed(command.spawn().expect("spawn rdev serve in the image"));
    let logs_text = || {
        ["stdout.log", "stderr.log"]
            .map(|name| std::fs::read_to_string(logs.join(name)).unwrap_or_default())
            .join("\n")
    };
    let ready_file = rootfs.join(ready.trim_start_matches('/'));
    let deadline = Instant::now() + Duration::from_secs(120);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&ready_file) {
            break addr.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "not ready after 120 s:\n{}",
            logs_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id()))
        .expect("the server's status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec![IMAGE_UID.to_string(); 4],
        "rdev serve runs as the image's user"
    );
    check_serving(&addr, plugins_dir, &logs_text()).await;
}

/// `/readyz` answers ready and `GET /providers` lists exactly the bundled providers, all
/// serving.
async fn check_serving(addr: &str, plugins_dir: &Path, logs: &str) {
    let admin = printed_admin_token(logs).expect("a fresh data volume prints an admin token");
    let http = harness::http_client();
    let readyz = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), 200, "{logs}");
    let providers: Value = http
        .get(format!("http://{addr}/providers"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("providers")
        .json()
        .await
        .expect("providers JSON");
    let listed: BTreeSet<String> = providers["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| {
            assert_eq!(p["state"], "serving", "{p}");
            p["name"].as_str().expect("name").to_owned()
        })
        .collect();
    let bundled: BTreeSet<String> = image::bundled_plugin_files(plugins_dir)
        .expect("bundled plugins")
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
        .map(|f| f.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    assert!(!bundled.is_empty());
    assert_eq!(listed, bundled, "GET /providers lists the bundled plugins");
}
