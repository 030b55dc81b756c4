//! LLM prices: USD per 1M input and output tokens, as integer micro-dollars per 1M tokens.
//! A model group's per-model `config` may override them (`input_cost_per_million`,
//! `output_cost_per_million`, in USD). An unknown model has no price: its cost stays empty
//! (visible as such) rather than silently priced at a default.

use crate::domain::money::MicroUsd;

/// Price of one model in micro-dollars per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input_per_million: i64,
    pub output_per_million: i64,
}

const fn usd(dollars_per_million_times_100: i64) -> i64 {
    dollars_per_million_times_100 * 10_000
}

/// Shipped defaults: (model name, input, output) in cents per 1M tokens.
const DEFAULT_PRICES: &[(&str, i64, i64)] = &[
    ("gpt-4o", 250, 1_000),
    ("gpt-4o-mini", 15, 60),
    ("gpt-4.1", 200, 800),
    ("gpt-4.1-mini", 40, 160),
    ("gpt-4-turbo", 1_000, 3_000),
    ("gpt-4", 3_000, 6_000),
    ("gpt-3.5-turbo", 50, 150),
    ("o3-mini", 110, 440),
    ("claude-3-5-sonnet", 300, 1_500),
    ("claude-3-sonnet", 300, 1_500),
    ("claude-3-5-haiku", 80, 400),
    ("claude-3-haiku", 25, 125),
    ("claude-3-opus", 1_500, 7_500),
    ("text-embedding-3-small", 2, 0),
    ("text-embedding-3-large", 13, 0),
    ("text-embedding-ada-002", 10, 0),
];

/// What a budget estimate assumes of a model with no known price: dearer than any listed, so
/// an unpriced model cannot spend past the budget by being estimated cheap.
pub const UNKNOWN_MODEL_PRICE: Price = Price {
    input_per_million: 10_000_000,
    output_per_million: 30_000_000,
};

/// The price of `model`: the group config's override first, then the shipped table (matching a
/// provider-prefixed name such as `openai/gpt-4o` too).
pub fn price_for(model: &str, config: &serde_json::Value) -> Option<Price> {
    let from_config = |field: &str| {
        config
            .get(field)
            .and_then(|v| match v {
                serde_json::Value::Number(n) => MicroUsd::parse_usd(&n.to_string()).ok(),
                serde_json::Value::String(s) => MicroUsd::parse_usd(s).ok(),
                _ => None,
            })
            .map(|m| m.0)
    };
    if let (Some(input), Some(output)) = (
        from_config("input_cost_per_million"),
        from_config("output_cost_per_million"),
    ) {
        return Some(Price {
            input_per_million: input,
            output_per_million: output,
        });
    }
    let bare = model.rsplit('/').next().unwrap_or(model);
    DEFAULT_PRICES
        .iter()
        .find(|(name, _, _)| *name == bare)
        .map(|&(_, input, output)| Price {
            input_per_million: usd(input),
            output_per_million: usd(output),
        })
}

/// Cost of a call, rounded to the nearest micro-dollar. Negative token counts or prices (a
/// broken upstream or config) count as zero, so a cost never lowers spend; a cost too large for
/// an `i64` saturates at `i64::MAX`, which no budget admits (instead of wrapping to a small one).
pub fn cost(price: Price, prompt_tokens: i64, completion_tokens: i64) -> MicroUsd {
    let part = |tokens: i64, per_million: i64| {
        i128::from(tokens.max(0)).saturating_mul(i128::from(per_million.max(0)))
    };
    let total = part(prompt_tokens, price.input_per_million)
        .saturating_add(part(completion_tokens, price.output_per_million))
        .saturating_add(500_000)
        / 1_000_000;
    MicroUsd(i64::try_from(total).unwrap_or(i64::MAX))
}

/// [`cost`] of token counts given as `u64` (estimates); counts above `i64::MAX` saturate.
pub fn cost_of_bounds(price: Price, prompt_tokens: u64, completion_tokens: u64) -> MicroUsd {
    let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    cost(price, tokens(prompt_tokens), tokens(completion_tokens))
}

/// The response header in which LiteLLM reports what a request cost, in USD.
pub const COST_HEADER: &str = "x-litellm-response-cost";

/// Parses LiteLLM's `x-litellm-response-cost` header (a decimal USD amount, maybe in exponent form).
pub fn parse_cost_header(value: &str) -> Option<MicroUsd> {
    let value = value.trim();
    if let Ok(exact) = MicroUsd::parse_usd(value) {
        return Some(exact);
    }
    let dollars: f64 = value.parse().ok()?;
    // A float-to-integer `as` saturates: an absurd cost becomes i64::MAX, never a wrapped value.
    (dollars.is_finite() && dollars >= 0.0)
        .then(|| MicroUsd((dollars * 1_000_000.0).round() as i64))
}

/// The cost LiteLLM puts in a stream's final usage chunk (`usage.cost`, USD). A stream has no
/// `x-litellm-response-cost` header, since its headers go out before the usage is known.
pub fn usage_cost(usage: &serde_json::Value) -> Option<MicroUsd> {
    match usage.get("cost")? {
        serde_json::Value::Number(n) => parse_cost_header(&n.to_string()),
        serde_json::Value::String(s) => parse_cost_header(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prices_known_models_and_provider_prefixed_names() {
        let gpt4o = price_for("gpt-4o", &json!({})).expect("known");
        assert_eq!(gpt4o.input_per_million, 2_500_000);
        assert_eq!(gpt4o.output_per_million, 10_000_000);
        assert_eq!(price_for("openai/gpt-4o", &json!({})), Some(gpt4o));
        assert_eq!(price_for("my-private-model", &json!({})), None);
    }

    #[test]
    fn group_config_overrides_the_table() {
        let config = json!({"input_cost_per_million": 1.5, "output_cost_per_million": "2"});
        assert_eq!(
            price_for("gpt-4o", &config),
            Some(Price {
                input_per_million: 1_500_000,
                output_per_million: 2_000_000
            })
        );
        assert_eq!(
            price_for("unknown", &config).map(|p| p.input_per_million),
            Some(1_500_000)
        );
    }

    #[test]
    fn cost_is_exact_integer_arithmetic() {
        // gpt-3.5-turbo: $0.50 in, $1.50 out per 1M tokens.
        let price = price_for("gpt-3.5-turbo", &json!({})).expect("known");
        assert_eq!(cost(price, 1_000, 500), MicroUsd(1_250));
        assert_eq!(cost(price, 1, 0), MicroUsd(1)); // 0.5 micro rounds up
        assert_eq!(cost(price, 0, 0), MicroUsd(0));
    }

    #[test]
    fn cost_saturates_instead_of_wrapping() {
        let gpt4 = price_for("gpt-4", &json!({})).expect("known");
        // 2^63 - 1 output tokens at $60 per 1M used to wrap to a tiny (or negative) amount.
        assert_eq!(cost(gpt4, 0, i64::MAX), MicroUsd(i64::MAX));
        assert_eq!(cost(gpt4, i64::MAX, i64::MAX), MicroUsd(i64::MAX));
        assert_eq!(
            cost_of_bounds(gpt4, 200_000_000_000_000_000, 0),
            MicroUsd(6_000_000_000_000_000_000)
        );
        assert_eq!(
            cost_of_bounds(gpt4, 0, 200_000_000_000_000_000),
            MicroUsd(i64::MAX)
        );
        assert_eq!(cost_of_bounds(gpt4, u64::MAX, u64::MAX), MicroUsd(i64::MAX));
        let absurd = Price {
            input_per_million: i64::MAX,
            output_per_million: i64::MAX,
        };
        assert_eq!(cost(absurd, 1_000_000, 1), MicroUsd(i64::MAX));
    }

    #[test]
    fn negative_counts_and_prices_cost_nothing() {
        let gpt4 = price_for("gpt-4", &json!({})).expect("known");
        assert_eq!(cost(gpt4, -1_000, -5), MicroUsd(0));
        assert_eq!(cost(gpt4, i64::MIN, 1_000), MicroUsd(60_000));
        let negative = Price {
            input_per_million: -1_000_000,
            output_per_million: 1_000_000,
        };
        assert_eq!(cost(negative, 1_000_000, 1_000_000), MicroUsd(1_000_000));
    }

    #[test]
    fn absurd_cost_headers_saturate() {
        assert_eq!(parse_cost_header("1e300"), Some(MicroUsd(i64::MAX)));
        assert_eq!(parse_cost_header("inf"), None);
        assert_eq!(parse_cost_header("NaN"), None);
    }

    #[test]
    fn parses_litellm_cost_headers() {
        assert_eq!(parse_cost_header("0.0025"), Some(MicroUsd(2_500)));
        assert_eq!(parse_cost_header("2.5e-05"), Some(MicroUsd(25)));
        assert_eq!(parse_cost_header("nope"), None);
        assert_eq!(parse_cost_header("-1"), None);
    }

    #[test]
    fn reads_litellm_stream_usage_cost() {
        let usage =
            json!({"prompt_tokens": 3, "completion_tokens": 5, "cost": 0.00004599999999999999});
        assert_eq!(usage_cost(&usage), Some(MicroUsd(46)));
        assert_eq!(
            usage_cost(&json!({"cost": "0.0025"})),
            Some(MicroUsd(2_500))
        );
        assert_eq!(usage_cost(&json!({"prompt_tokens": 3})), None);
        assert_eq!(usage_cost(&json!({"cost": null})), None);
    }
}
