//! OpenAI embeddings for team keys: `POST /v1/embeddings`, passed through to the upstream
//! unchanged (`encoding_format`, `dimensions`, `user` and any other field included). Only the
//! team's allowed models are reachable. The request's worst-case cost, its input tokens at the
//! model's input price (embeddings bill no output), is admitted against the team's USD budget
//! before it is sent and settled at its actual cost, as an `embeddings` spend record.
//! Errors use OpenAI's shape, like the chat endpoint's.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use saasllm_shared::db::spend::Usage;
use saasllm_shared::domain::estimate;
use saasllm_shared::domain::estimate_embeddings::{MAX_EMBEDDING_INPUTS, embedding_input_bound};
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::outcomes::CostSource;
use saasllm_shared::domain::pricing::{self, UNKNOWN_MODEL_PRICE};
use saasllm_shared::domain::status::CallEndpoint;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use saasllm_worker::reported_cost;

use super::openai::usage::{Pricing, usage_of};
use super::openai::{OpenAiError, TOKENIZE_INLINE_BYTES, team_of};
use crate::auth::Caller;
use crate::budget::{Refusal, Ticket};
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::limits::{self, Admission};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(embeddings))
}

/// The body of `POST /v1/embeddings` as far as this service reads it: any other OpenAI
/// embeddings parameter is passed to the upstream unchanged.
#[derive(ToSchema)]
#[allow(dead_code)] // only its schema is used; the handler reads the body as JSON
pub struct EmbeddingsRequest {
    /// A model of one of the team's model groups.
    #[schema(min_length = 1)]
    model: String,
    #[schema(schema_with = input_schema)]
    input: serde_json::Value,
    /// Passed through to the upstream unchanged (OpenAI accepts `float` or `base64`).
    encoding_format: Option<String>,
    /// Dimensions of the vectors, for models that can shorten them; passed through to the
    /// upstream unchanged.
    dimensions: Option<i64>,
    /// An id of the end user, passed through to the upstream unchanged.
    user: Option<String>,
}

/// The `input` forms `embedding_input_bound` accepts. An array's items are all of one kind, so
/// each kind is its own array schema rather than one array of mixed items.
fn input_schema() -> Schema {
    let text = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
    };
    let token_id = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0u64))
            // Larger integers are not token ids: JSON numbers are read as 64-bit at most.
            .maximum(Some(u64::MAX))
    };
    let inputs = |item: RefOr<Schema>, description: &str| {
        ArrayBuilder::new()
            .items(item)
            .min_items(Some(1))
            .max_items(Some(MAX_EMBEDDING_INPUTS))
            .description(Some(description))
    };
    let token_list = ArrayBuilder::new().items(token_id()).min_items(Some(1));
    OneOfBuilder::new()
        .item(text().description(Some("One text.")))
        .item(inputs(text().into(), "Texts, one vector each."))
        .item(inputs(
            token_id().into(),
            "Token ids (non-negative integers): one pre-tokenized text.",
        ))
        .item(inputs(
            token_list.into(),
            "Pre-tokenized texts, each a non-empty array of token ids, one vector each.",
        ))
        .description(Some(format!(
            "A non-empty string, or an array of 1 to {MAX_EMBEDDING_INPUTS} items all of one \
             kind: non-empty strings, token ids, or non-empty arrays of token ids."
        )))
        .into()
}

/// OpenAI embeddings with the team's virtual key, passed through to the upstream. Only the
/// team's allowed models are reachable; each request's estimated cost is reserved against the
/// team's USD budget before it is sent and settled at its actual cost.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    request_body(content = EmbeddingsRequest, description = "An OpenAI embeddings request"),
    responses(
        (status = 200, description = "The upstream's embeddings", body = serde_json::Value),
        (status = 400, description = "Invalid body, `model` or `input` (OpenAI error shape)", body = serde_json::Value),
        (status = 401, description = "Missing or unknown key (OpenAI error shape)", body = serde_json::Value),
        (status = 402, description = "Budget exceeded (OpenAI error shape)", body = serde_json::Value),
        (status = 403, description = "Model not allowed for the team, the admin key, or a suspended team (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id, model, request_id))]
async fn embeddings(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Result<RawBody, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, limits) = team_of(caller)?;
    let RawBody(bytes) = body?;
    let request = parse_object(&bytes)?;
    let model = model_of(&request)?;
    let span = tracing::Span::current();
    span.record("team_id", team_id.as_str());
    span.record("model", model.as_str());

    // Tokenized before a pooled connection is taken: a large input takes milliseconds.
    let (request, input_tokens) = input_bound(request, &model, bytes.len()).await?;

    // The model's price config in the team's groups; none means the model is not allowed.
    let grants = state
        .directory
        .grants(&team_id)
        .await
        .map_err(ApiError::from)?;
    let Some(config) = grants.model_config(&model).cloned() else {
        return Err(OpenAiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            Some("model_not_allowed"),
            format!(
                "Model '{model}' is not allowed for team '{team_id}'. Allowed models: {}",
                grants.allowed_models().join(", ")
            ),
        ));
    };
    let price = pricing::price_for(&model, &config);
    let estimate = pricing::cost_of_bounds(price.unwrap_or(UNKNOWN_MODEL_PRICE), input_tokens, 0)
        .max(MicroUsd(1));

    // Held until the response is read: a slot of the team's concurrency limit, and the request
    // counted in its requests per minute.
    let admission = limits::admit(&state, &team_id, &limits, true).await?;
    let ticket = match state
        .budgets
        .admit(
            &team_id,
            estimate.0,
            model.clone(),
            false,
            CallEndpoint::Embeddings,
        )
        .await
    {
        Ok(ticket) => ticket,
        Err(Refusal::OverBudget) => {
            return Err(OpenAiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                Some("budget_exceeded"),
                format!(
                    "Budget exceeded for team '{team_id}': this request could cost up to ${estimate}, more than what is left of the budget. Add credits to raise it."
                ),
            ));
        }
        Err(Refusal::Database(e)) => return Err(ApiError::from(e).into()),
    };
    span.record("request_id", tracing::field::display(ticket.request_id()));
    let pricing = Pricing {
        model,
        config,
        price,
    };
    forward(&state, request, ticket, admission, &pricing).await
}

/// Sends the request, settles its ticket at what it cost, and passes the upstream's answer on
/// (status, body and content type).
async fn forward(
    state: &AppState,
    request: Map<String, Value>,
    ticket: Ticket,
    admission: Option<Admission>,
    pricing: &Pricing,
) -> Result<Response, OpenAiError> {
    let sent = state
        .engine
        .upstream()
        .post_embeddings(&Value::Object(request))
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            ticket.finish(Usage {
                error: Some(e.to_string()),
                cost_source: CostSource::PriceTable,
                ..Usage::default()
            });
            return Err(OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                None,
                format!("Upstream request failed: {e}"),
            ));
        }
    };
    let status = response.status();
    let reported_cost = reported_cost(&response);
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("Upstream response was cut off: {e}"));
    let usage = match &bytes {
        Ok(body) if status.is_success() => {
            let body = serde_json::from_slice::<Value>(body).ok();
            let mut usage = usage_of(body.as_ref(), pricing, reported_cost);
            // Embeddings bill their input only.
            usage.completion_tokens = Some(0);
            usage.total_tokens = usage.total_tokens.or(usage.prompt_tokens);
            usage
        }
        Ok(body) => Usage {
            http_status: Some(i32::from(status.as_u16())),
            error: Some(String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned()),
            cost_source: CostSource::PriceTable,
            ..Usage::default()
        },
        Err(message) => Usage {
            error: Some(message.clone()),
            cost_source: CostSource::PriceTable,
            ..Usage::default()
        },
    };
    if let Some(admission) = &admission {
        admission.count_tokens(usage.total_tokens.unwrap_or(0));
    }
    ticket.finish(usage);
    let bytes = bytes.map_err(|message| {
        OpenAiError::new(StatusCode::BAD_GATEWAY, "server_error", None, message)
    })?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    Ok(response)
}

/// The body as a JSON object (an array or a scalar is refused, as OpenAI refuses it).
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, OpenAiError> {
    let invalid = |message: String| {
        OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(request)) => Ok(request),
        Ok(_) => Err(invalid("The body must be a JSON object".to_owned())),
        Err(e) => Err(invalid(format!("Malformed JSON body: {e}"))),
    }
}

/// The `model` field: a string without NUL (the model name is stored with the spend record, and
/// PostgreSQL text cannot hold NUL; the input passes through untouched, NUL included).
fn model_of(request: &Map<String, Value>) -> Result<String, OpenAiError> {
    match request.get("model") {
        Some(Value::String(model)) if model.contains('\0') => Err(OpenAiError::invalid_field(
            "model",
            "model must not contain NUL characters".to_owned(),
        )),
        Some(Value::String(model)) if !model.is_empty() => Ok(model.clone()),
        _ => Err(OpenAiError::invalid_field(
            "model",
            "`model` is required: the name of one of the team's models".to_owned(),
        )),
    }
}

/// The input's upper bound of tokens, or a 400 naming what is wrong with it. Large bodies, and
/// the first request of a model family (which builds its tokenizer), are counted on a blocking
/// thread; the request is handed back for sending.
async fn input_bound(
    request: Map<String, Value>,
    model: &str,
    body_bytes: usize,
) -> Result<(Map<String, Value>, u64), OpenAiError> {
    let bound = |model: &str, request: &Map<String, Value>| {
        embedding_input_bound(model, request.get("input").unwrap_or(&Value::Null))
            .map_err(|e| OpenAiError::invalid_field(e.field, e.message))
    };
    if body_bytes <= TOKENIZE_INLINE_BYTES && estimate::tokenizer_ready(model) {
        let tokens = bound(model, &request)?;
        return Ok((request, tokens));
    }
    let model = model.to_owned();
    let (request, tokens) = tokio::task::spawn_blocking(move || {
        let tokens = bound(&model, &request);
        (request, tokens)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("token estimate failed: {e}")))?;
    Ok((request, tokens?))
}
