//! Checking a batch file's lines, without touching the database: what OpenAI's Batch API
//! checks (a JSON object per line, a unique `custom_id`, `method` POST, the batch's `url`, a
//! body), what this service adds (the model or model group must be the team's, a body it can
//! store), and each line's estimated cost, which is reserved against the team's budget.
//!
//! A problem with the file itself (a line that is not a JSON object, a missing or repeated
//! `custom_id`, too many lines) fails the whole batch, as OpenAI does. A problem with one line's
//! request sends that line to the error file and the others run.

use std::collections::HashSet;

use saasllm_shared::db::model_groups::{ModelEntryRow, ModelGroupRow};
use saasllm_shared::domain::estimate::{self, OutputLimit};
use saasllm_shared::domain::estimate_embeddings::embedding_input_bound;
use saasllm_shared::domain::pricing::{self, UNKNOWN_MODEL_PRICE};
use saasllm_shared::domain::status::CallEndpoint;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Most lines in a batch file, as OpenAI allows.
pub const MAX_LINES: usize = 50_000;
/// Longest line (one request) read: estimating a line takes time in proportion to its size, and
/// a line is held whole in memory while it is checked.
pub const MAX_LINE_BYTES: usize = 10 * 1024 * 1024;
/// Longest `custom_id` accepted.
pub const MAX_CUSTOM_ID_CHARS: usize = 512;
/// File problems reported at most; the batch fails with the first ones.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// The team's model groups with their models, as granted.
pub struct Grants {
    pub groups: Vec<(ModelGroupRow, Vec<ModelEntryRow>)>,
}

/// What a line's `model` resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The group's id when the line names a granted group.
    pub model_group_id: Option<Uuid>,
    /// The models tried in order, with their configs.
    pub chain: Vec<(String, Value)>,
}

impl Grants {
    /// A granted group of that name (its fallback applies), else a model the team may use
    /// directly (in the first granted group that has it, for its config).
    pub fn resolve(&self, model: &str) -> Option<Target> {
        if let Some((group, models)) = self.groups.iter().find(|(g, _)| g.group_name == model) {
            return Some(Target {
                model_group_id: Some(group.model_group_id),
                chain: models
                    .iter()
                    .map(|m| (m.model_name.clone(), m.config.clone()))
                    .collect(),
            });
        }
        let entry = self
            .groups
            .iter()
            .flat_map(|(_, models)| models)
            .find(|m| m.model_name == model)?;
        Some(Target {
            model_group_id: None,
            chain: vec![(entry.model_name.clone(), entry.config.clone())],
        })
    }
}

/// A problem with the file: the batch fails with OpenAI's `errors.data` items.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    pub code: &'static str,
    pub message: String,
    /// 1-based line number.
    pub line: usize,
}

impl FileError {
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "param": null, "line": self.line})
    }
}

/// A line of a valid file: to run with its estimate, or refused with OpenAI's error code.
#[derive(Debug)]
pub struct CheckedLine {
    pub custom_id: String,
    pub model: String,
    pub outcome: Result<Planned, (&'static str, String)>,
}

/// A line to run.
#[derive(Debug)]
pub struct Planned {
    pub target: Target,
    /// The body sent upstream (the engine names each model of the chain in turn).
    pub request: Value,
    /// Micro-dollars reserved for it: the most any model of its chain can cost.
    pub estimate: i64,
}

/// Checks one line (`number` is 1-based). `seen` holds the custom ids of earlier lines.
pub fn check_line(
    raw: &[u8],
    number: usize,
    endpoint: CallEndpoint,
    grants: &Grants,
    seen: &mut HashSet<String>,
) -> Result<CheckedLine, FileError> {
    let file_error = |code, message: String| FileError {
        code,
        message,
        line: number,
    };
    let mut line: Map<String, Value> = serde_json::from_slice(raw).map_err(|e| {
        file_error(
            "invalid_json_line",
            format!("line {number} is not a JSON object: {e}"),
        )
    })?;
    let custom_id = match line.get("custom_id") {
        Some(Value::String(id))
            if !id.is_empty()
                && id.chars().count() <= MAX_CUSTOM_ID_CHARS
                && !id.contains('\0') =>
        {
            id.clone()
        }
        _ => {
            return Err(file_error(
                "invalid_custom_id",
                format!(
                    "line {number}: custom_id must be a string of 1 to {MAX_CUSTOM_ID_CHARS} characters without NUL"
                ),
            ));
        }
    };
    if !seen.insert(custom_id.clone()) {
        return Err(file_error(
            "duplicate_custom_id",
            format!("line {number}: custom_id '{custom_id}' is used by an earlier line"),
        ));
    }
    let body = line.remove("body");
    let model = body
        .as_ref()
        .and_then(|b| b.get("model"))
        .and_then(Value::as_str)
        .filter(|m| !m.contains('\0'))
        .unwrap_or_default()
        .to_owned();
    let outcome = plan(&line, body, &model, endpoint, grants);
    Ok(CheckedLine {
        custom_id,
        model,
        outcome,
    })
}

/// The line's request and estimate, or why it cannot run.
fn plan(
    line: &Map<String, Value>,
    body: Option<Value>,
    model: &str,
    endpoint: CallEndpoint,
    grants: &Grants,
) -> Result<Planned, (&'static str, String)> {
    if line.get("method").and_then(Value::as_str) != Some("POST") {
        return Err(("invalid_method", "method must be \"POST\"".into()));
    }
    match line.get("url").and_then(Value::as_str) {
        Some(url) if url == endpoint.path() => {}
        Some(url) => {
            return Err((
                "invalid_url",
                format!(
                    "url '{url}' is not this batch's endpoint '{}'",
                    endpoint.path()
                ),
            ));
        }
        None => return Err(("invalid_url", "url must be a string".into())),
    }
    let Some(Value::Object(mut body)) = body else {
        return Err(("invalid_body", "body must be a JSON object".into()));
    };
    if model.is_empty() {
        return Err((
            "invalid_request",
            "body.model must be a non-empty string without NUL".into(),
        ));
    }
    if holds_nul(&Value::Object(body.clone())) {
        return Err((
            "invalid_request",
            "the body must not contain NUL characters".into(),
        ));
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err((
            "invalid_request",
            "stream is not available in a batch".into(),
        ));
    }
    let Some(target) = grants.resolve(model) else {
        return Err((
            "model_not_allowed",
            format!("model '{model}' is not a model or model group the team may use"),
        ));
    };
    if target.chain.is_empty() {
        return Err((
            "model_not_allowed",
            format!("model group '{model}' has no models"),
        ));
    }
    let estimate = match endpoint {
        CallEndpoint::Chat => chat_estimate(&mut body, &target)?,
        CallEndpoint::Embeddings => embeddings_estimate(&body, &target)?,
    };
    Ok(Planned {
        target,
        request: Value::Object(body),
        estimate,
    })
}

/// The most a chat line can cost on any model of its chain. A line that sets no output limit
/// gets the smallest default of the chain, so no model's answer can cost more than estimated.
fn chat_estimate(
    body: &mut Map<String, Value>,
    target: &Target,
) -> Result<i64, (&'static str, String)> {
    if !body.get("messages").is_some_and(Value::is_array) {
        return Err(("invalid_request", "body.messages must be an array".into()));
    }
    let limits: Vec<OutputLimit> = target
        .chain
        .iter()
        .map(|(_, config)| OutputLimit::from_config(config))
        .collect();
    let held = limits.iter().copied().min_by_key(|l| l.unset);
    if let Some(held) = held {
        estimate::hold_to_estimate(body, held);
    }
    let mut most = 0i64;
    for ((model, config), limit) in target.chain.iter().zip(limits) {
        let output = estimate::output_bound(body, limit).map_err(|e| {
            (
                "invalid_request",
                format!("body.{}: {}", e.field, e.message),
            )
        })?;
        let prompt = estimate::prompt_bound(model, body);
        let price = pricing::price_for(model, config).unwrap_or(UNKNOWN_MODEL_PRICE);
        most = most.max(pricing::cost_of_bounds(price, prompt, output).0);
    }
    Ok(most.max(1))
}

/// The most an embeddings line can cost on any model of its chain (input tokens only).
fn embeddings_estimate(
    body: &Map<String, Value>,
    target: &Target,
) -> Result<i64, (&'static str, String)> {
    let input = body.get("input").cloned().unwrap_or(Value::Null);
    let mut most = 0i64;
    for (model, config) in &target.chain {
        let tokens = embedding_input_bound(model, &input).map_err(|e| {
            (
                "invalid_request",
                format!("body.{}: {}", e.field, e.message),
            )
        })?;
        let price = pricing::price_for(model, config).unwrap_or(UNKNOWN_MODEL_PRICE);
        most = most.max(pricing::cost_of_bounds(price, tokens, 0).0);
    }
    Ok(most.max(1))
}

/// Whether a NUL character is in any string or key (PostgreSQL's jsonb cannot store one).
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
#[path = "lines_tests.rs"]
mod tests;
