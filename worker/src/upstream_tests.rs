//! Unit tests of the upstream answer's parsing (error text, retry-after).

use super::*;

#[test]
fn error_message_prefers_openai_error_text() {
    assert_eq!(
        error_message(429, r#"{"error":{"message":"Rate limit exceeded"}}"#),
        "Rate limit exceeded"
    );
    assert_eq!(error_message(503, ""), "upstream answered HTTP 503");
    assert_eq!(
        error_message(502, "oops"),
        "upstream answered HTTP 502: oops"
    );
}

#[test]
fn retry_after_reads_milliseconds_seconds_and_dates() {
    use reqwest::header::{HeaderMap, HeaderValue};
    let headers = |pairs: &[(&'static str, String)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    };
    assert_eq!(retry_after(&headers(&[])), None);
    assert_eq!(
        retry_after(&headers(&[("retry-after", "2".into())])),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        retry_after(&headers(&[
            ("retry-after", "20".into()),
            ("retry-after-ms", "150".into())
        ])),
        Some(Duration::from_millis(150))
    );
    let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
    let wait = retry_after(&headers(&[("retry-after", in_a_minute)])).expect("date");
    assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(60));
    assert_eq!(
        retry_after(&headers(&[("retry-after", "soon".into())])),
        None
    );
}
