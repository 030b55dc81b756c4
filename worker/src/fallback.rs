//! Which upstream failures move on to the next model of the group and which stop the chain.

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Transient, or this model cannot serve the request: try the next model.
    Fallback,
    /// The request itself is wrong: another model would refuse it too.
    Stop,
}

/// Classifies an HTTP error answer from the upstream by status and body.
pub fn classify_status(status: u16, body: &str) -> Next {
    match status {
        408 | 409 | 425 | 429 => Next::Fallback,
        500..=599 => Next::Fallback,
        400 | 413 | 422 if means_model_cannot_serve(body) => Next::Fallback,
        _ => Next::Stop,
    }
}

/// A 400 that says the request does not fit this model (context window, token limits), so a
/// model with a larger window may still serve it.
fn means_model_cannot_serve(body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "context length",
        "context window",
        "maximum context",
        "too many tokens",
        "prompt is too long",
        "max_tokens is too large",
    ]
    .iter()
    .any(|needle| body.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_upstream_failures() {
        let cases = [
            (500, "", Next::Fallback),
            (502, "bad gateway", Next::Fallback),
            (503, "", Next::Fallback),
            (429, "rate limited", Next::Fallback),
            (408, "", Next::Fallback),
            (
                400,
                r#"{"error":{"code":"context_length_exceeded"}}"#,
                Next::Fallback,
            ),
            (
                400,
                "This model's maximum context length is 8192 tokens",
                Next::Fallback,
            ),
            (
                400,
                r#"{"error":{"message":"Invalid value for temperature"}}"#,
                Next::Stop,
            ),
            (401, "bad key", Next::Stop),
            (403, "", Next::Stop),
            (404, "no such model", Next::Stop),
            (422, "unprocessable", Next::Stop),
        ];
        for (status, body, expected) in cases {
            assert_eq!(classify_status(status, body), expected, "{status} {body}");
        }
    }
}
