//! Per-model resilience: a transient failure (429, 5xx, refused connection) is retried on the same
//! model with exponential backoff and full jitter, honouring the upstream's `Retry-After`, before
//! the chain falls back to the next model; and a model that keeps failing is put in a short
//! cooldown during which calls skip it, so a dead model does not cost every call its timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use saasllm_shared::domain::backoff::{Backoff, Jitter};

/// How a transient failure is retried on the same model.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: fall back at once).
    pub max_retries: u32,
    /// Ceiling of the first retry's delay; doubled for each further retry.
    pub base_delay: Duration,
    /// Longest delay; a `Retry-After` beyond it makes the chain fall back instead of waiting.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first), or `None` when the model should
    /// not be retried. Without `Retry-After` the delay is uniformly random in
    /// `[0, min(base x 2^(retry-1), max)]` ("full jitter"), so workers that failed together do not
    /// retry together.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        if let Some(wait) = retry_after {
            return (wait <= self.max_delay).then_some(wait);
        }
        let backoff = Backoff {
            base: self.base_delay,
            max: self.max_delay,
            jitter: Jitter::Full,
        };
        Some(backoff.delay(retry))
    }
}

/// The process's view of which models are failing. Kept per worker process: each process learns
/// within `threshold` failures, without a shared store on the hot path.
#[derive(Debug)]
pub struct Cooldowns {
    threshold: u32,
    period: Duration,
    models: Mutex<HashMap<String, ModelHealth>>,
}

#[derive(Debug, Default)]
struct ModelHealth {
    consecutive_failures: u32,
    cooling_until: Option<Instant>,
}

impl Cooldowns {
    /// A model cools down for `period` after `threshold` consecutive transient failures
    /// (`threshold` 0 disables cooldowns).
    pub fn new(threshold: u32, period: Duration) -> Self {
        Self {
            threshold,
            period,
            models: Mutex::default(),
        }
    }

    /// Whether calls should skip the model for now.
    pub fn is_cooling(&self, model: &str) -> bool {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models
            .get(model)
            .and_then(|health| health.cooling_until)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Counts a transient failure; the `threshold`-th in a row starts a cooldown. Returns true
    /// when this failure started one.
    pub fn failed(&self, model: &str) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let health = models.entry(model.to_owned()).or_default();
        health.consecutive_failures += 1;
        if health.consecutive_failures >= self.threshold {
            health.consecutive_failures = 0;
            health.cooling_until = Some(Instant::now() + self.period);
            return true;
        }
        false
    }

    /// A success ends the model's failure streak and any cooldown.
    pub fn succeeded(&self, model: &str) {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models.remove(model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };

    #[test]
    fn backoff_grows_exponentially_with_full_jitter_and_a_cap() {
        for _ in 0..200 {
            assert!(POLICY.delay(1, None).expect("retry") <= Duration::from_millis(100));
            assert!(POLICY.delay(2, None).expect("retry") <= Duration::from_millis(200));
            assert!(POLICY.delay(3, None).expect("retry") <= Duration::from_millis(400));
        }
        assert_eq!(POLICY.delay(4, None), None, "only max_retries retries");
        let capped = RetryPolicy {
            max_retries: 30,
            ..POLICY
        };
        assert!(capped.delay(30, None).expect("retry") <= Duration::from_secs(1));
        // Jitter: not every delay is the same.
        let delays: std::collections::HashSet<Duration> =
            (0..50).filter_map(|_| POLICY.delay(2, None)).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn retry_after_is_honoured_unless_longer_than_the_cap() {
        assert_eq!(
            POLICY.delay(1, Some(Duration::from_millis(700))),
            Some(Duration::from_millis(700))
        );
        assert_eq!(POLICY.delay(1, Some(Duration::from_secs(30))), None);
    }

    #[test]
    fn a_model_cools_down_after_consecutive_failures_and_recovers_on_success() {
        let cooldowns = Cooldowns::new(3, Duration::from_secs(60));
        assert!(!cooldowns.failed("m"));
        assert!(!cooldowns.failed("m"));
        cooldowns.succeeded("m");
        assert!(!cooldowns.failed("m"), "a success reset the streak");
        assert!(!cooldowns.failed("m"));
        assert!(cooldowns.failed("m"), "third failure in a row");
        assert!(cooldowns.is_cooling("m"));
        assert!(!cooldowns.is_cooling("other"));
        cooldowns.succeeded("m");
        assert!(!cooldowns.is_cooling("m"));

        let short = Cooldowns::new(1, Duration::from_millis(1));
        assert!(short.failed("m"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.is_cooling("m"), "the cooldown ends by itself");

        let disabled = Cooldowns::new(0, Duration::from_secs(60));
        assert!(!disabled.failed("m"));
        assert!(!disabled.is_cooling("m"));
    }
}
