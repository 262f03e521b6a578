//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on a free loopback port with filesystem storage in a temporary directory,
//! stopped when dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where Debian installs the registry.
const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry.
pub struct OciRegistry {
    child: std::process::Child,
    /// `127.0.0.1:<port>`, the registry part of a reference.
    pub host: String,
    storage: tempfile::TempDir,
}

impl OciRegistry {
    /// Starts the registry and waits until `/v2/` answers; `None` (after
    /// [`super::skip_or_fail`]) when `docker-registry` is not installed.
    pub async fn start() -> Option<Self> {
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
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
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
        };
        registry.wait_ready().await;
        Some(registry)
    }

    async fn wait_ready(&self) {
        let http = super::http_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answered = http.get(format!("http://{}/v2/", self.host)).send().await;
            if answered.is_ok_and(|r| r.status().is_success()) {
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

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
