//! Queue benchmark: enqueue→claim latency (p50/p99) and claim+finish throughput of no-op
//! commands through the queue alone, on SQLite (workers in this process, as the embedded
//! mode runs them) and on PostgreSQL with 1 and 2 worker *processes* (this binary re-run as
//! a child), side by side with graphile-worker on the same server doing the same no-op work.
//! Run: `cargo bench -p rdev-tests --bench queue`.
//!
//! graphile-worker needs Node ≥ 22.18; the bench installs npm `node@22` (a package shipping
//! the binary) and `graphile-worker` under `~/.cache/rdev-npm` and skips that system (saying
//! why) when npm cannot. Every system gets its own database on the test server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rdev::adapters::store::{StoreOptions, connect};
use rdev::domain::{MasterKey, NewCommand, NewProject, ProjectId, ProviderName, QueueConfig};
use rdev::ports::Stores;
use rdev_tests::harness::npm;
use rdev_tests::harness::postgres::TestDatabase;
use rdev_tests::harness::queue::{completed as done, new_command};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const LATENCY_SAMPLES: usize = 500;
/// Gap between two enqueues of the latency run: jobs arrive spaced out, one at a time.
const LATENCY_SPACING: Duration = Duration::from_millis(3);
const THROUGHPUT_COMMANDS: usize = 5000;
const PROJECTS: usize = 50;
/// Jobs each worker process runs at once (the default of `rdev worker --concurrency`);
/// `RDEV_BENCH_CONCURRENCY` overrides it for both systems.
const DEFAULT_CONCURRENCY: usize = 4;
/// How often the parent checks whether the queue has drained.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// Throughput runs per row; the median is reported (single runs on a shared box vary).
const THROUGHPUT_RUNS: usize = 3;

/// Set in a child process: the database URL it works on.
const CHILD_ENV: &str = "RDEV_QUEUE_BENCH_CHILD";
const GRAPHILE_WORKER_VERSION: &str = "0.17.3";

fn options() -> StoreOptions {
    StoreOptions {
        queue: QueueConfig {
            max_running_per_project: None,
            ..QueueConfig::default()
        },
        master_key: MasterKey::from_bytes([1; 32]),
    }
}

fn concurrency() -> usize {
    std::env::var("RDEV_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CONCURRENCY)
}

fn command(n: usize) -> NewCommand {
    let project = ProjectId::parse(format!("p{}", n % PROJECTS)).unwrap();
    NewCommand {
        provider: ProviderName::parse("noop").unwrap(),
        submitted_by: "bench".into(),
        ..new_command(&project, "noop")
    }
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn percentiles(mut all: Vec<f64>) -> (f64, f64) {
    all.sort_by(f64::total_cmp);
    (all[all.len() / 2], all[all.len() * 99 / 100])
}

fn median(mut all: Vec<f64>) -> f64 {
    all.sort_by(f64::total_cmp);
    all[all.len() / 2]
}

/// One measured row.
struct Row {
    system: &'static str,
    workers: String,
    p50: f64,
    p99: f64,
    per_sec: f64,
}

// ---------------------------------------------------------------- SQLite, in process

async fn sqlite_throughput(main: &Stores, count: usize) -> f64 {
    enqueue_all(main).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let stores = main.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{i}");
            while let Some(claim) = stores.queue.claim(&owner).await.unwrap() {
                stores.queue.finish(&claim.lease, done()).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    THROUGHPUT_COMMANDS as f64 / started.elapsed().as_secs_f64()
}

async fn sqlite_latency(main: &Stores, count: usize) -> (f64, f64) {
    let (claimed, mut claims) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..count {
        let stores = main.clone();
        let claimed = claimed.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("l{i}");
            let mut work = stores.queue.work_signal();
            while !claimed.is_closed() {
                work.borrow_and_update();
                if let Some(claim) = stores.queue.claim(&owner).await.unwrap() {
                    let _ = claimed.send((claim.command.id.to_string(), epoch_ms()));
                    stores.queue.finish(&claim.lease, done()).await.unwrap();
                    continue;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), work.changed()).await;
            }
        }));
    }
    drop(claimed);
    let mut add = |n| {
        let stores = main.clone();
        async move {
            let id = stores.queue.enqueue(command(n)).await.unwrap().command.id;
            id.to_string()
        }
    };
    let result = spaced_latency(&mut add, &mut claims).await;
    drop(claims);
    for task in tasks {
        task.await.unwrap();
    }
    result
}

// ---------------------------------------------------------------- shared drivers

/// Enqueues `LATENCY_SAMPLES` jobs `LATENCY_SPACING` apart (each timed from just before its
/// enqueue) and matches them with the claims the workers report.
async fn spaced_latency<F, Fut>(
    add: &mut F,
    claims: &mut mpsc::UnboundedReceiver<(String, f64)>,
) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = String>,
{
    let mut enqueued = HashMap::new();
    let mut seen = HashMap::new();
    for n in 0..LATENCY_SAMPLES {
        let at = epoch_ms();
        enqueued.insert(add(n).await, at);
        while let Ok((id, at)) = claims.try_recv() {
            seen.insert(id, at);
        }
        tokio::time::sleep(LATENCY_SPACING).await;
    }
    while seen.len() < LATENCY_SAMPLES {
        let (id, at) = tokio::time::timeout(Duration::from_secs(60), claims.recv())
            .await
            .expect("every job is claimed")
            .expect("workers report");
        seen.insert(id, at);
    }
    percentiles(
        enqueued
            .iter()
            .map(|(id, at)| seen[id] - at)
            .collect::<Vec<_>>(),
    )
}

async fn enqueue_all(stores: &Stores) {
    futures::stream::iter(0..THROUGHPUT_COMMANDS)
        .map(|n| {
            let stores = stores.clone();
            async move { stores.queue.enqueue(command(n)).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

async fn projects(stores: &Stores) {
    for n in 0..PROJECTS {
        stores
            .projects
            .ensure(NewProject {
                id: ProjectId::parse(format!("p{n}")).unwrap(),
                display_name: None,
            })
            .await
            .unwrap();
    }
}

/// Worker processes of one run: their stdin (closing it stops them) and the claims they
/// report.
struct Workers {
    children: Vec<Child>,
    claims: mpsc::UnboundedReceiver<(String, f64)>,
}

impl Workers {
    /// Starts `count` processes and waits until each printed `ready`.
    async fn start(mut make: impl FnMut() -> Command, count: usize) -> Self {
        let (claimed, claims) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        for _ in 0..count {
            let mut child = make()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn a worker process");
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let ready = tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await;
            assert!(
                matches!(&ready, Ok(Ok(Some(line))) if line == "ready"),
                "worker process did not start: {ready:?}"
            );
            let claimed = claimed.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut words = line.split_whitespace();
                    if let (Some("claimed"), Some(id), Some(at)) =
                        (words.next(), words.next(), words.next())
                    {
                        let _ = claimed.send((id.to_owned(), at.parse().unwrap()));
                    }
                }
            });
            children.push(child);
        }
        // Let every LISTEN settle before the first job.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self { children, claims }
    }

    /// Tells rdev worker processes to start claiming.
    async fn go(&mut self) {
        for child in &mut self.children {
            let stdin = child.stdin.as_mut().unwrap();
            stdin.write_all(b"go\n").await.unwrap();
            stdin.flush().await.unwrap();
        }
    }

    async fn stop(mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }
}

/// Polls `count_sql` (jobs not yet done) until it is zero; returns jobs per second from now.
async fn drain_rate(pool: &sqlx::PgPool, count_sql: &'static str) -> f64 {
    let started = Instant::now();
    loop {
        let left: i64 = sqlx::query_scalar(count_sql).fetch_one(pool).await.unwrap();
        if left == 0 {
            return THROUGHPUT_COMMANDS as f64 / started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "queue did not drain"
        );
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

// ---------------------------------------------------------------- rdev on PostgreSQL

fn rdev_worker(url: &str, report: bool) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .env(CHILD_ENV, url)
        .env("REPORT", if report { "1" } else { "0" })
        .env("RDEV_BENCH_CONCURRENCY", concurrency().to_string());
    command
}

async fn rdev_postgres(processes: usize) -> Option<Row> {
    let db = TestDatabase::create().await?;
    let main = connect(&db.url, options()).await.unwrap();
    projects(&main).await;

    let mut workers = Workers::start(|| rdev_worker(&db.url, true), processes).await;
    workers.go().await;
    let mut add = |n| {
        let stores = main.clone();
        async move {
            let id = stores.queue.enqueue(command(n)).await.unwrap().command.id;
            id.to_string()
        }
    };
    let (p50, p99) = spaced_latency(&mut add, &mut workers.claims).await;
    workers.stop().await;

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut rates = Vec::new();
    for _ in 0..THROUGHPUT_RUNS {
        enqueue_all(&main).await;
        let mut workers = Workers::start(|| rdev_worker(&db.url, false), processes).await;
        workers.go().await;
        rates.push(
            drain_rate(
                &pool,
                "SELECT count(*) FROM commands WHERE status IN ('pending', 'running')",
            )
            .await,
        );
        workers.stop().await;
    }
    pool.close().await;
    let per_sec = median(rates);
    Some(Row {
        system: "rdev (postgres)",
        workers: format!("{processes} × {}", concurrency()),
        p50,
        p99,
        per_sec,
    })
}

/// A worker process doing what `rdev worker` does around a provider, with no provider: it
/// claims in batches up to its concurrency, and as the (no-op) work returns at once its slots
/// free while each outcome is written in the background. Reports each claim when `REPORT=1`;
/// starts on `go` and stops when stdin closes.
async fn child(url: String) {
    let stores = connect(&url, options()).await.unwrap();
    let mut work = stores.queue.work_signal();
    if *work.borrow_and_update() == 0 {
        let _ = tokio::time::timeout(Duration::from_secs(20), work.changed()).await;
    }
    let report = std::env::var("REPORT").is_ok_and(|v| v == "1");
    let slots = concurrency();
    let owner = format!("bench-{}", std::process::id());
    if report {
        // `rdev worker` claims as soon as it starts, long before the latency phase's first
        // job, so the cost of a first claim (its statement parsed and planned) is on no job's
        // path there, and is kept off this bench's. Nothing is queued yet: it claims nothing.
        let warm = stores.queue.claim_batch(&owner, slots).await.unwrap();
        assert!(
            warm.is_empty(),
            "the latency phase starts with an empty queue"
        );
    }
    println!("ready");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    if stdin.next_line().await.ok().flatten().as_deref() != Some("go") {
        return;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        while let Ok(Some(_)) = stdin.next_line().await {}
        stopped.cancel();
    });
    let outcomes = tokio_util::task::TaskTracker::new();
    let mut out = std::io::stdout();
    while !stop.is_cancelled() {
        work.borrow_and_update();
        let claims = stores.queue.claim_batch(&owner, slots).await.unwrap();
        if !claims.is_empty() {
            let at = epoch_ms();
            for claim in claims {
                if report {
                    use std::io::Write;
                    writeln!(out, "claimed {} {at}", claim.command.id).unwrap();
                    out.flush().unwrap();
                }
                let stores = stores.clone();
                outcomes.spawn(async move {
                    stores.queue.finish(&claim.lease, done()).await.unwrap();
                });
            }
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            _ = work.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    outcomes.close();
    outcomes.wait().await;
}

// ---------------------------------------------------------------- graphile-worker

/// Node 22 and the npm prefix holding graphile-worker, or why they are unavailable.
fn graphile_install() -> Result<(PathBuf, PathBuf), String> {
    let node = npm::install("node", "22", "node")?;
    let bin = npm::install(
        "graphile-worker",
        GRAPHILE_WORKER_VERSION,
        "graphile-worker",
    )?;
    let prefix = bin
        .ancestors()
        .nth(3)
        .ok_or("unexpected graphile-worker path")?
        .to_owned();
    Ok((node, prefix))
}

fn graphile_worker(node: &PathBuf, prefix: &PathBuf, url: &str, report: bool) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/graphile/worker.mjs");
    let mut command = Command::new(node);
    command
        .arg(script)
        .env("GRAPHILE_WORKER_PREFIX", prefix)
        .env("DATABASE_URL", url)
        .env("CONCURRENCY", concurrency().to_string())
        .env("REPORT", if report { "1" } else { "0" });
    command
}

async fn graphile(node: &PathBuf, prefix: &PathBuf, processes: usize) -> Option<Row> {
    let db = TestDatabase::create().await?;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();

    // The first process creates graphile-worker's schema.
    let mut workers =
        Workers::start(|| graphile_worker(node, prefix, &db.url, true), processes).await;
    let mut add = |n: usize| {
        let pool = pool.clone();
        async move {
            let id = n.to_string();
            sqlx::query(
                "SELECT graphile_worker.add_job('noop', json_build_object('id', $1::text))",
            )
            .bind(&id)
            .execute(&pool)
            .await
            .unwrap();
            id
        }
    };
    let (p50, p99) = spaced_latency(&mut add, &mut workers.claims).await;
    workers.stop().await;

    let mut rates = Vec::new();
    for _ in 0..THROUGHPUT_RUNS {
        // Pre-added but not yet due, so that no process starts before all are up; then made
        // due at once with the NOTIFY graphile-worker's own add_jobs sends.
        sqlx::query(
            "SELECT graphile_worker.add_job('noop', json_build_object('id', g::text), \
             run_at => now() + interval '1 hour') FROM generate_series(1, $1) g",
        )
        .bind(i64::try_from(THROUGHPUT_COMMANDS).unwrap())
        .execute(&pool)
        .await
        .unwrap();
        let workers =
            Workers::start(|| graphile_worker(node, prefix, &db.url, false), processes).await;
        sqlx::query("UPDATE graphile_worker._private_jobs SET run_at = now()")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("SELECT pg_notify('jobs:insert', json_build_object('count', $1::int)::text)")
            .bind(i32::try_from(THROUGHPUT_COMMANDS).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        rates.push(drain_rate(&pool, "SELECT count(*) FROM graphile_worker._private_jobs").await);
        workers.stop().await;
    }
    let per_sec = median(rates);
    pool.close().await;
    Some(Row {
        system: "graphile-worker",
        workers: format!("{processes} × {}", concurrency()),
        p50,
        p99,
        per_sec,
    })
}

// ---------------------------------------------------------------- main

async fn sqlite_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for count in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        let stores = connect(&url, options()).await.unwrap();
        projects(&stores).await;
        let (p50, p99) = sqlite_latency(&stores, count).await;
        let per_sec = sqlite_throughput(&stores, count).await;
        rows.push(Row {
            system: "rdev (sqlite)",
            workers: format!("{count} in-process × 1"),
            p50,
            p99,
            per_sec,
        });
    }
    rows
}

fn print(rows: &[Row]) {
    println!(
        "| system | worker processes × concurrency | add→start p50 (ms) | p99 (ms) | jobs/s |"
    );
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.0} |",
            r.system, r.workers, r.p50, r.p99, r.per_sec
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        child(url).await;
        return;
    }
    let mut rows = sqlite_rows().await;
    let graphile_parts = graphile_install();
    if let Err(reason) = &graphile_parts {
        eprintln!("graphile-worker comparison skipped: {reason}");
    }
    let mut pairs = Vec::new();
    for processes in [1, 2] {
        let Some(ours) = rdev_postgres(processes).await else {
            print(&rows);
            return;
        };
        let theirs = match &graphile_parts {
            Ok((node, prefix)) => graphile(node, prefix, processes).await,
            Err(_) => None,
        };
        pairs.push((
            processes,
            ours.p50,
            ours.per_sec,
            theirs.as_ref().map(|t| (t.p50, t.per_sec)),
        ));
        rows.push(ours);
        rows.extend(theirs);
    }
    print(&rows);
    println!();
    println!("| worker processes | rdev / graphile-worker jobs/s | graphile-worker / rdev p50 |");
    println!("|---|---|---|");
    for (processes, p50, per_sec, theirs) in pairs {
        match theirs {
            Some((their_p50, their_rate)) => println!(
                "| {processes} | {:.2}× | {:.2}× |",
                per_sec / their_rate,
                their_p50 / p50
            ),
            None => println!("| {processes} | — | — |"),
        }
    }
}
