//! `rdev exec --dir` through the real binary and the real shell provider: its commands run
//! confined as `rdev serve` runs a project's (docs/sandbox.md), with the same flags, variables
//! and config-file settings, and the same refusal on a host that cannot confine.

use std::path::{Path, PathBuf};
use std::process::Output;

use rdev_tests::harness::bin::{output_text, rdev};
use rdev_tests::harness::plugins::plugins_dir;
use rdev_tests::harness::sandbox;

/// A scratch directory outside `/tmp` (the sandbox's own `/tmp` is private, which would
/// hide a file there whatever else held): under the target directory, in rdev's $HOME here.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir")
}

/// A host with secrets outside the workspace: rdev's data dir and the caller's $HOME.
struct Host {
    data: tempfile::TempDir,
    home: tempfile::TempDir,
    ws: tempfile::TempDir,
}

const DATA_SECRET: &str = "DATA-DIR-SECRET-3141";
const HOME_SECRET: &str = "HOME-SSH-KEY-SECRET-2718";

impl Host {
    fn new() -> Self {
        let host = Self {
            data: scratch(),
            home: scratch(),
            ws: scratch(),
        };
        std::fs::write(host.data_secret(), DATA_SECRET).expect("data secret");
        std::fs::create_dir(host.home.path().join(".ssh")).expect(".ssh");
        std::fs::write(host.home_secret(), HOME_SECRET).expect("home secret");
        host
    }

    fn data_secret(&self) -> PathBuf {
        self.data.path().join("secret.txt")
    }

    fn home_secret(&self) -> PathBuf {
        self.home.path().join(".ssh/id_ed25519")
    }

    /// `rdev exec --provider shell --dir <ws>` with this host's data dir and $HOME, no
    /// confinement setting inherited from the test's environment, then `extra`.
    fn exec(&self, extra: &[&str], script: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(rdev());
        cmd.env("RDEV_PLUGINS_DIR", plugins_dir())
            .env("RDEV_DATA_DIR", self.data.path())
            .env("HOME", self.home.path())
            .env_remove("RDEV_UNCONFINED")
            .env_remove("RDEV_ALLOW_HOSTS")
            .env_remove("RDEV_CONFIG")
            .args(["exec", "--provider", "shell", "--dir"])
            .arg(self.ws.path())
            .args(extra)
            .args(["--", script]);
        cmd
    }

    async fn run(&self, extra: &[&str], script: &str) -> Output {
        self.exec(extra, script).output().await.expect("rdev runs")
    }
}

fn python_connect(port: u16) -> String {
    format!(
        "/usr/bin/python3 -c 'import socket; s=socket.create_connection((\"127.0.0.1\", {port}), 3); print(s.recv(100).decode())'"
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A read of `path` failed inside the sandbox: `cat`'s own error for a path that does not
/// exist there, exit 1, nothing of `secret` printed.
fn assert_unreadable(output: &Output, path: &Path, secret: &str) {
    let said = output_text(output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        stderr(output).contains(&format!(
            "cat: {}: No such file or directory",
            path.display()
        )),
        "{said}"
    );
    assert!(!said.contains(secret), "read {}: {said}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_confines_its_commands_by_default() {
    let server = sandbox::banner_server("host-loopback-server").await;
    if !sandbox::can_confine() {
        return;
    }
    let host = Host::new();

    let own = host
        .run(&[], "echo mine > own.txt && cat own.txt && id -un")
        .await;
    let said = output_text(&own);
    assert_eq!(own.status.code(), Some(0), "{said}");
    // As root, rdev runs commands as its sandbox user; otherwise as the caller's own uid.
    // SAFETY: geteuid cannot fail.
    let user = if unsafe { libc::geteuid() } == 0 {
        "rdev".to_owned()
    } else {
        String::from_utf8_lossy(
            &std::process::Command::new("id")
                .arg("-un")
                .output()
                .expect("id runs")
                .stdout,
        )
        .trim()
        .to_owned()
    };
    assert_eq!(stdout(&own), format!("mine\n{user}\n"), "{said}");
    assert!(!stderr(&own).contains("UNCONFINED"), "{said}");
    assert_eq!(
        std::fs::read_to_string(host.ws.path().join("own.txt")).expect("own file"),
        "mine\n"
    );

    for (path, secret) in [
        (host.data_secret(), DATA_SECRET),
        (host.home_secret(), HOME_SECRET),
    ] {
        let read = host.run(&[], &format!("cat {}", path.display())).await;
        assert_unreadable(&read, &path, secret);
    }

    // Only the sandbox's own loopback is there: the host's server is refused, not reached.
    let connect = host.run(&[], &python_connect(server)).await;
    let said = output_text(&connect);
    assert_eq!(connect.status.code(), Some(1), "{said}");
    assert!(
        stderr(&connect).contains("ConnectionRefusedError"),
        "{said}"
    );
    assert!(!said.contains("host-loopback-server"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_host_opens_one_loopback_destination_and_no_other() {
    let allowed = sandbox::banner_server("allowed-server").await;
    let forbidden = sandbox::banner_server("forbidden-server").await;
    if !sandbox::can_confine() {
        return;
    }
    let host = Host::new();
    let rule = format!("127.0.0.1:{allowed}");
    let reached = host
        .run(&["--allow-host", &rule], &python_connect(allowed))
        .await;
    let said = output_text(&reached);
    assert_eq!(reached.status.code(), Some(0), "{said}");
    assert!(stdout(&reached).contains("allowed-server"), "{said}");

    // The variable adds to the list as the flag does; the other port stays shut.
    let mut through_env = host.exec(&[], &python_connect(forbidden));
    let refused = through_env
        .env("RDEV_ALLOW_HOSTS", &rule)
        .output()
        .await
        .expect("rdev runs");
    let said = output_text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(!said.contains("forbidden-server"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_from_flag_variable_or_file_runs_as_before_and_warns() {
    let server = sandbox::banner_server("host-loopback-server").await;
    let host = Host::new();
    let config = host.data.path().join("rdev.toml");
    std::fs::write(&config, "unconfined = true\n").expect("config file");
    let script = format!(
        "cat {} && echo && {}",
        host.home_secret().display(),
        python_connect(server)
    );
    let by_flag = host.run(&["--unconfined"], &script).await;
    let by_variable = host
        .exec(&[], &script)
        .env("RDEV_UNCONFINED", "true")
        .output()
        .await
        .expect("rdev runs");
    let by_file = host
        .run(&["--config", config.to_str().expect("utf-8")], &script)
        .await;
    for (how, output) in [
        ("--unconfined", by_flag),
        ("RDEV_UNCONFINED", by_variable),
        ("the config file", by_file),
    ] {
        let said = output_text(&output);
        assert_eq!(output.status.code(), Some(0), "{how}: {said}");
        let out = stdout(&output);
        assert!(
            out.starts_with(&format!("{HOME_SECRET}\n")) && out.contains("host-loopback-server"),
            "{how}: {said}"
        );
        assert!(
            stderr(&output).contains("WARNING: commands run UNCONFINED"),
            "{how}: {said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_mechanism_exec_refuses_to_run_unless_unconfined() {
    let host = Host::new();
    let empty = scratch();
    // No bubblewrap on PATH: the one mechanism a test can take away.
    let refused = host
        .exec(&[], "echo ran > ran.txt")
        .env("PATH", empty.path())
        .output()
        .await
        .expect("rdev runs");
    let said = output_text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    for expected in [
        "this host cannot confine commands",
        "bubblewrap",
        "start with --unconfined",
    ] {
        assert!(stderr(&refused).contains(expected), "{expected}: {said}");
    }
    assert!(!host.ws.path().join("ran.txt").exists(), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_holding_the_data_dir_is_refused() {
    if !sandbox::can_confine() {
        return;
    }
    let host = Host::new();
    let inside = host.ws.path().join("rdev-data");
    let refused = host
        .exec(
            &["--data-dir", inside.to_str().expect("utf-8")],
            "echo ran > ran.txt",
        )
        .output()
        .await
        .expect("rdev runs");
    let said = output_text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        stderr(&refused).contains("holds rdev's data directory"),
        "{said}"
    );
    assert!(!host.ws.path().join("ran.txt").exists(), "{said}");
}
