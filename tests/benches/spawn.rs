//! Spawn overhead of the confined local executor: `true` spawned through `LocalExecutor`
//! confined (forked by the project's long-lived sandbox server, in a cgroup of its own), with
//! a bubblewrap per spawn (the fallback without cgroups: namespaces, the helper's Landlock and
//! seccomp, each time), and unconfined, round-robin spawn by spawn so machine load hits all
//! alike. Each sample runs from `spawn` until the process exited and its output was read.
//! Prints p50/p99 of each, the p50 of the paired differences (each confined spawn minus the
//! unconfined one next to it) and the ratio of the p50s.
//!
//! Run (as root, with bubblewrap installed): `cargo xtask plugins && flock
//! /tmp/rdev-bench.lock cargo bench -p rdev-tests --bench spawn` (spawns per mode from
//! `RDEV_BENCH_ITERATIONS`, default 200, after 10 unmeasured warm-ups each).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdev::adapters::local::LocalExecutor;
use rdev::domain::ProjectId;
use rdev::ports::{Executor, SpawnSpec};
use rdev_tests::harness::bench::{env_count, ms};
use rdev_tests::harness::runtime::MapSecrets;
use rdev_tests::harness::sandbox;
use tokio::io::AsyncReadExt;

async fn spawn_true(executor: &LocalExecutor, project: &ProjectId) -> Duration {
    let started = Instant::now();
    let spec = SpawnSpec::new("true", &[]);
    let mut process = executor.spawn(project, spec).await.expect("spawn true");
    let mut sink = Vec::new();
    let _ = process.stdout.read_to_end(&mut sink).await;
    let _ = process.stderr.read_to_end(&mut sink).await;
    let status = process.control.wait().await.expect("wait");
    assert!(status.success(), "true failed: {status:?}");
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, samples: &mut [Duration]) -> Duration {
    samples.sort();
    let p50 = percentile(samples, 0.5);
    println!(
        "{name:>11} true: p50 {:7.2} ms  p99 {:7.2} ms  min {:7.2} ms  ({} spawns)",
        ms(p50),
        ms(percentile(samples, 0.99)),
        ms(samples[0]),
        samples.len()
    );
    p50
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations = env_count("RDEV_BENCH_ITERATIONS", 200);
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("canonical tempdir");
    let secrets = Arc::new(MapSecrets(HashMap::new()));
    let Some(confined) = sandbox::executor(&root.join("confined"), secrets.clone(), &[]) else {
        eprintln!("this host cannot confine commands; nothing to measure");
        return;
    };
    let mut config = sandbox::config(&root.join("per-spawn"), &[]);
    config.per_spawn = true;
    let Some(per_spawn) = sandbox::probe(config, &root.join("per-spawn")) else {
        return;
    };
    let per_spawn = LocalExecutor::per_project(root.join("per-spawn/projects"), secrets.clone())
        .confined(per_spawn);
    let unconfined = LocalExecutor::per_project(root.join("unconfined/projects"), secrets);
    let project = ProjectId::parse("bench").expect("id");
    let modes = [
        ("unconfined", &unconfined),
        ("confined", &confined),
        ("per-spawn", &per_spawn),
    ];
    for _ in 0..10 {
        for (_, executor) in modes {
            spawn_true(executor, &project).await;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(iterations); modes.len()];
    for _ in 0..iterations {
        for (i, (_, executor)) in modes.iter().enumerate() {
            samples[i].push(spawn_true(executor, &project).await);
        }
    }
    let mut added: Vec<Vec<Duration>> = samples[1..]
        .iter()
        .map(|mode| {
            mode.iter()
                .zip(&samples[0])
                .map(|(c, u)| c.saturating_sub(*u))
                .collect()
        })
        .collect();
    let p50s: Vec<Duration> = modes
        .iter()
        .zip(&mut samples)
        .map(|((name, _), samples)| report(name, samples))
        .collect();
    for (i, added) in added.iter_mut().enumerate() {
        added.sort();
        println!(
            "{:>11} added: p50 {:7.2} ms  p99 {:7.2} ms per spawn (paired); ratio of p50s {:.1}x",
            modes[i + 1].0,
            ms(percentile(added, 0.5)),
            ms(percentile(added, 0.99)),
            p50s[i + 1].as_secs_f64() / p50s[0].as_secs_f64()
        );
    }
}
