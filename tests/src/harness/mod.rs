//! Preparing the real parts tests run against.

pub mod bench;
pub mod bin;
pub mod claude;
pub mod examples;
pub mod kubernetes;
pub mod npm;
pub mod oci_registry;
pub mod plugins;
pub mod postgres;
pub mod pty;
pub mod queue;
pub mod registry_token;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod webdriver;

/// True when running under CI, where a missing prerequisite must fail the run instead of
/// skipping a test.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Ends a test whose prerequisite is missing: a failure in CI, a printed notice elsewhere.
/// Returns normally only outside CI; the caller then returns from the test.
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("prerequisite missing in CI: {reason}");
    }
    eprintln!("SKIPPED (prerequisite missing, and CI is not set): {reason}");
}
pub mod opencode;

/// The path an install step produced, or `None` after [`skip_or_fail`] when it could not
/// install; the caller then returns from the test.
pub fn installed(install: Result<std::path::PathBuf, String>) -> Option<std::path::PathBuf> {
    install.inspect_err(|reason| skip_or_fail(reason)).ok()
}

/// [`installed`], with the program's directory put first on PATH ([`put_on_path`]).
pub fn on_path(install: Result<std::path::PathBuf, String>) -> Option<std::path::PathBuf> {
    let bin = installed(install)?;
    put_on_path(&bin);
    Some(bin)
}

/// A reqwest client for talking to local test servers. The workspace builds reqwest without
/// a rustls crypto provider (see DESIGN §10), so the ring provider is installed first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A reqwest client for the dashboard's pages, as a browser's first request sees them: it
/// shows redirects instead of following them and gives up after `timeout`.
pub fn page_client(timeout: std::time::Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .expect("client")
}

/// Puts the directory of an installed agent CLI first on this process's PATH, so the local
/// executor (which hands its children the host's PATH) finds it.
///
/// Call before any thread of the test reads the environment; nextest runs each test in a
/// process of its own.
pub fn put_on_path(bin: &std::path::Path) {
    let Some(dir) = bin.parent() else { return };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == dir) {
        return;
    }
    let joined =
        std::env::join_paths(std::iter::once(dir.to_owned()).chain(std::env::split_paths(&path)))
            .expect("the CLI's directory can be put on PATH");
    // SAFETY: see above; no other thread reads the environment yet.
    unsafe { std::env::set_var("PATH", joined) };
}
pub mod webhook_receiver;

/// The two databases rdev runs on; a test written once over [`Database`] runs on both
/// through [`on_both_databases!`](crate::on_both_databases).
#[derive(Clone, Copy, Debug)]
pub enum Database {
    /// An embedded SQLite file, as `rdev serve` uses by default.
    Sqlite,
    /// The PostgreSQL server named by `RDEV_TEST_POSTGRES`.
    Postgres,
}

/// Turns `async fn name(db: Database)` tests into one `#[tokio::test]` per database, in modules
/// `sqlite` and `postgres`, so a failure names the database it happened on.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Database::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Database::Postgres).await;
                }
            )*
        }
    };
}
