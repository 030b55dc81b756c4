//! Admitting a `/v1` request before it is sent: the team behind the key, the model among the
//! team's, its tokens counted off the async workers when that is slow, and its worst-case cost
//! reserved against the team's USD budget (see `crate::budget`).

use axum::body::Bytes;
use axum::http::StatusCode;
use saasllm_shared::domain::estimate::{self, OutputLimit};
use saasllm_shared::domain::limits::TeamLimits;
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::pricing::{self, Price, UNKNOWN_MODEL_PRICE};
use saasllm_shared::domain::status::CallEndpoint;
use serde_json::{Map, Value};

use super::OpenAiError;
use super::usage::Pricing;
use crate::auth::Caller;
use crate::budget::{Refusal, Ticket};
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::limits::{self, Admission};
use crate::state::AppState;

/// Bodies above this size are tokenized on a blocking thread, off the async workers (a 4 KB
/// prompt takes a few hundred microseconds; 2 MB, about a second).
const TOKENIZE_INLINE_BYTES: usize = 64 * 1024;

/// The team behind the key, then the request's body: a missing or unknown key is refused before
/// anything is said of the body.
pub(crate) fn team_and_body(
    caller: Result<Caller, ApiError>,
    body: Result<RawBody, ApiError>,
) -> Result<(String, TeamLimits, Bytes), OpenAiError> {
    let (team_id, limits) = team_of(caller)?;
    let RawBody(bytes) = body?;
    Ok((team_id, limits, bytes))
}

/// The team and the model on the request's span, once the body has named the model.
pub(crate) fn trace_team_model(team_id: &str, model: &str) {
    let span = tracing::Span::current();
    span.record("team_id", team_id);
    span.record("model", model);
}

/// The team behind a virtual key; the admin key has no budget and is refused here.
pub(crate) fn team_of(
    caller: Result<Caller, ApiError>,
) -> Result<(String, TeamLimits), OpenAiError> {
    match caller? {
        Caller::Team {
            team_id, limits, ..
        } => Ok((team_id, limits)),
        Caller::Admin(_) => Err(OpenAiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            None,
            "The OpenAI-compatible endpoint takes a team's virtual key, not the admin key",
        )),
    }
}

/// The model's price config in the team's groups; none means the model is not allowed (403).
pub(crate) async fn model_config(
    state: &AppState,
    team_id: &str,
    model: &str,
) -> Result<Value, OpenAiError> {
    let grants = state
        .directory
        .grants(team_id)
        .await
        .map_err(ApiError::from)?;
    match grants.model_config(model) {
        Some(config) => Ok(config.clone()),
        None => Err(OpenAiError::model_not_allowed(
            model,
            team_id,
            &grants.allowed_models(),
        )),
    }
}

/// Counts the request's tokens with `count`. Large bodies, and the first request of a model
/// family (which builds its tokenizer), are counted on a blocking thread; the request is handed
/// back for sending.
pub(crate) async fn count_tokens<T, F>(
    request: Map<String, Value>,
    model: &str,
    body_bytes: usize,
    count: F,
) -> Result<(Map<String, Value>, T), OpenAiError>
where
    T: Send + 'static,
    F: FnOnce(&str, &Map<String, Value>) -> T + Send + 'static,
{
    if body_bytes <= TOKENIZE_INLINE_BYTES && estimate::tokenizer_ready(model) {
        let counted = count(model, &request);
        return Ok((request, counted));
    }
    let model = model.to_owned();
    tokio::task::spawn_blocking(move || {
        let counted = count(&model, &request);
        (request, counted)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("token estimate failed: {e}")).into())
}

/// A chat request's worst-case cost: its prompt bound plus the most output it asks for (or the
/// model's output limit). A request that sets no output limit is given the estimate's, so the
/// upstream cannot produce more than was reserved.
pub(crate) fn chat_estimate(
    request: &mut Map<String, Value>,
    config: &Value,
    price: Option<Price>,
    prompt_tokens: u64,
) -> Result<MicroUsd, OpenAiError> {
    let output_limit = OutputLimit::from_config(config);
    let output_tokens = estimate::output_bound(request, output_limit)
        .map_err(|e| OpenAiError::invalid_field(e.field, e.message))?;
    estimate::hold_to_estimate(request, output_limit);
    Ok(worst_case_cost(price, prompt_tokens, output_tokens))
}

/// The cost of the tokens at the model's price (the default price when the price table does not
/// know the model), at least one micro-dollar so that every admission reserves something.
pub(crate) fn worst_case_cost(
    price: Option<Price>,
    input_tokens: u64,
    output_tokens: u64,
) -> MicroUsd {
    pricing::cost_of_bounds(
        price.unwrap_or(UNKNOWN_MODEL_PRICE),
        input_tokens,
        output_tokens,
    )
    .max(MicroUsd(1))
}

/// Admits a priced request before it is sent, holding until its response (or its stream) ends:
/// first a slot of the team's concurrency limit with the request counted in its requests per
/// minute, then its estimated cost reserved against the team's budget. The request id goes on
/// the span.
pub(crate) async fn admit_request(
    state: &AppState,
    team_id: &str,
    limits: &TeamLimits,
    estimate: MicroUsd,
    pricing: &Pricing,
    stream: bool,
    endpoint: CallEndpoint,
) -> Result<(Option<Admission>, Ticket), OpenAiError> {
    let admission = limits::admit(state, team_id, limits, true).await?;
    let model = &pricing.model;
    let ticket = admit_budget(state, team_id, estimate, model, stream, endpoint).await?;
    tracing::Span::current().record("request_id", tracing::field::display(ticket.request_id()));
    Ok((admission, ticket))
}

/// Reserves the request's worst-case cost against the team's budget: its ticket, or a 402 when
/// less than `estimate` is left.
async fn admit_budget(
    state: &AppState,
    team_id: &str,
    estimate: MicroUsd,
    model: &str,
    stream: bool,
    endpoint: CallEndpoint,
) -> Result<Ticket, OpenAiError> {
    let admitted = state
        .budgets
        .admit(team_id, estimate.0, model.to_owned(), stream, endpoint)
        .await;
    match admitted {
        Ok(ticket) => Ok(ticket),
        Err(Refusal::OverBudget) => Err(OpenAiError::budget_exceeded(team_id, estimate)),
        Err(Refusal::Database(e)) => Err(ApiError::from(e).into()),
    }
}
