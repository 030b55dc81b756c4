//! Per-team limits set by the admin: how many calls may run at once, and how many requests and
//! tokens a team may use per minute. `None` is unlimited.

use serde::{Deserialize, Serialize};

/// A team's limits, as stored on the team.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    sqlx::FromRow,
    utoipa::ToSchema,
)]
pub struct TeamLimits {
    /// Calls of the team running upstream at once (queued calls wait; synchronous paths get 429).
    pub max_concurrent_calls: Option<i32>,
    /// Upstream requests started per minute.
    pub requests_per_minute: Option<i32>,
    /// Tokens used per minute; a minute's usage is known once its calls finish, so the minute in
    /// which the limit is crossed finishes what it started and the team then waits.
    pub tokens_per_minute: Option<i32>,
}

impl TeamLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_concurrent_calls.is_some()
            || self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_is_true_once_one_limit_is_set() {
        let limits = TeamLimits {
            max_concurrent_calls: None,
            requests_per_minute: None,
            tokens_per_minute: Some(10_000),
        };
        assert!(limits.any());
        assert!(!TeamLimits::default().any());
    }
}
