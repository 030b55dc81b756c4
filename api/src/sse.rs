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
        while let Some(line) = self.next_line() {
            self.read_line(&line, &mut deltas);
        }
        deltas
    }

    /// Feeds bytes and returns the bytes to pass on: every complete line (a partial one waits
    /// for the rest), without the usage-only chunk when `hide_usage_chunk` (a client that did
    /// not ask for `stream_options.include_usage` does not expect a chunk with no choices).
    pub fn pass_on(&mut self, bytes: &[u8], hide_usage_chunk: bool) -> Vec<u8> {
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::with_capacity(bytes.len());
        let mut deltas = Vec::new();
        while let Some(line) = self.next_line() {
            let usage_only = self.read_line(&line, &mut deltas);
            if !(hide_usage_chunk && usage_only) {
                out.extend_from_slice(&line);
            }
        }
        out
    }

    /// What is left after the last newline (an upstream that ended without one).
    pub fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial)
    }

    fn next_line(&mut self) -> Option<Vec<u8>> {
        let end = self.partial.iter().position(|b| *b == b'\n')?;
        Some(self.partial.drain(..=end).collect())
    }

    /// Reads one line; true when it is a usage-only chunk (usage and no choices).
    fn read_line(&mut self, line: &[u8], deltas: &mut Vec<String>) -> bool {
        let Some(data) = line.strip_prefix(b"data:") else {
            return false;
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.done = true;
            return false;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return false;
        };
        let mut usage_only = false;
        if let Some(usage) = event.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
            usage_only = event
                .get("choices")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
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
        usage_only
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

    #[test]
    fn passes_lines_on_whole_and_can_hide_the_usage_chunk() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n"
        );
        for hide in [false, true] {
            let mut scan = SseScan::default();
            let mut out = Vec::new();
            for piece in stream.as_bytes().chunks(5) {
                out.extend(scan.pass_on(piece, hide));
            }
            out.extend(scan.rest());
            let out = String::from_utf8(out).expect("utf-8");
            assert_eq!(out.contains("usage"), !hide, "{out}");
            assert!(out.starts_with("data: {\"choices\":[{"), "{out}");
            assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
            assert_eq!(scan.tokens("total_tokens"), Some(5));
        }
    }
}
