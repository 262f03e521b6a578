//! Queue benchmark: enqueue→claim latency (p50/p99) and claim+finish throughput of no-op
//! commands through the queue alone, on SQLite and PostgreSQL, with 1 and 2 workers (on
//! Postgres each worker is its own store, i.e. its own pool and LISTEN connection, as a
//! replica would be). Run: `cargo bench -p rdev-tests --bench queue`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdev::adapters::store::{StoreOptions, connect};
use rdev::domain::{
    AgentRequest, CommandId, CommandStatus, MasterKey, NewCommand, NewProject, Outcome, ProjectId,
    ProviderName, QueueConfig,
};
use rdev::ports::Stores;
use rdev_tests::harness::postgres::TestDatabase;

const LATENCY_SAMPLES: usize = 500;
const THROUGHPUT_COMMANDS: usize = 3000;
const PROJECTS: usize = 50;

fn options() -> StoreOptions {
    StoreOptions {
        queue: QueueConfig {
            max_running_per_project: None,
            ..QueueConfig::default()
        },
        master_key: MasterKey::from_bytes([1; 32]),
    }
}

fn command(n: usize) -> NewCommand {
    NewCommand {
        project_id: ProjectId::parse(format!("p{}", n % PROJECTS)).unwrap(),
        provider: ProviderName::parse("noop").unwrap(),
        request: AgentRequest::new("noop"),
        idempotency_key: None,
        submitted_by: "bench".into(),
    }
}

fn done() -> Outcome {
    Outcome {
        status: CommandStatus::Completed,
        result: None,
        error: None,
    }
}

async fn workers(url: &str, main: &Stores, count: usize, sqlite: bool) -> Vec<Stores> {
    let mut all = Vec::new();
    for _ in 0..count {
        all.push(if sqlite {
            main.clone()
        } else {
            connect(url, options()).await.unwrap()
        });
    }
    all
}

async fn throughput(url: &str, main: &Stores, count: usize, sqlite: bool) -> f64 {
    for n in 0..THROUGHPUT_COMMANDS {
        main.queue.enqueue(command(n)).await.unwrap();
    }
    let replicas = workers(url, main, count, sqlite).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, stores) in replicas.into_iter().enumerate() {
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

async fn latency(url: &str, main: &Stores, count: usize, sqlite: bool) -> (f64, f64) {
    let enqueued: Arc<Mutex<HashMap<CommandId, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let replicas = workers(url, main, count, sqlite).await;
    let mut tasks = Vec::new();
    for (i, stores) in replicas.into_iter().enumerate() {
        let enqueued = enqueued.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("l{i}");
            let mut work = stores.queue.work_signal();
            while latencies.lock().unwrap().len() < LATENCY_SAMPLES {
                work.borrow_and_update();
                if let Some(claim) = stores.queue.claim(&owner).await.unwrap() {
                    let now = Instant::now();
                    let at = loop {
                        if let Some(at) = enqueued.lock().unwrap().get(&claim.command.id) {
                            break *at;
                        }
                        tokio::task::yield_now().await;
                    };
                    latencies.lock().unwrap().push(now - at);
                    stores.queue.finish(&claim.lease, done()).await.unwrap();
                    continue;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), work.changed()).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..LATENCY_SAMPLES {
        let at = Instant::now();
        let id = main.queue.enqueue(command(n)).await.unwrap().command.id;
        enqueued.lock().unwrap().insert(id, at);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(all[all.len() / 2]), ms(all[all.len() * 99 / 100]))
}

async fn fresh(sqlite: bool) -> Option<(String, Stores, Box<dyn std::any::Any>)> {
    if sqlite {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        let stores = connect(&url, options()).await.unwrap();
        Some((url, stores, Box::new(dir)))
    } else {
        let db = TestDatabase::create().await?;
        let url = db.url.clone();
        let stores = connect(&url, options()).await.unwrap();
        Some((url, stores, Box::new(db)))
    }
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("| adapter | workers | enqueue→claim p50 (ms) | p99 (ms) | claim+finish /s |");
    println!("|---|---|---|---|---|");
    for sqlite in [true, false] {
        for count in [1, 2] {
            let Some((url, stores, guard)) = fresh(sqlite).await else {
                return;
            };
            projects(&stores).await;
            let (p50, p99) = latency(&url, &stores, count, sqlite).await;
            let per_sec = throughput(&url, &stores, count, sqlite).await;
            println!(
                "| {} | {count} | {p50:.2} | {p99:.2} | {per_sec:.0} |",
                if sqlite { "sqlite" } else { "postgres" }
            );
            drop(stores);
            drop(guard);
        }
    }
}
