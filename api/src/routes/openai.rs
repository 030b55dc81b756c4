//! OpenAI-compatible endpoint for team keys: `POST /v1/chat/completions` (streaming or not) and
//! `GET /v1/models`. Requests pass through to the upstream unchanged apart from what must change;
//! only the team's `allowed_models` are reachable, and a USD budget (credits_allocated x
//! USD_PER_CREDIT) is enforced by admitting each request's estimated cost against this process's
//! slice of the budget before it is sent (see `crate::budget`).
//! Errors use OpenAI's shape so the SDKs raise their usual exception classes.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use saasllm_shared::domain::estimate;
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::CallEndpoint;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::budget::Ticket;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::limits::Admission;
use crate::openai::admission::{
    admit_request, chat_estimate, count_tokens, model_config, team_and_body, team_of,
    trace_team_model,
};
use crate::openai::relay;
use crate::openai::usage::Pricing;
use crate::openai::{KeyRefusals, ModelRefusals, OpenAiError};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat_completions))
        .routes(routes!(models))
}

/// The models the team's key may use (its `allowed_models`), in OpenAI's list shape.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "OpenAI model list", body = serde_json::Value,
         example = json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "saasllm"}]})),
        KeyRefusals,
    ),
    security(("bearer" = []))
)]
async fn models(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, _) = team_of(caller)?;
    let grants = state
        .directory
        .grants(&team_id)
        .await
        .map_err(ApiError::from)?;
    let data: Vec<Value> = grants
        .allowed_models()
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "saasllm"}))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

/// OpenAI chat completions with the team's virtual key, streaming or not, passed through to the
/// upstream. Only the team's allowed models are reachable; each request's estimated cost is
/// reserved against the team's USD budget before it is sent and settled at its actual cost.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body(content = crate::openapi::ChatCompletionRequest, description = "An OpenAI chat completion request"),
    responses(
        (status = 200, description = "The upstream's completion, or its SSE stream with `stream: true`", body = serde_json::Value),
        ModelRefusals,
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id, model, request_id))]
async fn chat_completions(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Result<RawBody, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, limits, bytes) = team_and_body(caller, body)?;
    let (request, model) = parse_chat_request(&bytes)?;
    trace_team_model(&team_id, &model);

    // Tokenized before a pooled connection is taken: a large prompt takes milliseconds.
    let (mut request, prompt_tokens) =
        count_tokens(request, &model, bytes.len(), estimate::prompt_bound).await?;
    let config = model_config(&state, &team_id, &model).await?;
    let price = pricing::price_for(&model, &config);
    let estimate = chat_estimate(&mut request, &config, price, prompt_tokens)?;

    let pricing = Pricing {
        model,
        config,
        price,
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let (admission, ticket) = admit_request(
        &state,
        &team_id,
        &limits,
        estimate,
        &pricing,
        stream,
        CallEndpoint::Chat,
    )
    .await?;
    forward(&state, request, stream, ticket, admission, pricing).await
}

/// The body as a chat request: a JSON object with a `model` and an array of `messages`.
fn parse_chat_request(bytes: &[u8]) -> Result<(Map<String, Value>, String), OpenAiError> {
    let request: Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| OpenAiError::invalid_request(format!("Malformed JSON body: {e}")))?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| OpenAiError::invalid_request("`model` is required"))?;
    // The prompt passes through untouched (NUL included, as the upstream allows); the model name
    // is stored with the spend record, and PostgreSQL text cannot hold NUL.
    if model.contains('\0') {
        return Err(OpenAiError::invalid_request(
            "model must not contain NUL characters",
        ));
    }
    if !request.get("messages").is_some_and(Value::is_array) {
        return Err(OpenAiError::invalid_request("`messages` must be an array"));
    }
    Ok((request, model))
}

/// Sends the admitted request and passes the upstream's answer on, streamed when the client
/// asked for a stream and the upstream opened one; the ticket is settled at what it cost.
async fn forward(
    state: &AppState,
    mut request: Map<String, Value>,
    stream: bool,
    ticket: Ticket,
    admission: Option<Admission>,
    pricing: Pricing,
) -> Result<Response, OpenAiError> {
    let hide_usage_chunk = stream && !ask_for_usage_chunk(&mut request);
    let sent = state.engine.upstream().post(&Value::Object(request)).await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => return Err(relay::upstream_unreachable(ticket, e)),
    };
    if stream && response.status().is_success() {
        return Ok(relay::pass_on_stream(
            response,
            ticket,
            admission,
            pricing,
            hide_usage_chunk,
        ));
    }
    relay::pass_on_whole(response, ticket, admission, &pricing, |_| {}).await
}

/// Asks the upstream for a final usage chunk of the stream, so the cost is known when it ends;
/// whether the client asked for it too (it is passed on only then).
fn ask_for_usage_chunk(request: &mut Map<String, Value>) -> bool {
    let client_wants_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let options = request.entry("stream_options").or_insert_with(|| json!({}));
    if let Value::Object(options) = options {
        options.insert("include_usage".into(), Value::Bool(true));
    }
    client_wants_usage
}
