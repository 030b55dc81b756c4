//! `ApiError`: every failure a handler can return, rendered as `{"detail": "..."}` with the status
//! SPEC'd for it. Server-side failures are logged once with their cause; clients get a short text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use saasllm_shared::group_commit::GroupError;
use serde_json::json;

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("Insufficient credits. Required: {required}, Available: {available}")]
    InsufficientCredits { required: i64, available: i64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("Request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnprocessableEntity(String),
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        /// Whole seconds after which the limit will have eased (`Retry-After`).
        retry_after_secs: u64,
    },
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnprocessableEntity(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a database error: a violated constraint that `on_constraint` names becomes that
    /// client error; anything else is a 503 when the database is unreachable, else a 500.
    pub fn from_db(
        error: sqlx::Error,
        on_constraint: impl FnOnce(&str) -> Option<ApiError>,
    ) -> ApiError {
        error
            .as_database_error()
            .and_then(|e| e.constraint())
            .and_then(on_constraint)
            .unwrap_or_else(|| ApiError::from(error))
    }
}

/// The database could not be reached or went away mid-statement, so the statement did not run:
/// no connection, or SQLSTATE class 08 (connection exception) or 57P (the server shutting down
/// or restarting, e.g. 57P01 "terminating connection due to administrator command").
fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        client_facing(&error).unwrap_or_else(|| ApiError::Internal(error.into()))
    }
}

impl From<GroupError> for ApiError {
    /// The error of a request served in a group: mapped as its database error, which other
    /// requests of the group may share.
    fn from(error: GroupError) -> Self {
        match error.into_owned() {
            Ok(error) => ApiError::from(error),
            Err(shared) => client_facing(shared.database_error())
                .unwrap_or_else(|| ApiError::Internal(shared.into())),
        }
    }
}

/// The answer a database error gets when it is not a server fault (a 500): the database out of
/// reach, data it cannot take, or a conflict that a retry passes.
fn client_facing(error: &sqlx::Error) -> Option<ApiError> {
    if database_unavailable(error) {
        tracing::error!(error = %error, "database unavailable");
        return Some(ApiError::Unavailable(
            "Database unavailable, nothing was changed; retry later".into(),
        ));
    }
    // Data PostgreSQL cannot take is the request's fault. The extractors already refuse NUL
    // and the routes bound their numbers and dates, so these arms are a backstop that keeps
    // a check missed somewhere a 400 rather than a 500.
    let code = match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    match code.as_deref() {
        Some("22003") => Some(ApiError::BadRequest(
            "A number in the request is out of range".into(),
        )),
        Some("22008") => Some(ApiError::BadRequest(
            "A date or time in the request is out of range".into(),
        )),
        // untranslatable_character, and jsonb's unsupported_unicode_escape_sequence
        Some("22021" | "22P05") => Some(ApiError::BadRequest(
            "A string in the request contains a character that cannot be stored (NUL)".into(),
        )),
        // deadlock_detected, serialization_failure: PostgreSQL rolled the transaction back
        // because of a concurrent one; nothing was changed and a retry will pass.
        Some("40P01" | "40001") => {
            tracing::warn!(error = %error, "transaction rolled back by a concurrent one");
            Some(ApiError::Unavailable(
                "A concurrent change got in the way, nothing was changed; retry".into(),
            ))
        }
        _ => None,
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        ApiError::Internal(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = ?cause, "request failed");
        }
        let mut response =
            (status, axum::Json(json!({ "detail": self.to_string() }))).into_response();
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A PostgreSQL error with only a SQLSTATE, as the driver would report it.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn status_of(code: &'static str) -> StatusCode {
        ApiError::from(sqlx::Error::Database(Box::new(Sqlstate(code)))).status()
    }

    #[test]
    fn data_postgresql_cannot_take_is_a_400_not_a_500() {
        // untranslatable character (NUL in text), NUL escape in jsonb, datetime and numeric
        // overflow
        for code in ["22021", "22P05", "22008", "22003"] {
            assert_eq!(status_of(code), StatusCode::BAD_REQUEST, "{code}");
        }
        assert_eq!(status_of("57P01"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of("XX000"), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn an_error_shared_by_a_group_of_requests_maps_as_its_database_error() {
        let group_error = |code| GroupError::from(sqlx::Error::Database(Box::new(Sqlstate(code))));
        for (code, status) in [
            ("40P01", StatusCode::SERVICE_UNAVAILABLE),
            ("22021", StatusCode::BAD_REQUEST),
            ("XX000", StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let shared = group_error(code);
            let also_answered = shared.clone();
            assert_eq!(ApiError::from(shared).status(), status, "{code} shared");
            assert_eq!(
                ApiError::from(also_answered).status(),
                status,
                "{code} alone"
            );
        }
    }

    #[test]
    fn a_transaction_rolled_back_by_a_concurrent_one_is_a_503_to_retry() {
        for code in ["40P01", "40001"] {
            assert_eq!(status_of(code), StatusCode::SERVICE_UNAVAILABLE, "{code}");
        }
    }
}
