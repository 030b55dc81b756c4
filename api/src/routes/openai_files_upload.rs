//! `POST /v1/files`: a multipart upload streamed into storage one piece at a time, in one
//! transaction (the file is whole or absent), refused as soon as it passes 200 MiB.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use saasllm_shared::db::files::{self, ChunkWriter};
use sqlx::{PgConnection, Postgres, Transaction};
use tower::{Layer, ServiceExt};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

use super::{FileObject, invalid};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::openai::admission::team_of;
use crate::openai::{KeyRefusals, OpenAiError};
use crate::state::AppState;

/// Largest file accepted (OpenAI's limit for a batch input file).
pub const MAX_FILE_BYTES: i64 = 200 * 1024 * 1024;
/// Body limit of an upload: the file plus room for the multipart framing and `purpose`.
pub const UPLOAD_BODY_LIMIT: usize = MAX_FILE_BYTES as usize + 1024 * 1024;
const MAX_FILENAME_CHARS: usize = 512;
/// Longest `purpose` value read; anything longer is not a purpose.
const MAX_PURPOSE_BYTES: usize = 64;

/// Raises the body limit for `POST /v1/files` only, both the `BodyLimit` the other layers read
/// and the limit the multipart extractor applies while the upload streams in. Runs before the
/// `Idempotency-Key` layer, like `bulk_calls::raise_body_limit` (that layer lets multipart
/// bodies through unread).
pub async fn raise_body_limit(mut request: Request, next: Next) -> Response {
    if request.method() != Method::POST || request.uri().path() != "/v1/files" {
        return next.run(request).await;
    }
    request
        .extensions_mut()
        .insert(BodyLimit(UPLOAD_BODY_LIMIT));
    match DefaultBodyLimit::max(UPLOAD_BODY_LIMIT)
        .layer(next)
        .oneshot(request)
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The multipart body of `POST /v1/files`, as the OpenAI SDKs send it: `file` and `purpose`.
/// Other fields are ignored if their names are plain ASCII (`[A-Za-z0-9_.\[\]-]+`, as in the
/// SDKs' `expires_after[anchor]`); any other name is refused.
struct FileUpload;

impl utoipa::PartialSchema for FileUpload {
    fn schema() -> RefOr<Schema> {
        let file = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .min_length(Some(1))
            .description(Some(
                "The content (at most 200 MiB, not empty), sent with a filename of 1 to 512 \
                 characters and no control characters. Lines are checked when a batch reads it.",
            ));
        let purpose = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["batch"]))
            .description(Some(
                "Only `batch` (`batch_output` files are written by the service).",
            ));
        let field_name = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[A-Za-z0-9_.\[\]-]+$"));
        ObjectBuilder::new()
            .property("file", file)
            .required("file")
            .property("purpose", purpose)
            .required("purpose")
            .property_names(Some(field_name))
            .into()
    }
}

impl ToSchema for FileUpload {}

/// Uploads a file of JSONL requests for the Batch API (`purpose=batch`), streamed to storage.
#[utoipa::path(
    post,
    path = "/v1/files",
    tag = "openai",
    request_body(content = FileUpload, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored file", body = FileObject),
        (status = 400, description = "Not a multipart body, `file` or `purpose` missing, a purpose other than `batch`, an empty file or a bad filename (OpenAI error shape)", body = serde_json::Value),
        KeyRefusals,
        (status = 413, description = "The file is larger than 200 MiB; nothing was stored (OpenAI error shape)", body = serde_json::Value),
        (status = 429, description = "Too many uploads of the team (or of this process) are streaming at once (OpenAI error shape)", body = serde_json::Value),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id, file_id))]
pub(super) async fn create_file(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, OpenAiError> {
    let (team_id, _) = team_of(caller)?;
    let mut multipart = multipart.map_err(|e| {
        invalid(
            "file",
            format!("Expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    let file_id = files::new_file_id();
    let span = tracing::Span::current();
    span.record("team_id", team_id.as_str());
    span.record("file_id", file_id.as_str());

    let mut upload = Upload::new(team_id, file_id);
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        upload.read_field(&state, &mut field).await?;
    }
    let row = upload.finish().await?;
    Ok(Json(FileObject::from(row)).into_response())
}

/// What the body has brought so far, field by field.
struct Upload {
    // Declared first so that a refused upload gives its place back before its connection.
    /// Held while the content streams in (with the transaction's connection).
    slot: Option<UploadSlot>,
    /// Starts with the file's content, so a body that is refused before it holds no connection.
    tx: Option<Transaction<'static, Postgres>>,
    writer: Option<ChunkWriter>,
    purpose_seen: bool,
    team_id: String,
    file_id: String,
}

impl Upload {
    fn new(team_id: String, file_id: String) -> Self {
        Self {
            slot: None,
            tx: None,
            writer: None,
            purpose_seen: false,
            team_id,
            file_id,
        }
    }

    /// Takes in one multipart field: `purpose` is checked, `file` is stored, other plainly
    /// named fields are skipped.
    async fn read_field(
        &mut self,
        state: &AppState,
        field: &mut Field<'_>,
    ) -> Result<(), OpenAiError> {
        match field.name() {
            Some("purpose") if self.purpose_seen => {
                Err(invalid("purpose", "`purpose` was sent twice"))
            }
            Some("purpose") => {
                // Checked as soon as it is read: sent after the file, a wrong purpose drops the
                // transaction and with it everything written.
                check_purpose(&read_short_text(field).await?)?;
                self.purpose_seen = true;
                Ok(())
            }
            Some("file") if self.writer.is_some() => Err(invalid("file", "`file` was sent twice")),
            Some("file") => self.store_file(state, field).await,
            // Other fields are ignored, as OpenAI does (their data is skipped unread), if their
            // names are the plain ASCII that the document allows.
            name if name.is_some_and(plain_field_name) => Ok(()),
            _ => Err(OpenAiError::invalid_request(
                "Every multipart field needs a name of ASCII letters, digits and `_.[]-`",
            )),
        }
    }

    /// Takes an upload place, opens the transaction and streams the `file` field into it.
    async fn store_file(
        &mut self,
        state: &AppState,
        field: &mut Field<'_>,
    ) -> Result<(), OpenAiError> {
        let filename = checked_filename(field.file_name())?;
        self.slot = Some(UploadSlot::take(&self.team_id)?);
        let conn = match &mut self.tx {
            Some(tx) => tx,
            None => self
                .tx
                .insert(state.db.begin().await.map_err(ApiError::from)?),
        };
        let started = ChunkWriter::start(
            conn,
            &self.file_id,
            &self.team_id,
            saasllm_shared::domain::batch_api::FilePurpose::Batch,
            &filename,
        )
        .await;
        let mut file = started.map_err(ApiError::from)?;
        store_content(field, conn, &mut file).await?;
        self.writer = Some(file);
        Ok(())
    }

    /// Checks that the body was whole (a non-empty file and its purpose) and commits the file.
    async fn finish(self) -> Result<files::FileRow, OpenAiError> {
        let Self {
            slot,
            tx,
            writer,
            purpose_seen,
            ..
        } = self;
        let (Some(mut tx), Some(file)) = (tx, writer) else {
            return Err(invalid("file", "`file` is required"));
        };
        if !purpose_seen {
            return Err(invalid("purpose", "`purpose` is required"));
        }
        if file.bytes() == 0 {
            return Err(invalid("file", "The file is empty"));
        }
        let row = file.finish(&mut tx).await.map_err(ApiError::from)?;
        tx.commit().await.map_err(ApiError::from)?;
        drop(slot);
        Ok(row)
    }
}

/// Names of the extra fields accepted (and ignored), as `FileUpload` documents them.
fn plain_field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.[]-".contains(&b))
}

/// Streams the `file` field into `writer`, refusing it as soon as it passes the size limit.
async fn store_content(
    field: &mut Field<'_>,
    conn: &mut PgConnection,
    writer: &mut ChunkWriter,
) -> Result<(), OpenAiError> {
    while let Some(piece) = field.chunk().await.map_err(multipart_error)? {
        if writer.bytes() + piece.len() as i64 > MAX_FILE_BYTES {
            return Err(too_large());
        }
        writer.write(conn, &piece).await.map_err(ApiError::from)?;
    }
    Ok(())
}

/// A short text field, read with at most `MAX_PURPOSE_BYTES` in memory.
async fn read_short_text(field: &mut Field<'_>) -> Result<String, OpenAiError> {
    let mut value = Vec::new();
    while let Some(piece) = field.chunk().await.map_err(multipart_error)? {
        if value.len() + piece.len() > MAX_PURPOSE_BYTES {
            return Err(invalid("purpose", "`purpose` must be `batch`"));
        }
        value.extend_from_slice(&piece);
    }
    String::from_utf8(value).map_err(|_| invalid("purpose", "`purpose` must be `batch`"))
}

fn check_purpose(purpose: &str) -> Result<(), OpenAiError> {
    match purpose {
        "batch" => Ok(()),
        "batch_output" => Err(invalid(
            "purpose",
            "`batch_output` files are written by the service; upload with purpose `batch`",
        )),
        _ => Err(invalid(
            "purpose",
            "Only purpose `batch` is accepted for upload",
        )),
    }
}

/// The filename as given (directories included), if it has 1 to 512 characters and no control
/// character (NUL included, which PostgreSQL text cannot hold).
fn checked_filename(filename: Option<&str>) -> Result<String, OpenAiError> {
    let Some(filename) = filename.filter(|name| !name.is_empty()) else {
        return Err(invalid("file", "`file` must be sent with a filename"));
    };
    if filename.chars().count() > MAX_FILENAME_CHARS {
        return Err(invalid(
            "file",
            format!("The filename must have at most {MAX_FILENAME_CHARS} characters"),
        ));
    }
    if filename.chars().any(char::is_control) {
        return Err(invalid(
            "file",
            "The filename must not contain control characters",
        ));
    }
    Ok(filename.to_owned())
}

fn too_large() -> OpenAiError {
    OpenAiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        Some("file_too_large"),
        format!("The file is larger than {MAX_FILE_BYTES} bytes (200 MiB)"),
    )
}

/// A body that breaks off or is not well-formed multipart is the client's fault, whatever the
/// parser calls it; only passing the body limit is a 413.
fn multipart_error(error: MultipartError) -> OpenAiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    OpenAiError::invalid_request(format!(
        "Could not read the multipart body: {}",
        error.body_text()
    ))
}

/// Uploads streaming at once in this process, and per team. An upload holds a database
/// connection for as long as its client takes to send the file (a slow client, minutes), so
/// uploads may take only a few of the pool's connections, and one team only part of those.
const MAX_UPLOADS: usize = 8;
const MAX_UPLOADS_PER_TEAM: usize = 2;

/// One of the upload places, given back when dropped.
struct UploadSlot {
    team_id: String,
}

impl UploadSlot {
    /// A place for the team's upload, or 429 when the process or the team has none free.
    fn take(team_id: &str) -> Result<Self, OpenAiError> {
        let mut uploads = uploads_by_team();
        let total: usize = uploads.values().sum();
        let team = uploads.get(team_id).copied().unwrap_or(0);
        if total >= MAX_UPLOADS || team >= MAX_UPLOADS_PER_TEAM {
            return Err(ApiError::TooManyRequests {
                detail: format!(
                    "Too many uploads in progress (at most {MAX_UPLOADS_PER_TEAM} per team); retry when one has finished"
                ),
                retry_after_secs: 1,
            }
            .into());
        }
        *uploads.entry(team_id.to_owned()).or_default() += 1;
        Ok(Self {
            team_id: team_id.to_owned(),
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut uploads = uploads_by_team();
        if let Some(count) = uploads.get_mut(&self.team_id) {
            *count -= 1;
            if *count == 0 {
                uploads.remove(&self.team_id);
            }
        }
    }
}

fn uploads_by_team() -> MutexGuard<'static, HashMap<String, usize>> {
    static UPLOADS: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Mutex::default);
    UPLOADS.lock().unwrap_or_else(|p| p.into_inner())
}
