//! OpenAI-compatible endpoint for team keys: `POST /v1/chat/completions` (streaming or not) and
//! `GET /v1/models`. Requests pass through to the upstream unchanged apart from what must change;
//! only the team's `allowed_models` are reachable, and a USD budget (credits_allocated x
//! USD_PER_CREDIT) is enforced by admitting each request's estimated cost against this process's
//! slice of the budget before it is sent (see `crate::budget`).
//! Errors use OpenAI's shape so the SDKs raise their usual exception classes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use saasllm_shared::db::spend::Usage;
use saasllm_shared::domain::estimate::{self, OutputLimit};
use saasllm_shared::domain::limits::TeamLimits;
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::outcomes::CostSource;
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::CallEndpoint;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use saasllm_worker::reported_cost;

use crate::auth::Caller;
use crate::budget::Refusal;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::limits;
use crate::state::AppState;

#[path = "openai_usage.rs"]
pub(crate) mod usage;

use usage::{Pricing, StreamRecorder, UNKNOWN_MODEL_PRICE, usage_of};

/// Bodies above this size are tokenized on a blocking thread, off the async workers (a 4 KB
/// prompt takes a few hundred microseconds; 2 MB, about a second).
pub(crate) const TOKENIZE_INLINE_BYTES: usize = 64 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat_completions))
        .routes(routes!(models))
}

/// An error in OpenAI's wire shape.
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<&'static str>,
    /// The request field at fault, if one is.
    param: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl OpenAiError {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
            retry_after_secs: None,
        }
    }

    /// A 400 about one field of the request.
    pub(crate) fn invalid_field(field: &'static str, message: String) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("invalid_value"),
            message,
        );
        error.param = Some(field);
        error
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        let status = error.status();
        if let ApiError::Internal(cause) = &error {
            tracing::error!(error = ?cause, "request failed");
        }
        if let ApiError::TooManyRequests {
            detail,
            retry_after_secs,
        } = error
        {
            let mut limited = Self::new(status, "requests", Some("rate_limit_exceeded"), detail);
            limited.retry_after_secs = Some(retry_after_secs);
            return limited;
        }
        let (kind, code) = match status {
            StatusCode::UNAUTHORIZED => ("invalid_request_error", Some("invalid_api_key")),
            StatusCode::FORBIDDEN => ("permission_denied", None),
            StatusCode::NOT_FOUND => ("invalid_request_error", None),
            s if s.is_server_error() => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        Self::new(status, kind, code, error.to_string())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
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

/// The models the team's key may use (its `allowed_models`), in OpenAI's list shape.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, description = "OpenAI model list", body = serde_json::Value,
         example = json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "saasllm"}]})),
        (status = 401, description = "Missing or unknown key (OpenAI error shape)", body = serde_json::Value),
        (status = 403, description = "The admin key, or a suspended team (OpenAI error shape)", body = serde_json::Value),
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
        (status = 401, description = "Missing or unknown key (OpenAI error shape)", body = serde_json::Value),
        (status = 402, description = "Budget exceeded (OpenAI error shape)", body = serde_json::Value),
        (status = 403, description = "Model not allowed for the team, the admin key, or a suspended team (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id, model, request_id))]
async fn chat_completions(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Result<RawBody, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, limits) = team_of(caller)?;
    let RawBody(bytes) = body?;
    let request: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
        OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            format!("Malformed JSON body: {e}"),
        )
    })?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            OpenAiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "`model` is required",
            )
        })?;
    // The prompt passes through untouched (NUL included, as the upstream allows); the model name
    // is stored with the spend record, and PostgreSQL text cannot hold NUL.
    if model.contains('\0') {
        return Err(OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "model must not contain NUL characters",
        ));
    }
    if !request.get("messages").is_some_and(Value::is_array) {
        return Err(OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "`messages` must be an array",
        ));
    }
    let span = tracing::Span::current();
    span.record("team_id", team_id.as_str());
    span.record("model", model.as_str());

    // Tokenized before a pooled connection is taken: a large prompt takes milliseconds.
    let (mut request, prompt_tokens) = prompt_bound(request, &model, bytes.len()).await?;

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
    let output_limit = OutputLimit::from_config(&config);
    let output_tokens = estimate::output_bound(&request, output_limit)
        .map_err(|e| OpenAiError::invalid_field(e.field, e.message))?;
    estimate::hold_to_estimate(&mut request, output_limit);
    let estimate = pricing::cost_of_bounds(
        price.unwrap_or(UNKNOWN_MODEL_PRICE),
        prompt_tokens,
        output_tokens,
    )
    .max(MicroUsd(1));

    // Held until the response (or its stream) ends: a slot of the team's concurrency limit, and
    // the request counted in its requests per minute.
    let admission = limits::admit(&state, &team_id, &limits, true).await?;

    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);

    let ticket = match state
        .budgets
        .admit(
            &team_id,
            estimate.0,
            model.clone(),
            stream,
            CallEndpoint::Chat,
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

    let client_wants_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    if stream {
        // Ask the upstream for a final usage chunk so the cost is known when the stream ends;
        // it is passed on only to a client that asked for it.
        let options = request.entry("stream_options").or_insert_with(|| json!({}));
        if let Value::Object(options) = options {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    }
    let pricing = Pricing {
        model,
        config,
        price,
    };
    let sent = state.engine.upstream().post(&Value::Object(request)).await;
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

    if stream && status.is_success() {
        // The recorder lives as long as the body: the spend is recorded as soon as the usage
        // chunk has been read (before it and `[DONE]` reach the client, so a balance read right
        // after the stream includes it), or when the body is dropped early (client gone).
        let recorder = Arc::new(StreamRecorder::new(
            ticket,
            pricing,
            reported_cost,
            admission,
        ));
        let at_end = Arc::clone(&recorder);
        let hide_usage_chunk = !client_wants_usage;
        let body = response
            .bytes_stream()
            .then(move |chunk| {
                let recorder = Arc::clone(&recorder);
                async move {
                    let bytes = chunk.map_err(std::io::Error::other)?;
                    let (out, usage_seen) = {
                        let mut scan = recorder.scan.lock().unwrap_or_else(|p| p.into_inner());
                        (scan.pass_on(&bytes, hide_usage_chunk), scan.usage.is_some())
                    };
                    if usage_seen {
                        recorder.record();
                    }
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(out))
                }
            })
            .chain(futures::stream::once(async move {
                let rest = at_end.scan.lock().unwrap_or_else(|p| p.into_inner()).rest();
                at_end.record();
                Ok(axum::body::Bytes::from(rest))
            }));
        let mut response = Response::new(Body::from_stream(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            content_type.unwrap_or_else(|| HeaderValue::from_static("text/event-stream")),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        return Ok(response);
    }

    let bytes = response.bytes().await.map_err(|e| {
        OpenAiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            None,
            format!("Upstream response was cut off: {e}"),
        )
    });
    let usage = match &bytes {
        Ok(body) if status.is_success() => usage_of(
            serde_json::from_slice::<Value>(body).ok().as_ref(),
            &pricing,
            reported_cost,
        ),
        Ok(body) => Usage {
            http_status: Some(i32::from(status.as_u16())),
            error: Some(String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned()),
            cost_source: CostSource::PriceTable,
            ..Usage::default()
        },
        Err(e) => Usage {
            error: Some(e.message.clone()),
            cost_source: CostSource::PriceTable,
            ..Usage::default()
        },
    };
    if let Some(admission) = &admission {
        admission.count_tokens(usage.total_tokens.unwrap_or(0));
    }
    ticket.finish(usage);
    let bytes = bytes?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    Ok(response)
}

/// An upper bound of the request's prompt tokens (see `domain::estimate`). Large bodies, and the
/// first request of a model family (which builds its tokenizer), are tokenized on a blocking
/// thread; the request is handed back for sending.
async fn prompt_bound(
    request: Map<String, Value>,
    model: &str,
    body_bytes: usize,
) -> Result<(Map<String, Value>, u64), OpenAiError> {
    if body_bytes <= TOKENIZE_INLINE_BYTES && estimate::tokenizer_ready(model) {
        let bound = estimate::prompt_bound(model, &request);
        return Ok((request, bound));
    }
    let model = model.to_owned();
    tokio::task::spawn_blocking(move || {
        let bound = estimate::prompt_bound(&model, &request);
        (request, bound)
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("token estimate failed: {e}")).into())
}
