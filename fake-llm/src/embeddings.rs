//! `POST /v1/embeddings`: OpenAI-shaped embeddings, the same vector for the same text every time
//! (a unit vector drawn from a hash of the text), usage counted like chat prompts, and the
//! failure and delay conventions of chat chosen by the model name.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use crate::completion;
use crate::routes::{AppState, error, failure_response, record, sleep_if_any};
use crate::scenario::Scenario;

/// Dimensions of a vector when the request names none.
pub const DEFAULT_DIMENSIONS: usize = 8;
/// Most dimensions a request may ask for (OpenAI's largest model has 3,072).
const MAX_DIMENSIONS: usize = 3_072;
/// Most inputs in one request, as OpenAI allows.
const MAX_INPUTS: usize = 2_048;

/// The texts to embed: a string, a list of strings, or token arrays (counted as their tokens).
fn inputs(body: &Value) -> Result<Vec<String>, String> {
    let text_of_tokens = |tokens: &[Value]| {
        tokens
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match body.get("input") {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err("'input' must not be empty".into()),
        Some(Value::Array(items)) if items.len() > MAX_INPUTS => {
            Err(format!("'input' may hold at most {MAX_INPUTS} items"))
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            Ok(vec![text_of_tokens(items)])
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Array(tokens) if tokens.iter().all(Value::is_number) => {
                    Ok(text_of_tokens(tokens))
                }
                _ => Err("each item of 'input' must be a string or an array of tokens".to_owned()),
            })
            .collect(),
        _ => Err("'input' is required: a string or an array".into()),
    }
}

/// A unit vector that depends only on `text` (FNV-1a seeding an xorshift generator).
pub fn vector_for(text: &str, dimensions: usize) -> Vec<f64> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.into_iter().map(|x| x / norm).collect()
}

pub(crate) async fn embeddings(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = state.recorder.enter();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    record(&state, &uri, &headers, body.clone());
    let scenario = Scenario::from_model(&model);
    sleep_if_any(state.latency + scenario.delay).await;
    if model.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "'model' is required",
            "invalid_request_error",
            None,
        );
    }
    let texts = match inputs(&body) {
        Ok(texts) => texts,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                &message,
                "invalid_request_error",
                None,
            );
        }
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(value) => match value.as_u64().map(|d| d as usize) {
            Some(d) if (1..=MAX_DIMENSIONS).contains(&d) => d,
            _ => {
                let message = format!("'dimensions' must be 1 to {MAX_DIMENSIONS}");
                return error(
                    StatusCode::BAD_REQUEST,
                    &message,
                    "invalid_request_error",
                    None,
                );
            }
        },
    };
    let prompt_tokens: u64 = texts.iter().map(|t| completion::token_count(t)).sum();
    if let Some(failure) = scenario.failure {
        return failure_response(failure, prompt_tokens);
    }
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": vector_for(text, dimensions)})
        })
        .collect();
    let mut response_headers = HeaderMap::new();
    if let Some(micros) = scenario.cost_micros
        && let Ok(cost) = HeaderValue::from_str(&completion::format_cost(micros))
    {
        response_headers.insert(HeaderName::from_static("x-litellm-response-cost"), cost);
    }
    let usage = json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens});
    (
        response_headers,
        Json(json!({"object": "list", "data": data, "model": model, "usage": usage})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_length_and_depend_only_on_the_text() {
        let a = vector_for("hello", 16);
        assert_eq!(a, vector_for("hello", 16));
        assert_ne!(a, vector_for("hello!", 16));
        let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-9, "{norm}");
        assert!(a.iter().all(|x| (-1.0..=1.0).contains(x)));
    }

    #[test]
    fn inputs_take_every_shape_openai_accepts() {
        assert_eq!(inputs(&json!({"input": "a"})), Ok(vec!["a".to_owned()]));
        assert_eq!(
            inputs(&json!({"input": ["a", "b"]})).map(|v| v.len()),
            Ok(2)
        );
        assert_eq!(inputs(&json!({"input": [1, 2, 3]})).map(|v| v.len()), Ok(1));
        assert_eq!(
            inputs(&json!({"input": [[1, 2], [3]]})).map(|v| v.len()),
            Ok(2)
        );
        assert!(inputs(&json!({"input": []})).is_err());
        assert!(inputs(&json!({"input": [{"x": 1}]})).is_err());
        assert!(inputs(&json!({})).is_err());
    }
}
