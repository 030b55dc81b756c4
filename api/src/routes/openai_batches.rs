//! OpenAI's Batch API on the team key: `POST /v1/batches` takes an uploaded JSONL file of
//! chat-completion or embeddings requests, `GET /v1/batches[/{id}]` shows progress and
//! `POST /v1/batches/{id}/cancel` withdraws what has not run. The batch runs as a job of the
//! team (visible in the job API and the console); workers validate it, run its lines with fair
//! dispatch, per-team limits and model-group fallback, and write its output and error files
//! (see the worker's `batches` module). Each line's estimated cost is reserved against the
//! team's USD budget when it is validated and settled to its actual cost when the batch ends.

use axum::extract::State;
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::batches::{BatchRow, Cancel, NewBatch};
use saasllm_shared::domain::batch_api::{BatchEndpoint, FilePurpose};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query, RawBody, parse_json};
use crate::openai::admission::team_of;
use crate::openai::batch_progress::progress;
use crate::openai::{KeyRefusals, OpenAiError};
use crate::state::AppState;

/// The only completion window OpenAI offers, and its length.
const COMPLETION_WINDOW: &str = "24h";
const WINDOW_SECS: f64 = 24.0 * 3_600.0;
/// OpenAI's metadata bounds: pairs, key length, value length.
const METADATA_PAIRS: usize = 16;
const METADATA_KEY_CHARS: usize = 64;
const METADATA_VALUE_CHARS: usize = 512;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_batch, list_batches))
        .routes(routes!(get_batch))
        .routes(routes!(cancel_batch))
}

/// A batch to create, as OpenAI's SDKs send it.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the body; the handler reads it field by field for OpenAI's errors
struct CreateBatch {
    /// An uploaded file of the team with purpose `batch`.
    input_file_id: String,
    /// `/v1/chat/completions` or `/v1/embeddings`; every line's `url` must be this.
    #[schema(pattern = "^/v1/(chat/completions|embeddings)$")]
    endpoint: String,
    /// Only `24h`.
    #[schema(pattern = "^24h$")]
    completion_window: String,
    /// Up to 16 string pairs (keys up to 64 characters, values up to 512).
    #[schema(value_type = Option<HashMap<String, String>>)]
    metadata: Option<Value>,
}

/// Creates a batch from an uploaded file. It starts `validating`; a worker then checks the file
/// and queues its lines (`in_progress`), or fails it with `errors` when the file is malformed.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "openai",
    request_body = CreateBatch,
    responses(
        (status = 200, description = "The batch, validating", body = serde_json::Value),
        (status = 400, description = "Invalid request (OpenAI error shape)", body = serde_json::Value),
        KeyRefusals,
        (status = 404, description = "No such input file for the team (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
async fn create_batch(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    body: Result<RawBody, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, _) = team_of(caller)?;
    let RawBody(bytes) = body?;
    // Refuses a NUL anywhere, naming the field (PostgreSQL cannot store it).
    let request: Map<String, Value> = parse_json(&bytes)?;
    let text = |field: &'static str| match request.get(field) {
        Some(Value::String(text)) if !text.contains('\0') => Ok(text.as_str()),
        _ => Err(invalid(field, format!("`{field}` must be a string"))),
    };
    let requested_endpoint = text("endpoint")?;
    let Some(endpoint) = BatchEndpoint::from_path(requested_endpoint) else {
        return Err(invalid(
            "endpoint",
            format!(
                "Unsupported endpoint '{requested_endpoint}': a batch runs /v1/chat/completions or /v1/embeddings"
            ),
        ));
    };
    let window = text("completion_window")?;
    if window != COMPLETION_WINDOW {
        return Err(invalid(
            "completion_window",
            format!("completion_window must be '{COMPLETION_WINDOW}', not '{window}'"),
        ));
    }
    let metadata = match request.get("metadata") {
        None | Some(Value::Null) => None,
        Some(value) => Some(checked_metadata(value)?),
    };
    let input_file_id = text("input_file_id")?;
    let file = db::files::find(&state.db, &team_id, input_file_id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| OpenAiError::not_found(format!("No such File object: {input_file_id}")))?;
    if file.purpose != FilePurpose::Batch {
        return Err(invalid(
            "input_file_id",
            format!(
                "File '{input_file_id}' has purpose '{}'; a batch needs a file uploaded with purpose 'batch'",
                file.purpose
            ),
        ));
    }
    let batch_id = db::batches::new_batch_id();
    let mut conn = state.db.acquire().await.map_err(ApiError::from)?;
    let row = db::batches::insert(
        &mut conn,
        &NewBatch {
            batch_id: &batch_id,
            team_id: &team_id,
            endpoint,
            input_file_id,
            completion_window: window,
            window_secs: WINDOW_SECS,
            metadata: metadata.as_ref(),
            usd_per_credit_micro: state.settings.usd_per_credit.0,
        },
    )
    .await
    .map_err(ApiError::from)?;
    Ok(Json(batch_object(&row, (0, 0))).into_response())
}

/// Metadata as OpenAI bounds it: up to 16 string pairs.
fn checked_metadata(value: &Value) -> Result<Value, OpenAiError> {
    let problem = || {
        invalid(
            "metadata",
            format!(
                "metadata must be an object of up to {METADATA_PAIRS} string pairs: keys up to {METADATA_KEY_CHARS} characters, values up to {METADATA_VALUE_CHARS}, without NUL"
            ),
        )
    };
    let Value::Object(pairs) = value else {
        return Err(problem());
    };
    let fits = pairs.len() <= METADATA_PAIRS
        && pairs.iter().all(|(key, value)| {
            key.chars().count() <= METADATA_KEY_CHARS
                && !key.contains('\0')
                && value
                    .as_str()
                    .is_some_and(|v| v.chars().count() <= METADATA_VALUE_CHARS && !v.contains('\0'))
        });
    if fits {
        Ok(value.clone())
    } else {
        Err(problem())
    }
}

/// A batch of the team, with its progress.
#[utoipa::path(
    get,
    path = "/v1/batches/{batch_id}",
    tag = "openai",
    params(("batch_id" = String, Path, description = "The batch's id")),
    responses(
        (status = 200, description = "The batch", body = serde_json::Value),
        (status = 404, description = "No such batch for the team (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
async fn get_batch(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    batch_id: Result<Path<String>, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, batch_id) = team_and_batch_id(caller, batch_id)?;
    let row = db::batches::find(&state.db, &team_id, &batch_id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| no_batch(&batch_id))?;
    batch_answer(&state, &row).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The last batch id of the previous page.
    after: Option<String>,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The team's batches, newest first, in OpenAI's list shape.
#[utoipa::path(
    get,
    path = "/v1/batches",
    tag = "openai",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of batches", body = serde_json::Value),
        (status = 400, description = "Invalid limit (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
async fn list_batches(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    query: Result<Query<ListQuery>, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, _) = team_of(caller)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("limit", "limit must be between 1 and 100".into()));
    }
    let after = query.after.as_deref().filter(|a| !a.is_empty());
    if after.is_some_and(|a| a.contains('\0')) {
        return Err(invalid("after", "after must be a batch id".into()));
    }
    let mut rows = db::batches::list(&state.db, &team_id, after, limit + 1)
        .await
        .map_err(ApiError::from)?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let mut data = Vec::with_capacity(rows.len());
    for row in &rows {
        let counts = progress(&state.db, row).await.map_err(ApiError::from)?;
        data.push(batch_object(row, counts));
    }
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "first_id": rows.first().map(|r| &r.batch_id),
        "last_id": rows.last().map(|r| &r.batch_id),
        "has_more": has_more,
    }))
    .into_response())
}

/// Cancels a batch: lines not yet running are withdrawn at once (they never run and cost
/// nothing); lines running finish; the batch is `cancelling` until a worker has written its
/// files, then `cancelled`. Repeating it changes nothing.
#[utoipa::path(
    post,
    path = "/v1/batches/{batch_id}/cancel",
    tag = "openai",
    params(("batch_id" = String, Path, description = "The batch's id")),
    responses(
        (status = 200, description = "The batch, cancelling", body = serde_json::Value),
        (status = 404, description = "No such batch for the team (OpenAI error shape)", body = serde_json::Value),
        (status = 409, description = "The batch has already ended (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
async fn cancel_batch(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    batch_id: Result<Path<String>, ApiError>,
) -> Result<Response, OpenAiError> {
    let (team_id, batch_id) = team_and_batch_id(caller, batch_id)?;
    let mut tx = state.db.begin().await.map_err(ApiError::from)?;
    let cancelled = db::batches::cancel(&mut tx, &team_id, &batch_id)
        .await
        .map_err(ApiError::from)?;
    tx.commit().await.map_err(ApiError::from)?;
    match cancelled {
        Cancel::Cancelling(row) => batch_answer(&state, &row).await,
        Cancel::Ended(row) => Err(OpenAiError::new(
            axum::http::StatusCode::CONFLICT,
            "invalid_request_error",
            None,
            format!(
                "Batch '{batch_id}' has already ended ({}); it cannot be cancelled",
                row.status.as_str()
            ),
        )),
        Cancel::NotFound => Err(no_batch(&batch_id)),
    }
}

/// The caller's team and the batch id of the path. Ids are `batch_` and 32 hex digits; anything
/// else is not looked up, and is the same 404 as a batch that does not exist.
fn team_and_batch_id(
    caller: Result<Caller, ApiError>,
    batch_id: Result<Path<String>, ApiError>,
) -> Result<(String, String), OpenAiError> {
    let (team_id, _) = team_of(caller)?;
    let Path(batch_id) = batch_id?;
    let plausible = batch_id.len() <= 64
        && batch_id.starts_with("batch_")
        && batch_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plausible {
        return Err(no_batch(&batch_id));
    }
    Ok((team_id, batch_id))
}

/// The answer about one batch: the batch with its progress.
async fn batch_answer(state: &AppState, row: &BatchRow) -> Result<Response, OpenAiError> {
    let counts = progress(&state.db, row).await.map_err(ApiError::from)?;
    Ok(Json(batch_object(row, counts)).into_response())
}

/// A batch in OpenAI's shape (times in unix seconds), plus the id of the job it runs as.
fn batch_object(row: &BatchRow, (completed, failed): (i64, i64)) -> Value {
    let at = |time: Option<DateTime<Utc>>| time.map(|t| t.timestamp());
    let errors = row
        .errors
        .as_ref()
        .map(|data| json!({"object": "list", "data": data}));
    json!({
        "id": row.batch_id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": errors,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": row.created_at.timestamp(),
        "in_progress_at": at(row.in_progress_at),
        "expires_at": row.expires_at.timestamp(),
        "finalizing_at": at(row.finalizing_at),
        "completed_at": at(row.completed_at),
        "failed_at": at(row.failed_at),
        "expired_at": at(row.expired_at),
        "cancelling_at": at(row.cancelling_at),
        "cancelled_at": at(row.cancelled_at),
        "request_counts": {"total": row.total_lines, "completed": completed, "failed": failed},
        "metadata": row.metadata,
        "job_id": row.job_id,
    })
}

fn invalid(param: &'static str, message: String) -> OpenAiError {
    OpenAiError::invalid_field(param, message)
}

fn no_batch(batch_id: &str) -> OpenAiError {
    OpenAiError::not_found(format!("No batch found with id '{batch_id}'"))
}
