//! SSE delivery latency, printed as a table (not a timed test): time from an event appended
//! to a command's event log (what the worker does for every provider event) to an SSE
//! client of `rdev serve` receiving it, over loopback, with 1 and with 1,000 subscribers of
//! the same stream; enqueue requests per second on `POST /projects/{id}/commands`; and the
//! memory an idle SSE subscriber costs a separate `rdev serve` process (its RSS, from
//! `/proc/<pid>/status`, before and after opening idle connections to one stream).
//!
//! Latency is measured twice: with reqwest clients in the server's own process and runtime,
//! and with plain TCP clients in a separate process (this binary re-run as a child, see
//! [`CLIENT_ENV`]), the way real subscribers sit outside the server. Both sides stamp times
//! with the system clock, which is one clock for every process of the machine.
//!
//! Run: `cargo xtask plugins && cargo bench -p rdev --bench sse`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rdev::domain::{AgentEvent, CommandId, OutputStream, StreamEvent};
use rdev::server::{ServeConfig, Server};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Nanoseconds since the Unix epoch: comparable across the processes of one machine.
fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Where the measured SSE clients run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clients {
    /// reqwest clients on the server's own tokio runtime.
    InProcess,
    /// Plain TCP clients in a child process ([`run_clients`]).
    ChildProcess,
}

/// Set on the child that runs SSE clients: `address|path|token|count`.
const CLIENT_ENV: &str = "RDEV_SSE_BENCH_CLIENTS";

/// The child's side: opens `count` SSE connections with a hand-written HTTP/1.1 request,
/// prints `ready` once every response's headers arrived, then one `seq nanos` line per
/// event per connection, as it reads them (the line's time is when its bytes arrived).
async fn run_clients(spec: &str) -> Result<()> {
    let parts: Vec<&str> = spec.split('|').collect();
    let [address, path, token, count] = parts[..] else {
        return Err(format!("{CLIENT_ENV} must be address|path|token|count").into());
    };
    let count: usize = count.parse()?;
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<(i64, u128)>();
    let mut connected = Vec::with_capacity(count);
    for _ in 0..count {
        let mut socket = tokio::net::TcpStream::connect(address).await?;
        socket.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
             Accept: text/event-stream\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await?;
        connected.push(socket);
    }
    let mut readers = Vec::with_capacity(count);
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<Result<()>>();
    for mut socket in connected {
        let lines_tx = lines_tx.clone();
        let ready_tx = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buffer = Vec::with_capacity(4096);
            let mut chunk = vec![0u8; 16 * 1024];
            let mut headers_done = false;
            loop {
                let read = socket.read(&mut chunk).await?;
                if read == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                let now = now_nanos();
                buffer.extend_from_slice(&chunk[..read]);
                if !headers_done {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let ok = buffer.starts_with(b"HTTP/1.1 200");
                    buffer.drain(..end + 4);
                    headers_done = true;
                    let _ = ready_tx.send(if ok {
                        Ok(())
                    } else {
                        Err("the stream did not answer 200".into())
                    });
                }
                // Only whole lines; the rest waits for the next read.
                let Some(last) = buffer.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                for line in buffer[..last].split(|b| *b == b'\n') {
                    if let Some(seq) = line
                        .strip_prefix(b"id: ")
                        .and_then(|id| std::str::from_utf8(id).ok())
                        .and_then(|id| id.trim().parse::<i64>().ok())
                    {
                        let _ = lines_tx.send((seq, now));
                    }
                }
                buffer.drain(..=last);
            }
        }));
    }
    drop(lines_tx);
    for _ in 0..count {
        ready
            .recv()
            .await
            .ok_or("a client ended before its headers")??;
    }
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    // Batched writes: the reporting must not cost a syscall per event per connection.
    let mut batch = String::new();
    while let Some(first) = lines.recv().await {
        batch.clear();
        let mut next = Some(first);
        while let Some((seq, at)) = next {
            batch.push_str(&format!("{seq} {at}\n"));
            next = lines.try_recv().ok();
        }
        out.write_all(batch.as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

/// Arrival times of events at the clients, by sequence number. Recording one is a lock and
/// an atomic increment; the bench is woken once per event, when the last client has it,
/// so its own bookkeeping stays out of the measured path.
#[derive(Default)]
struct Arrivals {
    seen: std::sync::Mutex<Vec<(i64, u128)>>,
    count: std::sync::atomic::AtomicUsize,
    /// The bench wants a wake-up when `count` reaches this.
    wanted: std::sync::atomic::AtomicUsize,
    reached: tokio::sync::Notify,
}

impl Arrivals {
    fn record(&self, seq: i64, at: u128) {
        use std::sync::atomic::Ordering::SeqCst;
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((seq, at));
        if self.count.fetch_add(1, SeqCst) + 1 == self.wanted.load(SeqCst) {
            self.reached.notify_one();
        }
    }

    /// Waits until `total` arrivals have been recorded in all.
    async fn wait_for(&self, total: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        self.wanted.store(total, SeqCst);
        while self.count.load(SeqCst) < total {
            self.reached.notified().await;
        }
    }
}

/// Starts [`run_clients`] in a child process and records its arrivals.
async fn spawn_clients(
    base: &str,
    path: &str,
    token: &str,
    count: usize,
    arrivals: Arc<Arrivals>,
) -> Result<tokio::process::Child> {
    let address = base.trim_start_matches("http://");
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .env(CLIENT_ENV, format!("{address}|{path}|{token}|{count}"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or("the client process has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match lines.next_line().await? {
        Some(line) if line == "ready" => {}
        other => return Err(format!("the client process said {other:?}, not ready").into()),
    }
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut fields = line.split(' ');
            if let (Some(Ok(seq)), Some(Ok(at))) = (
                fields.next().map(str::parse::<i64>),
                fields.next().map(str::parse::<u128>),
            ) {
                arrivals.record(seq, at);
            }
        }
    });
    Ok(child)
}

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
    arrivals: Arc<Arrivals>,
    ready: mpsc::UnboundedSender<()>,
) -> Result<()> {
    let response = http.get(url).bearer_auth(token).send().await?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let _ = ready.send(());
    while let Some(chunk) = body.next().await {
        let now = now_nanos();
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(seq) = frame
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|id| id.trim().parse::<i64>().ok())
            {
                arrivals.record(seq, now);
            }
        }
    }
    Ok(())
}

/// Waits until every client has the stream's one earlier event, then appends `events`
/// events one at a time, each once every client had the one before, and returns p50, p99
/// and max of append start → arrival at a client.
async fn measure<F, Fut>(
    arrivals: &Arrivals,
    subscribers: usize,
    events: u64,
    mut append: F,
) -> Result<(Duration, Duration, Duration)>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<i64>>,
{
    arrivals.wait_for(subscribers).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sent_at = std::collections::HashMap::new();
    for n in 0..events {
        let sent = now_nanos();
        let seq = append(n).await?;
        sent_at.insert(seq, sent);
        arrivals.wait_for(subscribers * (n as usize + 2)).await;
    }
    let seen = std::mem::take(
        &mut *arrivals
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    let mut samples: Vec<Duration> = seen
        .iter()
        .filter_map(|(seq, at)| {
            let sent = sent_at.get(seq)?;
            Some(Duration::from_nanos(
                u64::try_from(at.saturating_sub(*sent)).unwrap_or(u64::MAX),
            ))
        })
        .collect();
    if samples.len() != subscribers * events as usize {
        return Err(format!(
            "{} arrivals, expected {}",
            samples.len(),
            subscribers * events as usize
        )
        .into());
    }
    samples.sort();
    Ok((
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        *samples.last().unwrap_or(&Duration::ZERO),
    ))
}

/// The floor of this machine: the same child-process clients and measurement against a
/// bare tokio server that answers each request with a 200 and one event, then writes every
/// frame the bench broadcasts, as is (no HTTP framework, no database, no subscription).
async fn floor_latency(subscribers: usize, events: u64) -> Result<(Duration, Duration, Duration)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (frames, _) = tokio::sync::broadcast::channel::<bytes::Bytes>(1024);
    let accept = {
        let frames = frames.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                let mut next = frames.subscribe();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n\
                                id: 1\nevent: status\ndata: {}\n\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    while let Ok(frame) = next.recv().await {
                        if socket.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    };
    let arrivals = Arc::new(Arrivals::default());
    let child = spawn_clients(
        &format!("http://{address}"),
        "/",
        "floor",
        subscribers,
        arrivals.clone(),
    )
    .await?;
    let result = measure(&arrivals, subscribers, events, |n| {
        let frames = frames.clone();
        async move {
            let seq = n as i64 + 2;
            let frame = format!(
                "id: {seq}\nevent: output\ndata: {{\"type\":\"output\",\"text\":\"{n}\"}}\n\n"
            );
            frames
                .send(bytes::Bytes::from(frame))
                .map_err(|_| "no floor connection is listening")?;
            Ok(seq)
        }
    })
    .await;
    drop(child);
    accept.abort();
    result
}

async fn latency(
    server: &Server,
    base: &str,
    admin: &str,
    subscribers: usize,
    events: u64,
    clients: Clients,
) -> Result<(Duration, Duration, Duration)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let submit = |prompt: &str| {
        http.post(format!(
            "{base}/projects/bench-{subscribers}-{}/shell",
            clients as u8
        ))
        .bearer_auth(admin)
        .json(&json!({"prompt": prompt}))
        .send()
    };
    // The blocker occupies the project's running slot, so the measured command stays
    // pending and only the events appended here reach its stream.
    let blocker: serde_json::Value = submit("sleep 600").await?.json().await?;
    let target: serde_json::Value = submit("true").await?.json().await?;
    let id = CommandId::parse(target["command_id"].as_str().unwrap_or_default())?;
    let path = target["stream_url"].as_str().unwrap_or_default();
    let url = format!("{base}{path}");
    let arrivals = Arc::new(Arrivals::default());
    let mut child = None;
    match clients {
        Clients::InProcess => {
            let (ready_tx, mut ready) = mpsc::unbounded_channel();
            for _ in 0..subscribers {
                tokio::spawn(subscribe(
                    http.clone(),
                    url.clone(),
                    admin.to_owned(),
                    arrivals.clone(),
                    ready_tx.clone(),
                ));
            }
            for _ in 0..subscribers {
                ready.recv().await;
            }
        }
        Clients::ChildProcess => {
            child = Some(spawn_clients(base, path, admin, subscribers, arrivals.clone()).await?);
        }
    }
    let log = server.state().stores.events.clone();
    let result = measure(&arrivals, subscribers, events, |n| {
        let (log, id) = (log.clone(), id.clone());
        async move {
            let event = StreamEvent::Agent(AgentEvent::Output {
                stream: OutputStream::Stdout,
                text: n.to_string(),
            });
            Ok(log.append(&id, &event).await?.seq)
        }
    })
    .await;
    drop(child);
    for command in [&target, &blocker] {
        let id = command["command_id"].as_str().unwrap_or_default();
        http.post(format!("{base}/commands/{id}/cancel"))
            .bearer_auth(admin)
            .send()
            .await?;
    }
    result
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

/// The enqueue measurement against an in-process `rdev serve` on a fresh PostgreSQL
/// database on `RDEV_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`), dropped
/// afterwards; `None` when no server is reachable.
async fn postgres_enqueue_rate(
    plugins: &std::path::Path,
    total: usize,
    concurrency: usize,
) -> Result<Option<f64>> {
    use sqlx::Connection;
    let server_url = std::env::var("RDEV_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let Ok(mut admin_db) = sqlx::PgConnection::connect(&format!("{server_url}/postgres")).await
    else {
        return Ok(None);
    };
    let name = format!("rdev_bench_enqueue_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin_db)
        .await?;
    let measured = async {
        let data = tempfile::tempdir()?;
        let (server, base, admin) = start_server(data.path(), plugins, |config| {
            config.database_url = Some(format!("{server_url}/{name}"));
        })
        .await?;
        let rate = enqueue_rate(&base, &admin, total, concurrency).await;
        server.shutdown().await;
        rate
    }
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin_db)
    .await?;
    measured.map(Some)
}

/// An in-process `rdev serve` on an ephemeral port (SQLite in `data` unless `adjust` sets a
/// database): the server, its base URL and the generated admin token.
async fn start_server(
    data: &std::path::Path,
    plugins: &std::path::Path,
    adjust: impl FnOnce(&mut ServeConfig),
) -> Result<(Server, String, String)> {
    let mut config = ServeConfig::new();
    config.listen = "127.0.0.1:0".into();
    config.data_dir = data.to_owned();
    config.plugins_dir = Some(plugins.to_owned());
    config.worker.drain_deadline = Duration::from_secs(2);
    // Every subscriber here is one loopback peer: only the total cap applies.
    config.connections.max_connections_per_peer = config.connections.max_connections;
    adjust(&mut config);
    let server = Server::start(config).await?;
    let base = format!("http://{}", server.local_addr());
    let admin = server
        .generated_admin_token()
        .ok_or("no admin token")?
        .to_owned();
    Ok((server, base, admin))
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
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        return run_clients(&spec).await;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = tempfile::tempdir()?;
    let (server, base, admin) = start_server(data.path(), &root.join("target/plugins"), |config| {
        config.queue.heartbeat = Duration::from_millis(200);
    })
    .await?;
    let server = Arc::new(server);

    println!(
        "SSE delivery latency (event appended to the log -> SSE client received), SQLite, loopback"
    );
    println!(
        "{:>12} {:>16} {:>8} {:>10} {:>10} {:>10}",
        "subscribers", "clients", "events", "p50", "p99", "max"
    );
    for (subscribers, events) in [(1usize, 1000u64), (1000, 50)] {
        let (p50, p99, max) = floor_latency(subscribers, events).await?;
        println!(
            "{subscribers:>12} {:>16} {events:>8} {:>10.3?} {:>10.3?} {:>10.3?}",
            "floor (no rdev)", p50, p99, max
        );
    }
    for clients in [Clients::InProcess, Clients::ChildProcess] {
        for (subscribers, events) in [(1usize, 1000u64), (1000, 50)] {
            let (p50, p99, max) =
                latency(&server, &base, &admin, subscribers, events, clients).await?;
            let label = match clients {
                Clients::InProcess => "in-process",
                Clients::ChildProcess => "child process",
            };
            println!(
                "{subscribers:>12} {label:>16} {events:>8} {:>10.3?} {:>10.3?} {:>10.3?}",
                p50, p99, max
            );
        }
    }
    let rate = enqueue_rate(&base, &admin, 2000, 16).await?;
    println!(
        "\nEnqueue: POST /projects/{{id}}/commands, 16 concurrent clients, SQLite: {rate:.0} requests/s"
    );
    match postgres_enqueue_rate(&root.join("target/plugins"), 2000, 16).await? {
        Some(rate) => println!(
            "Enqueue: POST /projects/{{id}}/commands, 16 concurrent clients, PostgreSQL: {rate:.0} requests/s"
        ),
        None => println!("Enqueue on PostgreSQL skipped: no server at RDEV_TEST_POSTGRES"),
    }
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
