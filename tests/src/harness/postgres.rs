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

/// Where the PostgreSQL server binaries (`initdb`, `pg_ctl`) live; `RDEV_TEST_PG_BIN`
/// overrides the Debian layout.
pub const PG_BIN_ENV: &str = "RDEV_TEST_PG_BIN";

/// A PostgreSQL cluster of the test's own, in a temporary directory on a free port, so a
/// fault test may restart or stop it without touching the shared server. Stopped on drop.
/// When the test runs as root the server runs as the `postgres` user (it refuses root).
#[derive(Debug)]
pub struct PrivateCluster {
    /// URL of the cluster's `rdev` database.
    pub url: String,
    pg_ctl: std::path::PathBuf,
    data: std::path::PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

fn pg_bin() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        return Some(dir.into());
    }
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").is_file() && bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PrivateCluster {
    /// Creates and starts the cluster with an empty `rdev` database, or reports what is
    /// missing through `skip_or_fail` and returns `None`.
    pub async fn start() -> Option<Self> {
        match Self::try_start().await {
            Ok(cluster) => Some(cluster),
            Err(reason) => {
                super::skip_or_fail(&format!("cannot start a private PostgreSQL: {reason}"));
                None
            }
        }
    }

    async fn try_start() -> Result<Self, String> {
        let bin = pg_bin().ok_or("no PostgreSQL server binaries (set RDEV_TEST_PG_BIN)")?;
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let data = dir.path().join("data");
        if as_postgres {
            let chowned = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !chowned.success() {
                return Err(
                    "running as root and cannot hand the directory to user postgres".into(),
                );
            }
        }
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let mut cluster = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/rdev"),
            pg_ctl: bin.join("pg_ctl"),
            data: data.clone(),
            as_postgres,
            _dir: dir,
        };
        cluster.run(
            &bin.join("initdb"),
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            &[data.as_os_str()],
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster._dir.path().display()
        );
        let log = cluster._dir.path().join("server.log");
        let pg_ctl = cluster.pg_ctl.clone();
        cluster.run(
            &pg_ctl,
            &["-w", "-o", &options, "-D"],
            &[
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "start".as_ref(),
            ],
        )?;
        let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let mut conn = PgConnection::connect(&admin)
            .await
            .map_err(|e| format!("connecting to the private cluster: {e}"))?;
        sqlx::query("CREATE DATABASE rdev")
            .execute(&mut conn)
            .await
            .map_err(|e| format!("creating the database: {e}"))?;
        cluster.url = format!("postgres://postgres@127.0.0.1:{port}/rdev");
        Ok(cluster)
    }

    fn run(
        &self,
        program: &std::path::Path,
        args: &[&str],
        paths: &[&std::ffi::OsStr],
    ) -> Result<(), String> {
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        // The server outlives pg_ctl: it must not hold our pipes open.
        let output = command
            .args(args)
            .args(paths)
            .current_dir(self._dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// `pg_ctl restart -m fast`: every connection is closed, the server comes back on the
    /// same port with the same options.
    pub fn restart(&self) -> Result<(), String> {
        let log = self._dir.path().join("server.log");
        self.run(
            &self.pg_ctl,
            &["-w", "-m", "fast", "-D"],
            &[
                self.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "restart".as_ref(),
            ],
        )
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let stopped = self.run(
            &self.pg_ctl,
            &["-w", "-m", "immediate", "-D"],
            &[self.data.as_os_str(), "stop".as_ref()],
        );
        if let Err(reason) = stopped {
            eprintln!("could not stop the private cluster: {reason}");
        }
    }
}
