//! Model-name conventions that choose how the fake answers a request, so a test picks a failure
//! mode through the model it asks for and never needs state shared with the server.

use std::time::Duration;

/// An upstream error the fake answers with instead of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `fail-500*`: 500 `server_error`.
    Internal,
    /// `fail-429*`: 429 with `Retry-After: 1`.
    RateLimited,
    /// `fail-503*`: 503.
    Unavailable,
    /// `ctx-400*`: 400 `context_length_exceeded`.
    ContextLength,
    /// `bad-400*`: 400 `invalid_value`.
    BadRequest,
}

/// What a model name asks the fake to do. Success modifiers (`slow-`, `cost-`, `chunkdelay-`) may
/// be chained with `-`, e.g. `slow-200-cost-2500-gpt`; a failure prefix ends the chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scenario {
    /// Extra wait before answering (`slow-<ms>`).
    pub delay: Duration,
    /// Cost in millionths of a dollar reported in `x-litellm-response-cost` (`cost-<micro>`).
    pub cost_micros: Option<u64>,
    /// Wait between streamed chunks (`chunkdelay-<ms>`).
    pub chunk_delay: Duration,
    /// Error to answer with after any delay (`fail-500`, `fail-429`, `fail-503`, `ctx-400`, `bad-400`).
    pub failure: Option<Failure>,
    /// `flaky-<n>`: the first `n` requests of each call (told apart by the service's call-id
    /// header, else by model name) answer 503, later ones succeed. The one stateful mode: it
    /// exists to show a retry on the same model succeeding.
    pub flaky: Option<u64>,
}

const FAILURE_PREFIXES: [(&str, Failure); 5] = [
    ("fail-500", Failure::Internal),
    ("fail-429", Failure::RateLimited),
    ("fail-503", Failure::Unavailable),
    ("ctx-400", Failure::ContextLength),
    ("bad-400", Failure::BadRequest),
];

impl Scenario {
    /// Reads the conventions from a model name. A provider prefix (`openai/fail-500`) is ignored
    /// because LiteLLM-style deployments often route on such names; unknown names succeed.
    pub fn from_model(model: &str) -> Self {
        let mut scenario = Self::default();
        let mut rest = model.rsplit('/').next().unwrap_or(model);
        loop {
            if let Some(&(_, failure)) = FAILURE_PREFIXES.iter().find(|(p, _)| rest.starts_with(p))
            {
                scenario.failure = Some(failure);
                return scenario;
            }
            let after = if let Some(tail) = rest.strip_prefix("slow-") {
                leading_number(tail).map(|(ms, after)| {
                    scenario.delay = Duration::from_millis(ms);
                    after
                })
            } else if let Some(tail) = rest.strip_prefix("cost-") {
                leading_number(tail).map(|(micros, after)| {
                    scenario.cost_micros = Some(micros);
                    after
                })
            } else if let Some(tail) = rest.strip_prefix("flaky-") {
                leading_number(tail).map(|(n, after)| {
                    scenario.flaky = Some(n);
                    after
                })
            } else if let Some(tail) = rest.strip_prefix("chunkdelay-") {
                leading_number(tail).map(|(ms, after)| {
                    scenario.chunk_delay = Duration::from_millis(ms);
                    after
                })
            } else {
                None
            };
            let Some(after) = after else {
                return scenario;
            };
            // Only a `-` continues the chain, so `slow-20ms` is simply "slow 20, then a label".
            match after.strip_prefix('-') {
                Some(next) => rest = next,
                None => return scenario,
            }
        }
    }
}

/// Splits `"2000-rest"` into `(2000, "-rest")`; `None` when no digits lead or they overflow.
fn leading_number(text: &str) -> Option<(u64, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number = text[..end].parse().ok()?;
    Some((number, &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_succeed_immediately() {
        assert_eq!(Scenario::from_model("gpt-4o"), Scenario::default());
        assert_eq!(Scenario::from_model(""), Scenario::default());
        assert_eq!(Scenario::from_model("slow-abc"), Scenario::default());
    }

    #[test]
    fn failure_prefixes_match_with_suffixes_and_provider() {
        let cases = [
            ("fail-500", Failure::Internal),
            ("fail-500-team-a", Failure::Internal),
            ("fail-429x", Failure::RateLimited),
            ("fail-503", Failure::Unavailable),
            ("ctx-400-big", Failure::ContextLength),
            ("openai/bad-400", Failure::BadRequest),
        ];
        for (model, failure) in cases {
            assert_eq!(
                Scenario::from_model(model).failure,
                Some(failure),
                "{model}"
            );
        }
    }

    #[test]
    fn success_modifiers_parse_and_chain() {
        let s = Scenario::from_model("slow-2000");
        assert_eq!(s.delay, Duration::from_millis(2000));
        let s = Scenario::from_model("cost-2500-gpt");
        assert_eq!(s.cost_micros, Some(2500));
        assert_eq!(Scenario::from_model("flaky-2-gpt").flaky, Some(2));
        assert_eq!(Scenario::from_model("flaky-2-gpt").failure, None);
        let s = Scenario::from_model("chunkdelay-50");
        assert_eq!(s.chunk_delay, Duration::from_millis(50));
        let s = Scenario::from_model("slow-10-cost-7-chunkdelay-3-fail-503");
        assert_eq!(s.delay, Duration::from_millis(10));
        assert_eq!(s.cost_micros, Some(7));
        assert_eq!(s.chunk_delay, Duration::from_millis(3));
        assert_eq!(s.failure, Some(Failure::Unavailable));
        // A label glued to the number ends the chain rather than being misread.
        let s = Scenario::from_model("slow-20ms-fail-500");
        assert_eq!(s.delay, Duration::from_millis(20));
        assert_eq!(s.failure, None);
    }
}
