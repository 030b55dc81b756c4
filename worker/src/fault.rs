//! Crash points for the fault-tolerance suite (`scripts/faults`). Compiled in only with the
//! `crash-points` cargo feature (which the suite's build enables), and even then inert unless the
//! `SAASLLM_FAULT_CRASH` environment variable is set, e.g. `after_upstream:0.2` or
//! `after_upstream:0.1,after_commit:0.1` (a point without `:p` always fires). Each time a listed
//! point is reached the process aborts with that probability: no unwinding and no cleanup, like a
//! `kill -9` at exactly that step.

#[cfg(feature = "crash-points")]
use std::sync::OnceLock;

/// The variable that turns crash points on.
#[cfg(feature = "crash-points")]
pub const ENV: &str = "SAASLLM_FAULT_CRASH";
/// Right after a batch of calls was claimed, before any of them starts.
pub const AFTER_CLAIM: &str = "after_claim";
/// After the upstream answered, before the transaction that writes the result.
pub const AFTER_UPSTREAM: &str = "after_upstream";
/// Right after a group of results was committed, before their jobs are settled.
pub const AFTER_COMMIT: &str = "after_commit";

/// Aborts the process with the configured probability if `point` is listed in the variable.
#[cfg(feature = "crash-points")]
pub fn crash_point(point: &str) {
    static POINTS: OnceLock<Vec<(String, f64)>> = OnceLock::new();
    let points = POINTS.get_or_init(|| {
        std::env::var(ENV)
            .map(|spec| parse(&spec))
            .unwrap_or_default()
    });
    if let Some((_, probability)) = points.iter().find(|(name, _)| name == point)
        && rand::random::<f64>() < *probability
    {
        eprintln!("{ENV}: aborting at {point}");
        std::process::abort();
    }
}

/// Without the `crash-points` feature a crash point is nothing at all.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn crash_point(_point: &str) {}

/// `name[:probability]` items, comma-separated; malformed probabilities disable the item.
#[cfg_attr(not(feature = "crash-points"), allow(dead_code))] // unit-tested either way
fn parse(spec: &str) -> Vec<(String, f64)> {
    spec.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .filter_map(|item| match item.split_once(':') {
            Some((name, p)) => Some((name.trim().to_owned(), p.trim().parse().ok()?)),
            None => Some((item.to_owned(), 1.0)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_probabilities() {
        assert_eq!(
            parse("after_upstream:0.2, after_commit ,bad:x,"),
            vec![
                ("after_upstream".to_owned(), 0.2),
                ("after_commit".to_owned(), 1.0)
            ]
        );
        assert!(parse("").is_empty());
    }
}
