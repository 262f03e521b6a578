//! A throwaway PostgreSQL database per test on the local server (127.0.0.1:5432, trust
//! auth), dropped when the test ends.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Overrides the server URL (without a database name), e.g. `postgres://me@127.0.0.1:5432`.
pub const SERVER_ENV: &str = "RDEV_TEST_POSTGRES";

const SERVERS: [&str; 2] = [
    "postgres://postgres@127.0.0.1:5432",
    "postgres://root@127.0.0.1:5432",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A uniquely named database; dropped (with `FORCE`, closing leftover connections) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the new database.
    pub url: String,
    server: String,
    name: String,
}

async fn reachable_server() -> Option<String> {
    let candidates: Vec<String> = match std::env::var(SERVER_ENV) {
        Ok(server) => vec![server],
        Err(_) => SERVERS.iter().map(|s| (*s).to_owned()).collect(),
    };
    for server in candidates {
        if PgConnection::connect(&format!("{server}/postgres"))
            .await
            .is_ok()
        {
            return Some(server);
        }
    }
    None
}

impl TestDatabase {
    /// Creates the database, or reports the missing server through `skip_or_fail` and
    /// returns `None`.
    pub async fn create() -> Option<Self> {
        let Some(server) = reachable_server().await else {
            super::skip_or_fail("no PostgreSQL server reachable at 127.0.0.1:5432");
            return None;
        };
        let name = format!(
            "rdev_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("postgres admin connection");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        Some(Self {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = format!("{}/postgres", self.server);
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime; a separate thread owns a small runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
