//! SSE delivery latency, printed as a table (not a timed test): time from an event appended
//! to a command's event log (what the worker does for every provider event) to an SSE
//! client of `rdev serve` receiving it, over loopback, with 1 and with 1,000 subscribers of
//! the same stream; enqueue requests per second on `POST /projects/{id}/commands`; and the
//! memory an idle SSE subscriber costs a separate `rdev serve` process (its RSS, from
//! `/proc/<pid>/status`, before and after opening idle connections to one stream).
//!
//! Run: `cargo xtask plugins && cargo bench -p rdev --bench sse`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdev::domain::{AgentEvent, CommandId, OutputStream, StreamEvent};
use rdev::server::{ServeConfig, Server};
use serde_json::json;
use tokio::sync::mpsc;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Reads an SSE body and reports the arrival time of every event by its id (the sequence
/// number), without decoding its JSON: the client's own work is kept out of the figure.
async fn subscribe(
    http: reqwest::Client,
    url: String,
    token: String,
    arrivals: mpsc::UnboundedSender<(i64, Instant)>,
    ready: mpsc::UnboundedSender<()>,
) -> Result<()> {
    let response = http.get(url).bearer_auth(token).send().await?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let _ = ready.send(());
    while let Some(chunk) = body.next().await {
        let now = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(seq) = frame
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|id| id.trim().parse::<i64>().ok())
            {
                let _ = arrivals.send((seq, now));
            }
        }
    }
    Ok(())
}

async fn latency(
    server: &Server,
    base: &str,
    admin: &str,
    subscribers: usize,
    events: u64,
) -> Result<(Duration, Duration, Duration)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let submit = |prompt: &str| {
        http.post(format!("{base}/projects/bench-{subscribers}/shell"))
            .bearer_auth(admin)
            .json(&json!({"prompt": prompt}))
            .send()
    };
    // The blocker occupies the project's running slot, so the measured command stays
    // pending and only the events appended here reach its stream.
    let blocker: serde_json::Value = submit("sleep 600").await?.json().await?;
    let target: serde_json::Value = submit("true").await?.json().await?;
    let id = CommandId::parse(target["command_id"].as_str().unwrap_or_default())?;
    let url = format!(
        "{base}{}",
        target["stream_url"].as_str().unwrap_or_default()
    );
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    for _ in 0..subscribers {
        tokio::spawn(subscribe(
            http.clone(),
            url.clone(),
            admin.to_owned(),
            arrivals_tx.clone(),
            ready_tx.clone(),
        ));
    }
    for _ in 0..subscribers {
        ready.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = server.state().stores.events.clone();
    let mut samples = Vec::with_capacity(subscribers * events as usize);
    for n in 0..events {
        let event = StreamEvent::Agent(AgentEvent::Output {
            stream: OutputStream::Stdout,
            text: n.to_string(),
        });
        let sent = Instant::now();
        let seq = log.append(&id, &event).await?.seq;
        let mut received = 0;
        while received < subscribers {
            let (seen, at) = arrivals.recv().await.ok_or("subscribers ended")?;
            if seen == seq {
                samples.push(at - sent);
                received += 1;
            }
        }
    }
    for command in [&target, &blocker] {
        let id = command["command_id"].as_str().unwrap_or_default();
        http.post(format!("{base}/commands/{id}/cancel"))
            .bearer_auth(admin)
            .send()
            .await?;
    }
    samples.sort();
    Ok((
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        *samples.last().unwrap_or(&Duration::ZERO),
    ))
}

async fn enqueue_rate(base: &str, admin: &str, total: usize, concurrency: usize) -> Result<f64> {
    let http = reqwest::Client::new();
    let blocker = http
        .post(format!("{base}/projects/enqueue/shell"))
        .bearer_auth(admin)
        .json(&json!({"prompt": "sleep 600"}))
        .send()
        .await?;
    let blocker: serde_json::Value = blocker.json().await?;
    let start = Instant::now();
    let per_task = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let http = http.clone();
        let url = format!("{base}/projects/enqueue/commands");
        let admin = admin.to_owned();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let response = http
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&json!({"prompt": "true", "provider": "shell"}))
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::ACCEPTED {
                    return Err::<(), Box<dyn std::error::Error + Send + Sync>>(
                        format!("status {}", response.status()).into(),
                    );
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let rate = (per_task * concurrency) as f64 / start.elapsed().as_secs_f64();
    let id = blocker["command_id"].as_str().unwrap_or_default();
    http.post(format!("{base}/commands/{id}/cancel"))
        .bearer_auth(admin)
        .send()
        .await?;
    Ok(rate)
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS line")?
        .parse()?;
    Ok(kib)
}

/// A child `rdev serve` (SQLite in a temporary data dir), killed on drop.
struct ChildServer {
    child: std::process::Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_child(plugins: &std::path::Path, admin: &str) -> Result<ChildServer> {
    let data = tempfile::tempdir()?;
    let ready = data.path().join("ready");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rdev"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .arg("--plugins-dir")
        .arg(plugins)
        .arg("--ready-file")
        .arg(&ready)
        .env("RDEV_ADMIN_TOKEN", admin)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut server = ChildServer {
        child,
        base: String::new(),
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(address) = std::fs::read_to_string(&ready)
            && !address.trim().is_empty()
        {
            server.base = format!("http://{}", address.trim());
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err("rdev serve did not become ready in 60 s".into());
        }
        if let Some(status) = server.child.try_wait()? {
            return Err(format!("rdev serve exited early: {status}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `count` SSE connections to a stream that stays silent and returns them once
/// every response's headers arrived (the server holds each subscription by then).
async fn open_idle(
    http: &reqwest::Client,
    url: &str,
    admin: &str,
    count: usize,
) -> Result<Vec<reqwest::Response>> {
    let mut opened = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(100) {
        let batch = (count - chunk * 100).min(100);
        let requests = (0..batch).map(|_| http.get(url).bearer_auth(admin).send());
        for response in futures::future::join_all(requests).await {
            let response = response?;
            if !response.status().is_success() {
                return Err(format!("stream status {}", response.status()).into());
            }
            opened.push(response);
        }
    }
    Ok(opened)
}

/// RSS of a separate `rdev serve` with 0, `step` and `2 * step` idle SSE subscribers.
async fn idle_memory(plugins: &std::path::Path, step: usize) -> Result<[u64; 3]> {
    let admin = "rdev_bench_admin_token_for_the_sse_memory_run";
    let server = start_child(plugins, admin).await?;
    let pid = server.child.id();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let submit = |prompt: &str| {
        http.post(format!("{}/projects/idle/shell", server.base))
            .bearer_auth(admin)
            .json(&json!({"prompt": prompt}))
            .send()
    };
    let _blocker: serde_json::Value = submit("sleep 600").await?.json().await?;
    let target: serde_json::Value = submit("true").await?.json().await?;
    let url = format!(
        "{}{}",
        server.base,
        target["stream_url"].as_str().unwrap_or_default()
    );
    // Warm up: one subscription and its first allocations are not the per-subscriber cost.
    let warm = open_idle(&http, &url, admin, 10).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let first = open_idle(&http, &url, admin, step).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let one_step = rss_kib(pid)?;
    let second = open_idle(&http, &url, admin, step).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let two_steps = rss_kib(pid)?;
    drop((warm, first, second));
    Ok([before, one_step, two_steps])
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = tempfile::tempdir()?;
    let mut config = ServeConfig::new();
    config.listen = "127.0.0.1:0".into();
    config.data_dir = data.path().to_owned();
    config.plugins_dir = Some(root.join("target/plugins"));
    config.worker.drain_deadline = Duration::from_secs(2);
    config.queue.heartbeat = Duration::from_millis(200);
    let server = Server::start(config).await?;
    let base = format!("http://{}", server.local_addr());
    let admin = server
        .generated_admin_token()
        .ok_or("no admin token")?
        .to_owned();
    let server = Arc::new(server);

    println!(
        "SSE delivery latency (event appended to the log -> SSE client received), SQLite, loopback"
    );
    println!(
        "{:>12} {:>8} {:>10} {:>10} {:>10}",
        "subscribers", "events", "p50", "p99", "max"
    );
    for (subscribers, events) in [(1usize, 1000u64), (1000, 50)] {
        let (p50, p99, max) = latency(&server, &base, &admin, subscribers, events).await?;
        println!(
            "{subscribers:>12} {events:>8} {:>10.3?} {:>10.3?} {:>10.3?}",
            p50, p99, max
        );
    }
    let rate = enqueue_rate(&base, &admin, 2000, 16).await?;
    println!(
        "\nEnqueue: POST /projects/{{id}}/commands, 16 concurrent clients, SQLite: {rate:.0} requests/s"
    );
    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown().await;
    }

    let step = 1000;
    let [before, one, two] = idle_memory(&root.join("target/plugins"), step).await?;
    println!(
        "\nMemory per idle SSE subscriber, separate `rdev serve` (SQLite), VmRSS of the server:"
    );
    println!(
        "  {before} KiB with none, {one} KiB with {step}, {two} KiB with {}",
        2 * step
    );
    println!(
        "  per subscriber: {:.1} KiB (first {step}), {:.1} KiB (next {step})",
        (one.saturating_sub(before)) as f64 / step as f64,
        (two.saturating_sub(one)) as f64 / step as f64
    );
    Ok(())
}
