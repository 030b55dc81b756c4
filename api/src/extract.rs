//! Request extractors whose rejections are `{"detail": ...}` errors: JSON bodies (parsed whatever
//! the Content-Type, with serde's message naming the field), paths and queries.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Unlike `axum::Json` it does not insist on a Content-Type header, which clients
/// such as curl often omit.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// The raw body bytes, with the same `{"detail": ...}` rejections as `Json` (413 over the limit).
pub struct RawBody(pub Bytes);

impl<S> FromRequest<S> for RawBody
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(0);
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| body_error(e, limit))
    }
}

/// Parses a JSON document into `T`, describing what is wrong in a 400.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "Request body is empty; a JSON body is required".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let problem = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "Malformed JSON"
            }
            _ => "Invalid request body",
        };
        ApiError::BadRequest(format!("{problem}: {e}"))
    })
}

/// The configured body limit, placed in request extensions so the 413 message can state it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(limit)
    } else {
        ApiError::BadRequest(format!(
            "Could not read the request body: {}",
            rejection.body_text()
        ))
    }
}

/// Path parameters.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|e: PathRejection| {
                ApiError::BadRequest(format!("Invalid path parameter: {}", e.body_text()))
            })
    }
}

/// Query-string parameters.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|e: QueryRejection| {
                ApiError::BadRequest(format!("Invalid query: {}", e.body_text()))
            })
    }
}
