//! The upper bound of what an embeddings request can be billed for, computed before it is sent,
//! and the validation of its `input` on the way. Embeddings bill input tokens only, so the bound
//! is the input's tokens: text counted with [`text_bound`] (the same tokenizer-aware bound as chat
//! prompts), and every token id of a pre-tokenized input as one token.
//!
//! Used by `POST /v1/embeddings` and by the embeddings lines of a batch: a pure function of the
//! model name and the `input` value.

use serde_json::Value;

use super::estimate::{InvalidField, text_bound};

/// Most items the `input` array may hold, as OpenAI allows.
pub const MAX_EMBEDDING_INPUTS: usize = 2_048;

/// An upper bound of the tokens of an embeddings request's `input`, or why the input is not one
/// OpenAI accepts. `input` is one of:
/// - a non-empty string;
/// - a non-empty array of non-empty strings;
/// - a non-empty array of token ids (non-negative integers), one pre-tokenized input;
/// - a non-empty array of non-empty arrays of token ids.
///
/// An array holds at most [`MAX_EMBEDDING_INPUTS`] items, and its items are all of one kind.
/// `input` is the request's field as it is; pass `Value::Null` when the request has none.
pub fn embedding_input_bound(model: &str, input: &Value) -> Result<u64, InvalidField> {
    let items = match input {
        Value::String(text) => return text_item(model, text),
        Value::Array(items) => items,
        Value::Null => {
            return Err(invalid(
                "`input` is required: a string or an array".to_owned(),
            ));
        }
        other => {
            return Err(invalid(format!(
                "`input` must be a string or an array; got {}",
                kind_of(other)
            )));
        }
    };
    if items.is_empty() {
        return Err(invalid("`input` must not be an empty array".to_owned()));
    }
    if items.len() > MAX_EMBEDDING_INPUTS {
        return Err(invalid(format!(
            "`input` may hold at most {MAX_EMBEDDING_INPUTS} items; got {}",
            items.len()
        )));
    }
    // The first item says which of the array forms this is; the others must follow it.
    let item_bound: fn(&str, &Value) -> Result<u64, String> = match &items[0] {
        Value::String(_) => |model, item| match item {
            Value::String(text) if !text.is_empty() => Ok(text_bound(model, text)),
            Value::String(_) => Err("must not be an empty string".to_owned()),
            other => Err(format!(
                "must be a string like the first; got {}",
                kind_of(other)
            )),
        },
        Value::Number(_) => |_, item| token_id(item).map(|()| 1),
        Value::Array(_) => |_, item| match item {
            Value::Array(tokens) => token_list(tokens),
            other => Err(format!(
                "must be an array of token ids like the first; got {}",
                kind_of(other)
            )),
        },
        other => {
            return Err(invalid(format!(
                "`input` items must be strings, token ids or arrays of token ids; got {}",
                kind_of(other)
            )));
        }
    };
    items
        .iter()
        .enumerate()
        .try_fold(0u64, |sum, (index, item)| {
            let bound = item_bound(model, item)
                .map_err(|reason| invalid(format!("`input[{index}]` {reason}")))?;
            Ok(sum.saturating_add(bound))
        })
}

/// A string given as the whole input.
fn text_item(model: &str, text: &str) -> Result<u64, InvalidField> {
    if text.is_empty() {
        return Err(invalid("`input` must not be an empty string".to_owned()));
    }
    Ok(text_bound(model, text))
}

/// One pre-tokenized input: its token count, each id checked.
fn token_list(tokens: &[Value]) -> Result<u64, String> {
    if tokens.is_empty() {
        return Err("must not be an empty array".to_owned());
    }
    for (position, token) in tokens.iter().enumerate() {
        token_id(token).map_err(|reason| format!("[{position}] {reason}"))?;
    }
    Ok(u64::try_from(tokens.len()).unwrap_or(u64::MAX))
}

/// A token id: a non-negative integer.
fn token_id(value: &Value) -> Result<(), String> {
    match value.as_u64() {
        Some(_) => Ok(()),
        None => Err(format!(
            "must be a token id (a non-negative integer); got {}",
            short(value)
        )),
    }
}

fn invalid(message: String) -> InvalidField {
    InvalidField {
        field: "input",
        message,
    }
}

/// The JSON kind of a value, for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for a message, cut short: an input may be megabytes.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::estimate::text_tokens;

    fn bound(input: Value) -> Result<u64, InvalidField> {
        embedding_input_bound("text-embedding-3-small", &input)
    }

    fn refusal(input: Value) -> String {
        let error = bound(input.clone()).expect_err("refused");
        assert_eq!(error.field, "input", "{input}");
        error.message
    }

    #[test]
    fn strings_are_bounded_by_their_tokens_and_never_below_what_is_billed() {
        let text = "The quick brown fox jumps over the lazy dog.";
        let single = bound(json!(text)).expect("a string");
        let listed = bound(json!([text, text])).expect("strings");

        assert!(single >= text_tokens("text-embedding-3-small", text));
        assert!(single > 0);
        assert_eq!(listed, 2 * single);
    }

    #[test]
    fn models_without_a_shipped_tokenizer_stay_within_the_bytes() {
        let text = "héllo wörld, ".repeat(50);

        let bounded = embedding_input_bound("mistral-embed", &json!(text)).expect("bound");

        assert!(bounded >= text_tokens("mistral-embed", &text));
        assert!(bounded <= text.len() as u64);
    }

    #[test]
    fn every_token_id_counts_one() {
        assert_eq!(bound(json!([1, 2, 3])), Ok(3));
        assert_eq!(bound(json!([[1, 2], [3], [4, 5, 6]])), Ok(6));
        assert_eq!(bound(json!([0, 100_257])), Ok(2));
    }

    #[test]
    fn refuses_a_missing_or_mistyped_input() {
        let missing = embedding_input_bound("m", &Value::Null).expect_err("missing");

        assert_eq!(missing.field, "input");
        assert!(missing.message.contains("required"), "{}", missing.message);
        for input in [json!(7), json!(true), json!({"text": "a"})] {
            assert!(refusal(input).contains("string or an array"));
        }
    }

    #[test]
    fn refuses_empty_inputs() {
        for input in [
            json!(""),
            json!([]),
            json!([""]),
            json!(["a", ""]),
            json!([[]]),
        ] {
            assert!(refusal(input).contains("empty"));
        }
    }

    #[test]
    fn refuses_arrays_mixing_kinds_or_holding_other_values() {
        let cases = [
            json!(["a", 1]),
            json!([1, "a"]),
            json!([[1], 2]),
            json!(["a", ["b"]]),
            json!([[1, "2"]]),
            json!([[1.5]]),
            json!([-1]),
            json!([1.0]),
            json!([{"a": 1}]),
            json!([null]),
            json!([[[1]]]),
        ];
        for input in cases {
            let message = refusal(input.clone());
            assert!(message.starts_with("`input"), "{input}: {message}");
        }
    }

    #[test]
    fn names_the_faulty_item() {
        assert!(refusal(json!(["a", "b", 3])).contains("`input[2]`"));
        assert!(refusal(json!([[1], [2, -3]])).contains("`input[1]` [1]"));
    }

    #[test]
    fn takes_at_most_the_inputs_openai_allows() {
        let most: Vec<u64> = vec![7; MAX_EMBEDDING_INPUTS];
        let too_many: Vec<u64> = vec![7; MAX_EMBEDDING_INPUTS + 1];

        assert_eq!(bound(json!(most)), Ok(MAX_EMBEDDING_INPUTS as u64));
        assert!(refusal(json!(too_many)).contains("at most 2048"));
    }

    #[test]
    fn long_values_are_cut_short_in_messages() {
        let long = "x".repeat(10_000);

        let message = refusal(json!([[1, long]]));

        assert!(message.len() < 200, "{message}");
    }
}
