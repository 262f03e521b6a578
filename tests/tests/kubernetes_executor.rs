//! What only the Kubernetes executor does, against the loopback API-server double with the
//! real kube-rs client: the wire protocol (v5 with v4 fallback), secrets kept off the exec
//! URL, pod lookup refusals, port-forward, and the real `shell` provider end to end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdev::adapters::kubernetes::PodTemplate;
use rdev::domain::{ProjectId, ResultStatus};
use rdev::ports::{CodeAgent, EnvValue, ExecError, Executor, SecretResolver};
use rdev::runtime::{Runtime, RuntimeConfig};
use rdev_tests::doubles::kube_api::FakeKubeApi;
use rdev_tests::harness::kubernetes::{KubeProject, NAMESPACE, project_labels, project_pod};
use rdev_tests::harness::runtime::{
    MapSecrets, final_text, load_shell, output, read_all, run, serve_loopback, sh, web_guest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn no_secrets() -> Arc<dyn SecretResolver> {
    Arc::new(MapSecrets::default())
}

fn id(value: &str) -> ProjectId {
    ProjectId::parse(value).expect("id")
}

#[tokio::test]
async fn exec_uses_v5_and_secrets_never_reach_the_exec_url() {
    let secrets = Arc::new(MapSecrets(HashMap::from([(
        "API_KEY".to_owned(),
        "sk-very-secret-42".to_owned(),
    )])));
    let pod = project_pod("p", secrets).await;
    let mut spec = sh("printf %s \"$KEY\"");
    spec.env = vec![(
        "KEY".to_owned(),
        EnvValue::Secret {
            name: "API_KEY".to_owned(),
            required: true,
        },
    )];
    let mut process = pod.executor.spawn(&id("p"), spec).await.expect("spawn");
    let out = read_all(&mut process.stdout).await;
    assert_eq!(out, "sk-very-secret-42", "the program sees the secret");
    assert!(process.control.wait().await.expect("wait").success());
    let execs = pod.api.execs();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].pod, "ws-p");
    assert_eq!(execs[0].protocol, "v5.channel.k8s.io");
    assert_eq!(&execs[0].command[..2], ["sh", "-c"]);
    assert!(
        !execs[0].uri.contains("sk-very-secret") && !execs[0].uri.contains("very-secret"),
        "secret on the wire: {}",
        execs[0].uri
    );
    assert!(execs[0].command.iter().all(|arg| !arg.contains("sk-very")));
}

#[tokio::test]
async fn an_api_server_without_v5_still_reports_output_and_exit_codes() {
    let pod = project_pod("p", no_secrets()).await;
    pod.api.set_v4_only(true);
    let mut process = pod
        .executor
        .spawn(&id("p"), sh("echo over v4; echo err >&2; exit 5"))
        .await
        .expect("spawn");
    let out = read_all(&mut process.stdout).await;
    let err = read_all(&mut process.stderr).await;
    assert_eq!((out.as_str(), err.as_str()), ("over v4\n", "err\n"));
    assert_eq!(process.control.wait().await.expect("wait").code, Some(5));
    assert_eq!(pod.api.execs()[0].protocol, "v4.channel.k8s.io");
}

fn unavailable_reason(result: Result<rdev::ports::SpawnedProcess, ExecError>) -> String {
    match result {
        Err(ExecError::WorkspaceUnavailable { reason, .. }) => reason,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("spawned without a usable pod"),
    }
}

#[tokio::test]
async fn the_pod_must_exist_be_unique_running_and_ready() {
    let pod = project_pod("p", no_secrets()).await;
    let reason = unavailable_reason(pod.executor.spawn(&id("nope"), sh("true")).await);
    assert!(reason.contains("no pod labelled"), "{reason}");
    assert!(
        reason.contains("rdev.orchard9.ai/project-id=nope"),
        "{reason}"
    );

    // Another project's pod and an unlabelled pod do not count; a second pod of `dup` does.
    let dup = project_labels("dup");
    let dup: Vec<(&str, &str)> = dup.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for name in ["dup-a", "dup-b"] {
        pod.api
            .add_pod(NAMESPACE, name, &dup, "Running", true)
            .expect("pod");
    }
    let reason = unavailable_reason(pod.executor.spawn(&id("dup"), sh("true")).await);
    assert!(
        reason.contains("2 pods") && reason.contains("dup-a, dup-b"),
        "{reason}"
    );

    pod.api.set_pod_status(NAMESPACE, "ws-p", "Pending", false);
    let reason = unavailable_reason(pod.executor.spawn(&id("p"), sh("true")).await);
    assert!(reason.contains("ws-p is Pending"), "{reason}");
    pod.api.set_pod_status(NAMESPACE, "ws-p", "Running", false);
    let reason = unavailable_reason(pod.executor.spawn(&id("p"), sh("true")).await);
    assert!(reason.contains("not Ready"), "{reason}");
    pod.api.set_pod_status(NAMESPACE, "ws-p", "Running", true);
    let process = pod
        .executor
        .spawn(&id("p"), sh("true"))
        .await
        .expect("ready pod");
    assert!(process.control.wait().await.expect("wait").success());
}

#[tokio::test]
async fn connect_forwards_to_a_port_in_the_pod() {
    let pod = project_pod("p", no_secrets()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4];
        socket.read_exact(&mut buf).await.expect("read");
        socket.write_all(&buf).await.expect("echo");
        buf
    });
    let mut connection = pod.executor.connect(&id("p"), port).await.expect("connect");
    connection.write_all(b"ping").await.expect("write");
    let mut back = [0u8; 4];
    connection.read_exact(&mut back).await.expect("read back");
    assert_eq!(&back, b"ping");
    assert_eq!(&echo.await.expect("join"), b"ping");

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let unused = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut refused = pod
        .executor
        .connect(&id("p"), unused)
        .await
        .expect("the forward itself opens");
    let mut buf = [0u8; 1];
    let error = refused
        .read(&mut buf)
        .await
        .expect_err("nothing listens on the port");
    assert!(error.to_string().contains(&unused.to_string()), "{error}");
}

/// A runtime whose executor is the Kubernetes one, with project `test`'s pod; returns the
/// double (to keep it running) and the pod's workspace.
async fn shell_runtime() -> (Runtime, FakeKubeApi, PathBuf) {
    let secrets = no_secrets();
    let KubeProject {
        executor,
        api,
        workspace,
    } = project_pod("test", secrets.clone()).await;
    let mut config = RuntimeConfig::new(Arc::new(executor), secrets);
    config.cancel_grace = Duration::from_secs(1);
    config.max_instances = 4;
    (Runtime::new(config).expect("runtime"), api, workspace)
}

#[tokio::test]
async fn the_shell_provider_runs_in_the_pod_through_the_runtime() {
    let (runtime, _api, workspace) = shell_runtime().await;
    let agent = load_shell(&runtime).await;
    let mut r = run(
        "echo hello from the pod; pwd -P",
        Duration::from_secs(120),
        256,
    );
    let result = agent.execute(r.execution).await.expect("runs");
    assert_eq!(result.status, ResultStatus::Completed, "{result:?}");
    assert_eq!(result.exit_code, Some(0));
    let (stdout, stderr) = output(&mut r.events);
    let expected = format!("hello from the pod\n{}\n", workspace.display());
    assert_eq!((stdout.as_str(), stderr.as_str()), (expected.as_str(), ""));

    let r = run("exit 3", Duration::from_secs(120), 256);
    let result = agent.execute(r.execution).await.expect("runs");
    assert_eq!(result.status, ResultStatus::Failed);
    assert_eq!(result.exit_code, Some(3));
}

#[tokio::test]
async fn cancelling_the_shell_provider_kills_the_remote_group() {
    let (runtime, _api, workspace) = shell_runtime().await;
    let agent = load_shell(&runtime).await;
    let pidfile = workspace.join("sleeper.pid");
    let r = run(
        "sleep 60 & echo $! > sleeper.pid; wait",
        Duration::from_secs(120),
        256,
    );
    let cancel = r.cancel.clone();
    let execution = tokio::spawn({
        let agent = agent.clone();
        async move { agent.execute(r.execution).await }
    });
    // Cancel once the sleeper is known to run.
    let pid: i32 = loop {
        if let Ok(text) = std::fs::read_to_string(&pidfile)
            && let Ok(pid) = text.trim().parse()
        {
            break pid;
        }
        assert!(
            !execution.is_finished(),
            "the execution ended before the sleeper ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cancel.cancel();
    let result = execution.await.expect("join").expect("execution ends");
    assert_eq!(result.status, ResultStatus::Cancelled, "{result:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z')
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sleeper {pid} survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn provisioning_creates_a_labelled_pod_and_volume_waits_for_ready_and_deletes_them() {
    let pod = project_pod("p", no_secrets()).await;
    pod.api.set_start_pending(true);
    let project = id("fresh");
    let mut template = PodTemplate::new("ghcr.io/orchard9/workspace:1");
    template.memory = "2Gi".to_owned();
    let api = &pod.api;
    let provision = pod.executor.provision(
        &project,
        &template,
        Duration::from_millis(20),
        Duration::from_secs(60),
    );
    let make_ready = async {
        // The pod exists (and provision is polling it) before it turns ready.
        while !api.pod_names().contains(&"rdev-fresh".to_owned()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reason = unavailable_reason(pod.executor.spawn(&project, sh("true")).await);
        assert!(reason.contains("Pending"), "{reason}");
        api.set_pod_status(NAMESPACE, "rdev-fresh", "Running", true);
    };
    let (name, ()) = tokio::join!(provision, make_ready);
    assert_eq!(name.expect("provisioned"), "rdev-fresh");

    let created = api.created_pod("rdev-fresh").expect("pod created");
    assert_eq!(
        created["metadata"]["labels"]["rdev.orchard9.ai/project-id"],
        "fresh"
    );
    assert_eq!(
        created["metadata"]["labels"]["rdev.orchard9.ai/project"],
        "true"
    );
    assert_eq!(created["spec"]["automountServiceAccountToken"], false);
    let container = &created["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/orchard9/workspace:1");
    assert_eq!(container["resources"]["limits"]["memory"], "2Gi");
    assert_eq!(
        created["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "rdev-fresh-workspace"
    );
    let pvc = api.pvc("rdev-fresh-workspace").expect("volume created");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "10Gi");

    let process = pod
        .executor
        .spawn(&project, sh("true"))
        .await
        .expect("exec into the provisioned pod");
    assert!(process.control.wait().await.expect("wait").success());
    assert_eq!(api.execs().last().expect("exec").pod, "rdev-fresh");

    pod.executor.deprovision(&project).await.expect("deleted");
    assert!(api.created_pod("rdev-fresh").is_none());
    assert!(api.pvc("rdev-fresh-workspace").is_none());
    assert!(api.network_policy("rdev-fresh").is_none());
    pod.executor
        .deprovision(&project)
        .await
        .expect("deleting twice is fine");
    let reason = unavailable_reason(pod.executor.spawn(&project, sh("true")).await);
    assert!(reason.contains("no pod labelled"), "{reason}");
}

/// The real `hostile` test guest's project-http through the runtime and the Kubernetes
/// executor's port-forward: a forward the API server drops mid-response fails that request
/// promptly, and the next request opens a fresh forward and succeeds.
#[tokio::test]
async fn project_http_opens_a_fresh_forward_after_one_drops_mid_response() {
    use axum::Router;
    use axum::routing::get;

    let (runtime, api, _workspace) = shell_runtime().await;
    let big = "x".repeat(256 * 1024);
    let served = big.clone();
    let app = Router::new().route("/big", get(move || async move { served }));
    let (port, server) = serve_loopback(app).await;
    let plugins = tempfile::tempdir().expect("tempdir");
    let manifest = web_guest(plugins.path(), port);
    let agent = runtime.load(&manifest).await.expect("loads");
    let ask = |prompt: String| {
        let agent = agent.clone();
        async move { final_text(&*agent, &prompt, Duration::from_secs(60)).await }
    };

    api.drop_next_port_forward_after(4096);
    let dropped = ask(format!("http {port} /big")).await;
    assert!(!dropped.starts_with("200 "), "a cut response is an error");
    assert!(
        !dropped.contains("timed out") && !dropped.contains("timeout"),
        "the drop is noticed, not waited out: {dropped}"
    );
    let again = ask(format!("http {port} /big")).await;
    assert_eq!(
        again.len(),
        big.len() + 4,
        "the next request gets all of it"
    );
    assert_eq!(again, format!("200 {big}"));
    server.abort();
}
