//! OpenAI's Files API on a team's virtual key: `POST /v1/files` (multipart upload, purpose
//! `batch`), `GET /v1/files`, `GET` and `DELETE /v1/files/{file_id}` and
//! `GET /v1/files/{file_id}/content`. Files hold the input of the Batch API and, with purpose
//! `batch_output`, the results the service writes; both are read and deleted the same way.
//!
//! Content is streamed both ways one piece at a time (stored in 1 MiB chunks, see
//! `saasllm_shared::db::files`), so a 200 MB file never sits whole in memory. An upload is
//! written in one transaction: the file is whole or absent. Only the size is checked at upload
//! (and that the content is not empty): lines are validated when a batch reads the file, so a
//! malformed file can be uploaded and its batch fails at validation, as with OpenAI.

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use saasllm_shared::db::files::{self, FileRow};
use saasllm_shared::domain::batch_api;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openai::admission::team_of;
use crate::openai::{KeyRefusals, OpenAiError};
use crate::state::AppState;

/// Longest `purpose` or `after` of a list query (a file id has 37 characters).
const MAX_QUERY_TEXT_CHARS: usize = 64;
/// OpenAI's default and largest page of `GET /v1/files`.
const MAX_LIST_LIMIT: i64 = 10_000;

#[path = "openai_files_upload.rs"]
mod upload;

pub use upload::raise_body_limit;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload::create_file, list_files))
        .routes(routes!(get_file, delete_file))
        .routes(routes!(file_content))
}

/// `object` of a file and of a deleted file.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum FileKind {
    File,
}

/// `object` of a list.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ListKind {
    List,
}

/// A file's `status`: stored files are always ready.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum FileStatus {
    Processed,
}

/// What a file is for: `batch` (uploaded input) or `batch_output` (written by the service).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum FilePurpose {
    Batch,
    BatchOutput,
}

/// OpenAI's file object.
#[derive(Serialize, ToSchema)]
struct FileObject {
    #[schema(example = "file-0193f2a4c1d27b5e8f3a9c0d1e2f3a4b")]
    id: String,
    object: FileKind,
    /// Size of the content in bytes.
    bytes: i64,
    /// Unix seconds.
    created_at: i64,
    filename: String,
    purpose: FilePurpose,
    status: FileStatus,
    /// Always null (kept for OpenAI's shape).
    #[schema(value_type = Option<String>, required = true)]
    status_details: Option<()>,
    /// Always null: files are kept until deleted.
    #[schema(value_type = Option<i64>, required = true)]
    expires_at: Option<()>,
}

impl From<FileRow> for FileObject {
    fn from(row: FileRow) -> Self {
        Self {
            purpose: match row.purpose {
                batch_api::FilePurpose::Batch => FilePurpose::Batch,
                batch_api::FilePurpose::BatchOutput => FilePurpose::BatchOutput,
            },
            id: row.file_id,
            object: FileKind::File,
            bytes: row.bytes,
            created_at: row.created_at.timestamp(),
            filename: row.filename,
            status: FileStatus::Processed,
            status_details: None,
            expires_at: None,
        }
    }
}

/// A page of files in OpenAI's list shape.
#[derive(Serialize, ToSchema)]
struct FileList {
    object: ListKind,
    data: Vec<FileObject>,
    /// Null on an empty page.
    #[schema(required = true)]
    first_id: Option<String>,
    #[schema(required = true)]
    last_id: Option<String>,
    has_more: bool,
}

/// The answer to a deletion.
#[derive(Serialize, ToSchema)]
struct DeletedFile {
    id: String,
    object: FileKind,
    deleted: bool,
}

/// The file's content, byte for byte.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // only its schema is used; the content is streamed
struct FileContent(Vec<u8>);

/// Which end of the list comes first.
#[derive(Deserialize, ToSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Order {
    Asc,
    #[default]
    Desc,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only files of this purpose (`batch` or `batch_output`; any other matches none).
    #[param(max_length = 64)]
    purpose: Option<String>,
    /// Files per page, 1..=10000, default 10000.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    /// A file id: the page starts after it, in the order asked.
    #[param(max_length = 64)]
    after: Option<String>,
    /// By creation: `desc` (newest first, the default) or `asc`.
    #[param(inline)]
    order: Option<Order>,
}

/// The team's files, newest first by default, in OpenAI's list shape.
#[utoipa::path(
    get,
    path = "/v1/files",
    tag = "openai",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of the team's files", body = FileList),
        (status = 400, description = "A malformed query (OpenAI error shape)", body = serde_json::Value),
        KeyRefusals,
    ),
    security(("bearer" = []))
)]
async fn list_files(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, OpenAiError> {
    let (team_id, _) = team_of(caller)?;
    let Query(query) = query.map_err(|e| OpenAiError::invalid_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(MAX_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIST_LIMIT}"),
        ));
    }
    // PostgreSQL text cannot hold NUL, and no purpose or file id contains one.
    for (param, value) in [("purpose", &query.purpose), ("after", &query.after)] {
        if value
            .as_deref()
            .is_some_and(|v| v.chars().count() > MAX_QUERY_TEXT_CHARS || v.contains('\0'))
        {
            return Err(invalid(
                param,
                format!("{param} must have at most {MAX_QUERY_TEXT_CHARS} characters and no NUL"),
            ));
        }
    }
    let ascending = query.order.unwrap_or_default() == Order::Asc;
    let mut rows = files::list(
        &state.db,
        &team_id,
        query.purpose.as_deref(),
        query.after.as_deref(),
        ascending,
        limit + 1,
    )
    .await
    .map_err(ApiError::from)?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data: Vec<FileObject> = rows.into_iter().map(FileObject::from).collect();
    Ok(Json(FileList {
        object: ListKind::List,
        first_id: data.first().map(|file| file.id.clone()),
        last_id: data.last().map(|file| file.id.clone()),
        data,
        has_more,
    })
    .into_response())
}

/// The team's file named in the path; another team's file, or an id that cannot be one, is the
/// same 404 as a missing file.
async fn owned_file(
    state: &AppState,
    caller: Result<Caller, ApiError>,
    file_id: Result<Path<String>, PathRejection>,
) -> Result<FileRow, OpenAiError> {
    let (team_id, _) = team_of(caller)?;
    let file_id = file_id.map(|Path(id)| id).unwrap_or_default();
    let well_formed = file_id.len() <= 64
        && file_id.starts_with("file-")
        && file_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let found = if well_formed {
        files::find(&state.db, &team_id, &file_id)
            .await
            .map_err(ApiError::from)?
    } else {
        None
    };
    found.ok_or_else(|| not_found(&file_id))
}

fn not_found(file_id: &str) -> OpenAiError {
    OpenAiError::not_found(format!("No such File object: {file_id}"))
}

/// One of the team's files.
#[utoipa::path(
    get,
    path = "/v1/files/{file_id}",
    tag = "openai",
    params(("file_id" = String, Path, description = "A file id (`file-...`)")),
    responses(
        (status = 200, description = "The file", body = FileObject),
        KeyRefusals,
        (status = 404, description = "No such file of the team (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
async fn get_file(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    file_id: Result<Path<String>, PathRejection>,
) -> Result<Response, OpenAiError> {
    let row = owned_file(&state, caller, file_id).await?;
    Ok(Json(FileObject::from(row)).into_response())
}

/// Deletes one of the team's files and its content.
#[utoipa::path(
    delete,
    path = "/v1/files/{file_id}",
    tag = "openai",
    params(("file_id" = String, Path, description = "A file id (`file-...`)")),
    responses(
        (status = 200, description = "The file is deleted", body = DeletedFile),
        KeyRefusals,
        (status = 404, description = "No such file of the team (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
async fn delete_file(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    file_id: Result<Path<String>, PathRejection>,
) -> Result<Response, OpenAiError> {
    let row = owned_file(&state, caller, file_id).await?;
    // A concurrent deletion may win between the lookup and here: then it is already gone.
    if !files::delete(&state.db, &row.team_id, &row.file_id)
        .await
        .map_err(ApiError::from)?
    {
        return Err(not_found(&row.file_id));
    }
    Ok(Json(DeletedFile {
        id: row.file_id,
        object: FileKind::File,
        deleted: true,
    })
    .into_response())
}

/// The content of one of the team's files, byte for byte, streamed one stored chunk at a time.
#[utoipa::path(
    get,
    path = "/v1/files/{file_id}/content",
    tag = "openai",
    params(("file_id" = String, Path, description = "A file id (`file-...`)")),
    responses(
        (status = 200, description = "The content", content_type = "application/octet-stream", body = FileContent),
        KeyRefusals,
        (status = 404, description = "No such file of the team (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
async fn file_content(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    file_id: Result<Path<String>, PathRejection>,
) -> Result<Response, OpenAiError> {
    let row = owned_file(&state, caller, file_id).await?;
    let db = state.db.clone();
    let file_id = row.file_id;
    // Each chunk is read when the client is ready for it. A file deleted meanwhile ends the
    // stream short of the Content-Length, so the client sees a broken transfer, never a file
    // that looks complete.
    let chunks = futures::stream::try_unfold(0_i32, move |seq| {
        let db = db.clone();
        let file_id = file_id.clone();
        async move {
            let data = files::chunk(&db, &file_id, seq).await?;
            Ok::<_, sqlx::Error>(data.map(|data| (Bytes::from(data), seq + 1)))
        }
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(row.bytes));
    Ok(response)
}

fn invalid(param: &'static str, message: impl Into<String>) -> OpenAiError {
    OpenAiError::invalid_field(param, message.into())
}
