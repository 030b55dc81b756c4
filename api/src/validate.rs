//! Input checks of the routes; each failure is a 400 naming the field.

use chrono::{DateTime, Utc};
use saasllm_shared::db::batch_runs::BATCH_JOB_TYPE;
use saasllm_shared::domain::net_policy::TargetPolicy;
use saasllm_shared::domain::webhook;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Longest accepted identifier (organization, team, model group names).
const MAX_ID_LEN: usize = 200;

/// An identifier that also appears in URL paths: non-empty, at most 200 characters, made of
/// letters, digits and `_ - . :` so it never needs escaping.
pub fn identifier(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::BadRequest(format!("{field} must not be empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(ApiError::BadRequest(format!(
            "{field} must be at most {MAX_ID_LEN} characters"
        )));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(ApiError::BadRequest(format!(
            "{field} may contain only letters, digits and _ - . : (got '{value}')"
        )));
    }
    Ok(())
}

/// A free-text field that must not be blank.
pub fn non_blank(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("{field} must not be empty")));
    }
    Ok(())
}

/// `metadata` must be a JSON object when present.
pub fn metadata(value: Option<serde_json::Value>) -> Result<serde_json::Value, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(serde_json::json!({})),
        Some(object @ serde_json::Value::Object(_)) => Ok(object),
        Some(_) => Err(ApiError::BadRequest(
            "metadata must be a JSON object".into(),
        )),
    }
}

/// Longest accepted callback URL.
pub const MAX_CALLBACK_URL_LEN: usize = 2048;

/// A webhook target: an absolute `http` or `https` URL with a host, at most 2048 characters.
/// Returned as given (not re-serialized), so the client finds it unchanged on the job.
pub fn callback_url(value: &str) -> Result<&str, ApiError> {
    if value.len() > MAX_CALLBACK_URL_LEN {
        return Err(ApiError::BadRequest(format!(
            "callback_url must be at most {MAX_CALLBACK_URL_LEN} characters"
        )));
    }
    let invalid = || {
        ApiError::BadRequest(format!(
            "callback_url must be an absolute http or https URL (got '{value}')"
        ))
    };
    let parsed = url::Url::parse(value).map_err(|_| invalid())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok(value)
}

/// A callback URL's target, checked against the deployment's policy without resolving it (a host
/// name is checked when a delivery connects): no credentials, no non-public address literal, no
/// local or internal host name.
pub fn callback_target(value: &str, policy: TargetPolicy) -> Result<(), ApiError> {
    let parsed = url::Url::parse(value).map_err(|_| {
        ApiError::BadRequest("callback_url must be an absolute http or https URL".into())
    })?;
    policy
        .check_url(&parsed)
        .map_err(|refusal| ApiError::BadRequest(format!("callback_url {refusal}")))
}

/// A job's `job_type`: not blank, not the type reserved for the jobs of `/v1/batches`, at most
/// 200 characters.
pub fn job_type(value: &str) -> Result<(), ApiError> {
    non_blank("job_type", value)?;
    if value.trim() == BATCH_JOB_TYPE {
        return Err(ApiError::BadRequest(format!(
            "job_type '{BATCH_JOB_TYPE}' is reserved for the jobs of /v1/batches"
        )));
    }
    if value.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "job_type must be at most 200 characters".into(),
        ));
    }
    Ok(())
}

/// The callback of a new job, both parts checked: the URL (its form, and its target against the
/// policy), and the client's secret or a new one.
pub fn job_callback<'a>(
    url: Option<&'a str>,
    secret: Option<&str>,
    targets: TargetPolicy,
) -> Result<Option<(&'a str, String)>, ApiError> {
    let Some(url) = url else {
        if secret.is_some() {
            return Err(ApiError::BadRequest(
                "callback_secret was given without a callback_url".into(),
            ));
        }
        return Ok(None);
    };
    let url = callback_url(url)?;
    callback_target(url, targets)?;
    let secret = match secret {
        Some(secret) => {
            webhook::parse_secret(secret).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            secret.to_owned()
        }
        None => webhook::generate_secret(),
    };
    Ok(Some((url, secret)))
}

/// Page bounds for list endpoints.
pub fn page(
    limit: Option<i64>,
    offset: Option<i64>,
    default_limit: i64,
) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(default_limit);
    let offset = offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    if offset < 0 {
        return Err(ApiError::BadRequest("offset must not be negative".into()));
    }
    Ok((limit, offset))
}

/// Rows per keyset page: `limit` is 1..=500, default 50.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    Ok(limit)
}

/// A list's `name_prefix`: 1 to 200 characters (no id is longer, and a longer name prefix says
/// nothing more), matched as plain text.
pub fn name_prefix(value: &str) -> Result<&str, ApiError> {
    if value.is_empty() {
        return Err(ApiError::BadRequest("name_prefix must not be empty".into()));
    }
    if value.chars().count() > MAX_ID_LEN {
        return Err(ApiError::BadRequest(format!(
            "name_prefix must be at most {MAX_ID_LEN} characters"
        )));
    }
    Ok(value)
}

/// An RFC 3339 instant such as `2026-12-04T10:00:00Z`.
pub fn rfc3339(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    // A 10 KB value is not echoed back: the start of it names the problem well enough.
    let shown: String = value.chars().take(40).collect();
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{field} must be an RFC 3339 date-time such as 2026-12-04T10:00:00Z (got '{shown}')"
            ))
        })
}

/// Longest accepted page cursor; the longest one issued (a 200-character id) is about 420.
const MAX_CURSOR_LEN: usize = 1024;

/// Bytes of the digest that seals a cursor.
const SEAL_LEN: usize = 12;

/// The pages of one listing under one set of filters. Its cursors are opaque: the position of the
/// last row of a page, sealed with a digest of the listing, the filters and the position, in hex.
/// A cursor that was garbled, made up, edited, or issued for another listing or other filters
/// is a 400 rather than a page of something else. The seal is no secret (a position reveals
/// nothing the same query would not); it keeps the position and its query together.
pub struct CursorScope<'a> {
    listing: &'a str,
    filters: Vec<Option<&'a str>>,
}

impl<'a> CursorScope<'a> {
    /// `filters` in a fixed order, each as the client sent it.
    pub fn new(listing: &'a str, filters: Vec<Option<&'a str>>) -> Self {
        Self { listing, filters }
    }

    fn digest(&self, position: &[u8]) -> [u8; SEAL_LEN] {
        let mut hash = Sha256::new();
        // Each part is length-prefixed, so no two scopes and positions hash the same bytes.
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        part(self.listing.as_bytes());
        for filter in &self.filters {
            match filter {
                None => part(b"-"),
                Some(value) => part(format!("={value}").as_bytes()),
            }
        }
        part(position);
        let mut seal = [0; SEAL_LEN];
        seal.copy_from_slice(&hash.finalize()[..SEAL_LEN]);
        seal
    }

    /// The cursor of the page after the row at `position`.
    pub fn seal(&self, position: &str) -> String {
        let mut bytes = self.digest(position.as_bytes()).to_vec();
        bytes.extend_from_slice(position.as_bytes());
        hex::encode(bytes)
    }

    /// The position a cursor of this scope carries.
    pub fn open(&self, cursor: &str) -> Result<String, ApiError> {
        let invalid = || {
            ApiError::BadRequest(format!(
                "Invalid cursor: pass the next_cursor of the previous page of this {} list, with the same filters",
                self.listing
            ))
        };
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(invalid());
        }
        let bytes = hex::decode(cursor).map_err(|_| invalid())?;
        if bytes.len() <= SEAL_LEN {
            return Err(invalid());
        }
        let (seal, position) = bytes.split_at(SEAL_LEN);
        if !bool::from(seal.ct_eq(&self.digest(position))) {
            return Err(invalid());
        }
        String::from_utf8(position.to_vec()).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_open_only_in_their_scope() {
        let scope = CursorScope::new("jobs", vec![Some("team_a"), None]);
        let cursor = scope.seal("2026-12-04T10:00:00Z_x");
        assert_eq!(
            scope.open(&cursor).ok().as_deref(),
            Some("2026-12-04T10:00:00Z_x")
        );
        for other in [
            CursorScope::new("teams", vec![Some("team_a"), None]),
            CursorScope::new("jobs", vec![Some("team_b"), None]),
            CursorScope::new("jobs", vec![None, Some("team_a")]),
            CursorScope::new("jobs", vec![Some("team_a"), Some("")]),
        ] {
            assert!(other.open(&cursor).is_err());
        }
        let mut edited = cursor.clone();
        edited.replace_range(cursor.len() - 2.., "79");
        let made_up = hex::encode(b"0123456789ab2026-12-04T10:00:00Z_x");
        for bad in ["", "zz", "abcd", &edited, &made_up, &"ab".repeat(600)] {
            assert!(scope.open(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listing_inputs_are_bounded() {
        assert_eq!(page_limit(None).ok(), Some(50));
        assert_eq!(page_limit(Some(500)).ok(), Some(500));
        assert!(page_limit(Some(0)).is_err() && page_limit(Some(501)).is_err());
        assert!(name_prefix("").is_err() && name_prefix(&"é".repeat(201)).is_err());
        assert_eq!(name_prefix("50%_off").ok(), Some("50%_off"));
        assert!(rfc3339("created_after", "2026-12-04T10:00:00+02:00").is_ok());
        for bad in ["2026-12-04", "yesterday", "2026-13-01T00:00:00Z", ""] {
            assert!(rfc3339("created_after", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers_are_path_safe() {
        assert!(identifier("team_id", "team_engineering").is_ok());
        assert!(identifier("team_id", "org.a-b:c_1").is_ok());
        for bad in ["", "has space", "slash/", "ü", &"x".repeat(201)] {
            assert!(identifier("team_id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(page(None, None, 50).ok(), Some((50, 0)));
        assert!(page(Some(0), None, 50).is_err());
        assert!(page(Some(1001), None, 50).is_err());
        assert!(page(Some(10), Some(-1), 50).is_err());
    }

    #[test]
    fn callback_urls_are_absolute_http_urls() {
        assert!(callback_url("https://hooks.example.com/saasllm?team=1").is_ok());
        assert!(callback_url("http://127.0.0.1:8080/hook").is_ok());
        let too_long = format!("https://example.com/{}", "a".repeat(2048));
        for bad in [
            "",
            "/relative/path",
            "example.com/hook",
            "ftp://example.com/hook",
            "file:///etc/passwd",
            "https://",
            "http:// spaces.example.com",
            &too_long,
        ] {
            assert!(callback_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert_eq!(metadata(None).ok(), Some(serde_json::json!({})));
        assert!(metadata(Some(serde_json::json!([1]))).is_err());
    }
}
