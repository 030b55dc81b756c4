//! OpenAI embeddings for team keys: `POST /v1/embeddings`, passed through to the upstream
//! unchanged (`encoding_format`, `dimensions`, `user` and any other field included). Only the
//! team's allowed models are reachable. The request's worst-case cost, its input tokens at the
//! model's input price (embeddings bill no output), is admitted against the team's USD budget
//! before it is sent and settled at its actual cost, as an `embeddings` spend record.
//! Errors use OpenAI's shape, like the chat endpoint's.

use axum::extract::State;
use axum::response::Response;
use saasllm_shared::domain::estimate_embeddings::{MAX_EMBEDDING_INPUTS, embedding_input_bound};
use saasllm_shared::domain::pricing;
use saasllm_shared::domain::status::CallEndpoint;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::openai::admission::{
    admit_request, count_tokens, model_config, team_and_body, trace_team_model, worst_case_cost,
};
use crate::openai::relay;
use crate::openai::usage::{Pricing, bill_input_only};
use crate::openai::{ModelRefusals, OpenAiError};
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
        ModelRefusals,
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id, model, request_id))]
async fn embeddings(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Result<RawBody, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, limits, bytes) = team_and_body(caller, body)?;
    let request = parse_object(&bytes)?;
    let model = model_of(&request)?;
    trace_team_model(&team_id, &model);

    // Tokenized before a pooled connection is taken: a large input takes milliseconds.
    let (request, input_tokens) = count_tokens(request, &model, bytes.len(), input_bound).await?;
    let input_tokens = input_tokens?;
    let config = model_config(&state, &team_id, &model).await?;
    let price = pricing::price_for(&model, &config);
    // Embeddings bill no output.
    let estimate = worst_case_cost(price, input_tokens, 0);

    let pricing = Pricing {
        model,
        config,
        price,
    };
    let endpoint = CallEndpoint::Embeddings;
    let (admission, ticket) = admit_request(
        &state, &team_id, &limits, estimate, &pricing, false, endpoint,
    )
    .await?;
    let sent = state
        .engine
        .upstream()
        .post_embeddings(&Value::Object(request))
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => return Err(relay::upstream_unreachable(ticket, e)),
    };
    relay::pass_on_whole(response, ticket, admission, &pricing, bill_input_only).await
}

/// The body as a JSON object (an array or a scalar is refused, as OpenAI refuses it).
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, OpenAiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(request)) => Ok(request),
        Ok(_) => Err(OpenAiError::invalid_request(
            "The body must be a JSON object",
        )),
        Err(e) => Err(OpenAiError::invalid_request(format!(
            "Malformed JSON body: {e}"
        ))),
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

/// The input's upper bound of tokens, or a 400 naming what is wrong with it.
fn input_bound(model: &str, request: &Map<String, Value>) -> Result<u64, OpenAiError> {
    embedding_input_bound(model, request.get("input").unwrap_or(&Value::Null))
        .map_err(|e| OpenAiError::invalid_field(e.field, e.message))
}
