//! What the benchmarks share: sizes from the environment, milliseconds and medians.

use std::time::Duration;

/// The whole number in environment variable `name`, or `default` when it is unset, not a
/// number or zero: how a benchmark run is sized.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// `d` in milliseconds, as the benchmark tables print it.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// [`median`] of durations.
pub fn median_duration(values: Vec<Duration>) -> Duration {
    let seconds = values.iter().map(Duration::as_secs_f64).collect();
    Duration::from_secs_f64(median(seconds))
}
