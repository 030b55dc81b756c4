//! Reading an upstream's OpenAI server-sent events as they pass: content deltas, the finish
//! reason and the final usage chunk, whatever way the bytes are split.

use serde_json::Value;

/// Incremental reader of `data: {...}` lines.
#[derive(Default)]
pub struct SseScan {
    partial: Vec<u8>,
    /// The `usage` object, once the upstream has sent it.
    pub usage: Option<Value>,
    /// All content so far.
    pub content: String,
    pub finish_reason: Option<String>,
    /// Whether `data: [DONE]` was seen.
    pub done: bool,
}

impl SseScan {
    /// Feeds bytes; returns the content deltas of the complete lines among them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut deltas = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.trim_ascii();
            if data == b"[DONE]" {
                self.done = true;
                continue;
            }
            let Ok(event) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            if let Some(usage) = event.get("usage").filter(|u| !u.is_null()) {
                self.usage = Some(usage.clone());
            }
            if let Some(reason) = event
                .pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
            {
                self.finish_reason = Some(reason.to_owned());
            }
            if let Some(text) = event
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                self.content.push_str(text);
                deltas.push(text.to_owned());
            }
        }
        deltas
    }

    /// A token count from the usage chunk.
    pub fn tokens(&self, field: &str) -> Option<i64> {
        self.usage
            .as_ref()
            .and_then(|u| u.get(field))
            .and_then(Value::as_i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deltas_usage_and_done_across_split_chunks() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        let mut scan = SseScan::default();
        let mut deltas = Vec::new();
        for piece in stream.chunks(7) {
            deltas.extend(scan.feed(piece));
        }
        assert_eq!(deltas.concat(), "Hello");
        assert_eq!(scan.content, "Hello");
        assert_eq!(scan.finish_reason.as_deref(), Some("stop"));
        assert_eq!(scan.tokens("total_tokens"), Some(5));
        assert!(scan.done);
    }
}
