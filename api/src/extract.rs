//! Request extractors whose rejections are `{"detail": ...}` errors: JSON bodies (parsed whatever
//! the Content-Type, with serde's message naming the field), paths and queries.
//!
//! Every one of them refuses NUL characters with a 400 naming the field: PostgreSQL cannot store
//! NUL in `text` or `jsonb`, so a NUL that got through would fail the statement (a 500) or, in
//! a body passed through untouched, be stored nowhere and surprise the reader later.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

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

/// Parses a body that must be a JSON object into `T`: serde reads a struct from a JSON array
/// too (`[]` is every field at its default), so an array is refused first.
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return Err(ApiError::BadRequest(
            "Malformed JSON: expected a JSON object, not an array".into(),
        ));
    }
    parse_json(bytes)
}

/// Parses a JSON document into `T`, describing what is wrong in a 400.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "Request body is empty; a JSON body is required".into(),
        ));
    }
    // JSON can carry NUL only as the escape `\u0000` (a raw control byte is a syntax error), so
    // only a body containing that text is parsed a second time, generically, to find the field.
    if contains_nul_escape(bytes)
        && let Ok(document) = serde_json::from_slice::<Value>(bytes)
        && let Some(path) = nul_path(&document, String::new())
    {
        return Err(nul_error(path));
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

fn contains_nul_escape(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"\\u0000")
}

/// `path` is empty for the body itself and starts with `[` inside a top-level array.
fn nul_error(path: String) -> ApiError {
    let field = match path.chars().next() {
        None | Some('[') => format!("body{path}"),
        Some(_) => path,
    };
    ApiError::BadRequest(format!("{field} must not contain NUL characters"))
}

/// The path of the first string holding a NUL below `value`, which is at `path`.
fn nul_path(value: &Value, path: String) -> Option<String> {
    match value {
        Value::String(text) if text.contains('\0') => Some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        Value::Object(fields) => object_nul_path(fields, &path),
        _ => None,
    }
}

/// As `nul_path` for an object's fields; a key holding a NUL is named `<object path> key`.
fn object_nul_path(fields: &Map<String, Value>, path: &str) -> Option<String> {
    fields.iter().find_map(|(key, item)| {
        if key.contains('\0') {
            return Some(match path {
                "" => "A field name".to_owned(),
                _ => format!("{path} key"),
            });
        }
        let field = match path {
            "" => key.clone(),
            _ => format!("{path}.{key}"),
        };
        nul_path(item, field)
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
        if let Ok(params) = RawPathParams::from_request_parts(parts, state).await
            && let Some((name, _)) = params.iter().find(|(_, value)| value.contains('\0'))
        {
            return Err(ApiError::BadRequest(format!(
                "{name} must not contain NUL characters"
            )));
        }
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
        let query = parts.uri.query().unwrap_or_default();
        if let Some((name, _)) = url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            let field = match name.contains('\0') {
                true => "A query parameter name".into(),
                false => name,
            };
            return Err(ApiError::BadRequest(format!(
                "{field} must not contain NUL characters"
            )));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|e: QueryRejection| {
                ApiError::BadRequest(format!("Invalid query: {}", e.body_text()))
            })
    }
}

/// Serde helpers for integer body fields. JSON Schema counts `16.0` as an integer, and so does
/// the document, so a whole number written with a fraction is taken as that integer.
pub mod whole_number {
    use serde::de::{Deserialize, Deserializer, Error};

    fn whole<E: Error, T: TryFrom<i64>>(number: serde_json::Number) -> Result<T, E> {
        let value = number.as_i64().or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < i64::MAX as f64)
                .map(|f| f as i64)
        });
        value
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| E::custom(format!("invalid value: {number}, expected a whole number")))
    }

    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
        whole(serde_json::Number::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(whole)
            .transpose()
    }
}
