//! Errors in OpenAI's wire shape, so the SDKs raise their usual exception classes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use saasllm_shared::domain::money::MicroUsd;
use serde_json::json;

use crate::error::ApiError;

/// The refusals of every `/v1` request but those that name a model, as the OpenAPI document
/// lists them: `responses(..., KeyRefusals)` in a route's annotation. Never built; the handlers
/// answer with `OpenAiError`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum KeyRefusals {
    #[response(
        status = 401,
        description = "Missing or unknown key (OpenAI error shape)"
    )]
    UnknownKey(#[to_schema] serde_json::Value),
    #[response(
        status = 403,
        description = "The admin key, or a suspended team (OpenAI error shape)"
    )]
    NotATeam(#[to_schema] serde_json::Value),
}

/// The refusals of a `/v1` request that names a model, as the OpenAPI document lists them:
/// `responses(..., ModelRefusals)` in a route's annotation. Never built; the handlers answer with
/// `OpenAiError`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ModelRefusals {
    #[response(
        status = 401,
        description = "Missing or unknown key (OpenAI error shape)"
    )]
    UnknownKey(#[to_schema] serde_json::Value),
    #[response(status = 402, description = "Budget exceeded (OpenAI error shape)")]
    OverBudget(#[to_schema] serde_json::Value),
    #[response(
        status = 403,
        description = "Model not allowed for the team, the admin key, or a suspended team (OpenAI error shape)"
    )]
    NotAllowed(#[to_schema] serde_json::Value),
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

    /// A 400 about the request as a whole (its body, its framing, its query).
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }

    /// A 404: no such object for the team.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            message,
        )
    }

    /// A 502: the upstream could not be reached, or its answer broke off.
    pub(crate) fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "server_error", None, message)
    }

    /// A 403 for a model outside the team's model groups, listing the ones it may use.
    pub(crate) fn model_not_allowed(model: &str, team_id: &str, allowed: &[String]) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            Some("model_not_allowed"),
            format!(
                "Model '{model}' is not allowed for team '{team_id}'. Allowed models: {}",
                allowed.join(", ")
            ),
        )
    }

    /// A 402 for a request whose worst-case cost is more than what is left of the budget.
    pub(crate) fn budget_exceeded(team_id: &str, estimate: MicroUsd) -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            Some("budget_exceeded"),
            format!(
                "Budget exceeded for team '{team_id}': this request could cost up to ${estimate}, more than what is left of the budget. Add credits to raise it."
            ),
        )
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
