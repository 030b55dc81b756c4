//! Console actions go through the JSON API itself: the request is built as a client would send
//! it and served by the same router (authentication, limits, idempotency, handlers, ledger rows),
//! with the caller taken from the console session instead of a key header. There is no second
//! path to the database for a change.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tower::ServiceExt;

use crate::auth::InProcess;
use crate::console::session::Session;
use crate::console::view::Notice;

/// The API's router, as the console calls it.
#[derive(Clone)]
pub struct Api(pub Router);

/// What the API answered when it refused: its status and `detail`.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub detail: String,
}

/// Largest API answer the console reads.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Characters left as they are in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A value as one path segment.
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

impl Api {
    /// Sends `method path` with `body` as the session's caller; the JSON answer, or the refusal.
    pub async fn call(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Refusal> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).map_err(|e| Refusal {
            status: 400,
            detail: format!("Invalid request: {e}"),
        })?;
        request.extensions_mut().insert(InProcess {
            caller: session.caller.clone(),
            idempotency_scope: session.idempotency_scope(),
        });
        let response = match self.0.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Refusal {
                status: 502,
                detail: format!("Unreadable answer: {e}"),
            })?;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        let detail = json
            .get("detail")
            .map(|d| match d {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| status.to_string());
        Err(Refusal {
            status: status.as_u16(),
            detail,
        })
    }

    /// Sends a form's request, as `call`, and says how it went: `done` words the success from
    /// the API's answer; a refusal shows the API's own `detail`.
    pub async fn notice(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<Value>,
        done: impl FnOnce(&Value) -> String,
    ) -> Notice {
        match self.call(session, method, path, body, None).await {
            Ok(answer) => Notice::Done(done(&answer)),
            Err(refusal) => Notice::Refused(refusal.detail),
        }
    }

    /// Sends a create form's `POST`, as `notice`; the success reads "`what` 'name' created",
    /// the name taken from the answer's `name_field`.
    pub async fn created(
        &self,
        session: &Session,
        path: &str,
        body: Value,
        what: &str,
        name_field: &str,
    ) -> Notice {
        self.notice(session, Method::POST, path, Some(body), |answer| {
            let name = answer[name_field].as_str().unwrap_or_default();
            format!("{what} '{name}' created")
        })
        .await
    }
}
