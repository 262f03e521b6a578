//! The confined local executor for tests: bubblewrap and the real `rdev` binary as the
//! sandbox helper, the host's PATH for the agent CLIs, an allow-list of the test's choosing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rdev::adapters::local::sandbox::AllowRule;
use rdev::adapters::local::{LocalExecutor, Sandbox, SandboxConfig};
use rdev::ports::SecretResolver;

/// The sandbox for a data dir `root` (workspaces in `root/projects`), allowing `egress`.
/// `None` (after [`super::skip_or_fail`]) on a host that cannot confine.
pub fn sandbox(root: &Path, egress: &[&str]) -> Option<Arc<Sandbox>> {
    probe(config(root, egress), root)
}

/// The configuration [`sandbox`] uses: the built helper, state in `root/sandbox`, `egress`.
pub fn config(root: &Path, egress: &[&str]) -> SandboxConfig {
    let mut config = SandboxConfig::new(root.join("sandbox"));
    config.helper = super::bin::rdev().with_file_name(rdev::adapters::local::sandbox::HELPER_NAME);
    config.egress_allow = egress
        .iter()
        .map(|rule| rule.parse::<AllowRule>().expect("valid egress rule"))
        .collect();
    config
}

/// The sandbox `config` makes for data dir `root`, with the host's PATH; `None` (after
/// [`super::skip_or_fail`]) on a host that cannot confine.
pub fn probe(config: SandboxConfig, root: &Path) -> Option<Arc<Sandbox>> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    match Sandbox::probe(config, root, &path_dirs) {
        Ok(sandbox) => Some(Arc::new(sandbox)),
        Err(e) => {
            super::skip_or_fail(&format!("the sandbox: {e}"));
            None
        }
    }
}

/// The allow-list entry (`host:port`) for a fake API's base URL (`http://host:port/...`),
/// so the confined commands of a test's server can reach it.
pub fn allow_rule(base_url: &str) -> String {
    let rest = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// A change to a server's configuration that lets its confined commands reach `base_url` (a
/// test double on the host's loopback) through the egress allow-list.
pub fn allowing(base_url: &str) -> impl FnOnce(&mut rdev::server::ServeConfig) + use<> {
    let rule = allow_rule(base_url);
    move |config| config.confinement.allow_hosts.push(rule)
}

/// A TCP server on an ephemeral loopback port that answers every connection with a bare
/// HTTP 200 whose body is `name`: a target whose reachability an egress test checks.
pub async fn banner_server(name: &'static str) -> u16 {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(format!("HTTP/1.0 200 OK\r\n\r\n{name}\n").as_bytes())
                .await;
        }
    });
    port
}

/// Whether this host can confine commands (a trial sandbox in a scratch directory); `false`
/// after [`super::skip_or_fail`] otherwise.
pub fn can_confine() -> bool {
    let scratch = tempfile::tempdir().expect("scratch dir");
    sandbox(scratch.path(), &[]).is_some()
}

/// A confined executor with workspaces under `root/projects`.
pub fn executor(
    root: &Path,
    secrets: Arc<dyn SecretResolver>,
    egress: &[&str],
) -> Option<LocalExecutor> {
    let sandbox = sandbox(root, egress)?;
    Some(LocalExecutor::per_project(root.join("projects"), secrets).confined(sandbox))
}

/// The host pid of the sandboxed process running exactly `cmdline` (words joined by
/// spaces), found through `/proc` since a sandbox reports pids of its own namespace.
pub fn host_pid(cmdline: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
            let words: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            (words.join(" ") == cmdline).then_some(pid)
        })
}

/// [`host_pid`], polled for up to ten seconds: a process that was just forked may not have
/// exec'd its program yet.
pub fn wait_for_host_pid(cmdline: &str) -> Option<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(pid) = host_pid(cmdline) {
            return Some(pid);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether host pid `pid` runs: it exists and is not a zombie.
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit(')').next().map(|r| r.trim_start().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// Waits up to five seconds for `pid` to stop running; whether it did.
pub async fn stopped(pid: i32) -> bool {
    for _ in 0..250 {
        if !running(pid) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
