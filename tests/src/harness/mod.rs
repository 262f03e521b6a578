//! Preparing the real parts tests run against.

pub mod bin;
pub mod claude;
pub mod examples;
pub mod kubernetes;
pub mod npm;
pub mod plugins;
pub mod postgres;
pub mod runtime;

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
