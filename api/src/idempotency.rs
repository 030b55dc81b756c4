//! `Idempotency-Key` on POST requests: the first response (status and JSON body) is stored, and a
//! retry with the same key and the same body gets it back with no second effect, even while the
//! first is still running (it waits for it). The same key with another body is 422. Keys are
//! scoped to the API key that sent them (so per team) and kept 48 hours. Only authenticated
//! requests take part (`auth::authenticate` runs first, so a rotated key or a suspended team
//! gets 401/403, never a replay). Answers a retry should not repeat are not stored: 5xx, 401,
//! 403 and 429; the request can be retried. Streaming answers are not replayable and are not
//! stored. Secrets shown once (`virtual_key`, `callback_secret`, `admin_key`) are removed before a
//! response is stored, so a replay never carries them.
//!
//! Multipart uploads (`POST /v1/files`, up to 200 MiB) are not covered: the body would have to
//! be held whole in memory to be hashed, and the upload streams to storage instead. A retried
//! upload stores a second file, which costs nothing and can be deleted.

use std::time::Duration;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use saasllm_shared::db::idempotency::{self, Lookup};
use sha2::{Digest, Sha256};

use crate::auth::{Caller, InProcess};
use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::state::AppState;

const HEADER: &str = "idempotency-key";
/// How long a retry waits for the first request with its key to finish.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(60);

/// The middleware.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    if is_multipart(&request) {
        return next.run(request).await;
    }
    if request.extensions().get::<Caller>().is_none() {
        // Not an authenticated route (authentication answered already where one is needed).
        return next.run(request).await;
    }
    match run(state, key, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(
    state: AppState,
    key: HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let key = checked_key(&key).map_err(IntoResponse::into_response)?;
    let scope = scope_of(&request);
    let (parts, bytes) = buffer_body(request).await?;
    let request_hash = Sha256::new()
        .chain_update(parts.uri.path().as_bytes())
        .chain_update([0])
        .chain_update(&bytes)
        .finalize()
        .to_vec();
    if let Some(earlier) = wait_for_turn(&state, &scope, &key, &request_hash).await? {
        return Ok(earlier);
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    store(&state, &scope, &key, response).await
}

/// The key as sent: 1 to 255 visible characters, trimmed.
fn checked_key(key: &HeaderValue) -> Result<String, ApiError> {
    key.to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible characters".into())
        })
}

/// Whose keys this request's key is among: the in-process caller's scope, else a digest of the
/// credential it sent.
fn scope_of(request: &Request) -> String {
    match request.extensions().get::<InProcess>() {
        Some(in_process) => in_process.idempotency_scope.clone(),
        None => {
            let credential = request
                .headers()
                .get("x-admin-key")
                .or_else(|| request.headers().get(header::AUTHORIZATION))
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            hex_digest(&[&credential])
        }
    }
}

/// The request's body, read whole within the route's body limit.
async fn buffer_body(request: Request) -> Result<(axum::http::request::Parts, Bytes), Response> {
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(2 * 1024 * 1024, |l| l.0);
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit).into_response())?;
    Ok((parts, bytes))
}

/// Takes the key for this request, waiting (bounded) while a first request with it runs.
/// `Some` is the answer to give instead of running the request: the stored one replayed.
async fn wait_for_turn(
    state: &AppState,
    scope: &str,
    key: &str,
    request_hash: &[u8],
) -> Result<Option<Response>, Response> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        let lookup = idempotency::begin(&state.db, scope, key, request_hash)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        match lookup {
            Lookup::Started => return Ok(None),
            Lookup::Replay { status, body } => return Ok(Some(replay(status, body))),
            Lookup::Mismatch => {
                return Err(ApiError::UnprocessableEntity(
                    "Idempotency-Key was already used with a different request".into(),
                )
                .into_response());
            }
            Lookup::InProgress if tokio::time::Instant::now() >= deadline => {
                return Err(ApiError::Conflict(
                    "A request with this Idempotency-Key is still in progress".into(),
                )
                .into_response());
            }
            Lookup::InProgress => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Stores the response for retries, less its secrets, and passes it on; one not worth replaying
/// (or not JSON) gives the key up instead.
async fn store(
    state: &AppState,
    scope: &str,
    key: &str,
    response: Response,
) -> Result<Response, Response> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json || !worth_replaying(response.status()) {
        let _ = idempotency::abandon(&state.db, scope, key).await;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.map_err(|e| {
        ApiError::Internal(anyhow::anyhow!("could not buffer the response: {e}")).into_response()
    })?;
    let mut stored: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    remove_secrets(&mut stored);
    if let Err(e) = idempotency::complete(
        &state.db,
        scope,
        key,
        i32::from(parts.status.as_u16()),
        &stored,
    )
    .await
    {
        tracing::error!(error = %e, "could not store the idempotent response");
        let _ = idempotency::abandon(&state.db, scope, key).await;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// A `multipart/*` body: streamed by its handler, never buffered here.
fn is_multipart(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..10)
                .is_some_and(|kind| kind.eq_ignore_ascii_case("multipart/"))
        })
}

/// Whether a retry should get this answer again rather than run anew: not for server errors,
/// refused credentials or a rate limit, which a later retry may well get past.
fn worth_replaying(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status == StatusCode::TOO_MANY_REQUESTS)
}

/// Fields whose values are shown once and never stored in plain text.
const SECRET_FIELDS: [&str; 3] = ["virtual_key", "callback_secret", "admin_key"];

/// Drops every secret field, at any depth, from a response about to be stored.
fn remove_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for name in SECRET_FIELDS {
                fields.remove(name);
            }
            fields.values_mut().for_each(remove_secrets);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(remove_secrets),
        _ => {}
    }
}

fn replay(status: i32, body: serde_json::Value) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn hex_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_responses_lose_their_secrets_at_any_depth() {
        let mut body = json!({"team_id": "t", "virtual_key": "sk-x", "job": {"callback_secret": "whsec_y", "callback_url": "https://h"}, "list": [{"virtual_key": "sk-z"}], "key": {"admin_key": "sk-admin-w", "key_prefix": "sk-admin-w"}});
        remove_secrets(&mut body);
        assert_eq!(
            body,
            json!({"team_id": "t", "job": {"callback_url": "https://h"}, "list": [{}], "key": {"key_prefix": "sk-admin-w"}})
        );
    }

    #[test]
    fn refusals_and_transient_failures_are_not_replayed() {
        for status in [401, 403, 429, 500, 503, 504] {
            assert!(!worth_replaying(
                StatusCode::from_u16(status).expect("status")
            ));
        }
        for status in [200, 201, 202, 400, 402, 404, 409, 422] {
            assert!(worth_replaying(
                StatusCode::from_u16(status).expect("status")
            ));
        }
    }
}
