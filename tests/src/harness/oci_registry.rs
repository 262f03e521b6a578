//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on a free loopback port with filesystem storage in a temporary directory,
//! stopped when dropped; anonymous, or requiring credentials through htpasswd (HTTP Basic,
//! the entry made by Debian's `htpasswd`) or through the token flow
//! ([`super::registry_token`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::registry_token::{ISSUER, SERVICE, TokenService};

/// Where Debian installs the registry.
const BINARY: &str = "/usr/bin/docker-registry";
/// Where Debian's apache2-utils installs `htpasswd`.
const HTPASSWD: &str = "/usr/bin/htpasswd";

/// Who the registry lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    Anonymous,
    /// HTTP Basic against an htpasswd file (bcrypt).
    Htpasswd {
        username: String,
        password: String,
    },
    /// Bearer tokens from a token service that checks these credentials.
    Token {
        username: String,
        password: String,
    },
}

/// A running registry.
pub struct OciRegistry {
    child: std::process::Child,
    /// `127.0.0.1:<port>`, the registry part of a reference.
    pub host: String,
    storage: tempfile::TempDir,
    /// The token service, with [`RegistryAuth::Token`].
    pub tokens: Option<TokenService>,
}

impl OciRegistry {
    /// Starts the registry and waits until `/v2/` answers; `None` (after
    /// [`super::skip_or_fail`]) when `docker-registry` is not installed.
    pub async fn start() -> Option<Self> {
        Self::start_with(RegistryAuth::Anonymous).await
    }

    /// [`OciRegistry::start`] letting in only whom `auth` says; `None` (after
    /// [`super::skip_or_fail`]) when a tool it needs is not installed.
    pub async fn start_with(auth: RegistryAuth) -> Option<Self> {
        if matches!(auth, RegistryAuth::Htpasswd { .. }) && !Path::new(HTPASSWD).is_file() {
            super::skip_or_fail(&format!(
                "{HTPASSWD} not installed (apt-get install apache2-utils)"
            ));
            return None;
        }
        if !Path::new(BINARY).is_file() {
            super::skip_or_fail(&format!(
                "{BINARY} not installed (apt-get install docker-registry)"
            ));
            return None;
        }
        let storage = tempfile::tempdir().expect("storage dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        let root = storage.path().join("data");
        let (auth_config, tokens) = auth_config(&auth, storage.path());
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth_config}",
                root.display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(storage.path().join("registry.log")).expect("log");
        let child = std::process::Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let registry = Self {
            child,
            host,
            storage,
            tokens,
        };
        registry.wait_ready().await;
        Some(registry)
    }

    async fn wait_ready(&self) {
        let http = super::http_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answered = http.get(format!("http://{}/v2/", self.host)).send().await;
            // With auth, an anonymous `/v2/` is 401 once the registry is up.
            let up = |status: reqwest::StatusCode| {
                status.is_success() || status == reqwest::StatusCode::UNAUTHORIZED
            };
            if answered.is_ok_and(|r| up(r.status())) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not ready after 30 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.storage.path().join("registry.log")).unwrap_or_default()
    }

    /// The stored file of blob `sha256:<hex>`, to corrupt it behind the registry's back.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// The registry's `auth:` section for `auth`, and the token service it names.
fn auth_config(auth: &RegistryAuth, dir: &Path) -> (String, Option<TokenService>) {
    match auth {
        RegistryAuth::Anonymous => (String::new(), None),
        RegistryAuth::Htpasswd { username, password } => {
            let entry = std::process::Command::new(HTPASSWD)
                .args(["-nbB", username, password])
                .output()
                .expect("run htpasswd");
            assert!(entry.status.success(), "htpasswd failed");
            let file = dir.join("htpasswd");
            std::fs::write(&file, entry.stdout).expect("htpasswd file");
            let config = format!(
                "auth:\n  htpasswd:\n    realm: rdev-test\n    path: {}\n",
                file.display()
            );
            (config, None)
        }
        RegistryAuth::Token { username, password } => {
            let tokens = TokenService::start(dir, username, password).expect("token service");
            let config = format!(
                "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                tokens.realm(),
                tokens.cert.display()
            );
            (config, Some(tokens))
        }
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
