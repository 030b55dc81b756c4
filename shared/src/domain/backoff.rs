//! Exponential backoff, the one rule behind every retry of the product: the upstream retried on the
//! same model, webhook deliveries, and the worker's queue loop after a Redis or PostgreSQL error.
//! They differ only in how the delay is randomized, which is part of the policy.

use std::time::Duration;

/// The delay before attempt `n` (1 for the first retry) is `base x 2^(n-1)`, at most `max`,
/// randomized by `jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub jitter: Jitter,
}

/// How a delay is spread so that clients that failed together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly the exponential delay (a single loop pausing after its own errors).
    None,
    /// Uniform in `[0, delay]` ("full jitter"): the widest spread, for requests retried at once.
    Full,
    /// Uniform in `[delay x (1 - f), delay x (1 + f)]`, at most `max`: keeps the schedule's shape
    /// (a delivery retried in about an hour still is).
    Spread(f64),
}

impl Backoff {
    /// The delay before attempt `attempt` (1 for the first retry; 0 counts as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        // 2^31 x any base in use is far beyond every cap; the shift must not overflow.
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1u32 << doublings).min(self.max);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => ceiling.mul_f64(rand::random::<f64>()),
            Jitter::Spread(f) => ceiling
                .mul_f64((1.0 - f + 2.0 * f * rand::random::<f64>()).max(0.0))
                .min(self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            jitter,
        }
    }

    #[test]
    fn without_jitter_the_delay_doubles_up_to_the_cap() {
        let delays: Vec<u128> = (0..9)
            .map(|n| backoff(Jitter::None).delay(n).as_millis())
            .collect();
        assert_eq!(delays, [100, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(
            backoff(Jitter::None).delay(u32::MAX),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn full_jitter_stays_under_the_exponential_delay_and_varies() {
        let full = backoff(Jitter::Full);
        for _ in 0..200 {
            assert!(full.delay(3) <= Duration::from_millis(400));
        }
        let seen: std::collections::HashSet<Duration> = (0..50).map(|_| full.delay(3)).collect();
        assert!(seen.len() > 1);
    }

    #[test]
    fn spread_jitter_keeps_the_schedule_within_its_fraction_and_the_cap() {
        let spread = backoff(Jitter::Spread(0.2));
        for _ in 0..200 {
            let d = spread.delay(4).as_secs_f64();
            assert!((0.64..=0.96).contains(&d), "{d}");
            assert!(spread.delay(40) <= Duration::from_secs(5));
            assert!(spread.delay(40) >= Duration::from_secs(4));
        }
    }
}
