//! Input checks shared by the route modules; each failure is a 400 naming the field.

use saasllm_shared::domain::net_policy::TargetPolicy;

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

#[cfg(test)]
mod tests {
    use super::*;

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
