//! Deterministic reply text, token counts and OpenAI-shaped JSON bodies, kept free of I/O so the
//! exact numbers tests assert on are unit-tested here.

use saasllm_shared::domain::estimate;
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest slice of the user's message echoed back; keeps replies small under big prompts.
const ECHO_LIMIT_CHARS: usize = 200;

/// Number of content pieces a streamed reply is split into.
const STREAM_PIECES: usize = 4;

/// The fields of an OpenAI chat request the fake acts on; everything else is accepted and ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Caps the reply like a real model does; any shape is accepted, only a positive integer
    /// applies.
    #[serde(default)]
    pub max_tokens: Option<Value>,
    #[serde(default)]
    pub max_completion_tokens: Option<Value>,
}

impl ChatRequest {
    /// The most completion tokens the request allows, if it sets a usable limit.
    pub fn max_output_tokens(&self) -> Option<u64> {
        [&self.max_tokens, &self.max_completion_tokens]
            .into_iter()
            .filter_map(|v| v.as_ref().and_then(Value::as_u64))
            .filter(|n| *n > 0)
            .min()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChatMessage {
    #[serde(default)]
    pub role: String,
    /// A string, an array of content parts, or null (assistant tool calls).
    #[serde(default)]
    pub content: Value,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Token usage as OpenAI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// The fake's rule for completion tokens: characters / 4, rounded up, at least 1. Public so
/// tests elsewhere can compute the usage (and so the cost) the fake will report for a reply.
/// Prompt tokens are counted with the model's real tokenizer (see [`usage_for`]).
pub fn token_count(text: &str) -> u64 {
    tokens_for_chars(text.chars().count())
}

fn tokens_for_chars(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

/// Text of a message's `content`, whether a plain string or an array of `{type, text}` parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// `"echo: <last user message>"`, the user text cut to [`ECHO_LIMIT_CHARS`] characters, and the
/// whole reply cut to `max_tokens` tokens (4 characters each) when the request sets it.
pub(crate) fn reply_text(messages: &[ChatMessage], max_tokens: Option<u64>) -> String {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| content_text(&m.content))
        .unwrap_or_default();
    let echoed: String = last_user.chars().take(ECHO_LIMIT_CHARS).collect();
    let reply = format!("echo: {echoed}");
    match max_tokens.and_then(|n| usize::try_from(n.saturating_mul(4)).ok()) {
        Some(max_chars) => reply.chars().take(max_chars).collect(),
        None => reply,
    }
}

/// Usage as a real upstream reports it: the prompt's text counted with the model's tokenizer
/// (`cl100k_base` for models without a shipped one), so the API's estimate, an upper bound of
/// that count, holds against the fake as it does against OpenAI.
pub(crate) fn usage_for(model: &str, messages: &[ChatMessage], reply: &str) -> Usage {
    let prompt_tokens = messages
        .iter()
        .map(|m| estimate::text_tokens(model, &content_text(&m.content)))
        .fold(0u64, u64::saturating_add);
    Usage {
        prompt_tokens: prompt_tokens.max(1),
        completion_tokens: token_count(reply),
    }
}

/// Splits the reply into at most [`STREAM_PIECES`] groups of whole words whose concatenation is
/// exactly the reply, so clients re-assembling deltas get the non-streamed text back.
pub(crate) fn stream_pieces(reply: &str) -> Vec<String> {
    let words: Vec<&str> = reply.split_inclusive(' ').collect();
    if words.is_empty() {
        return vec![String::new()];
    }
    let per_piece = words.len().div_ceil(STREAM_PIECES);
    words
        .chunks(per_piece)
        .map(|group| group.concat())
        .collect()
}

/// Formats millionths of a dollar as a plain decimal (`2500` -> `"0.0025"`) without float noise.
pub(crate) fn format_cost(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let frac = micros % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Identity shared by every chunk of one completion, as OpenAI does.
pub(crate) struct CompletionMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl CompletionMeta {
    pub fn new(model: String) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created,
            model,
        }
    }
}

/// A non-streamed `chat.completion` object.
pub(crate) fn completion_body(meta: &CompletionMeta, reply: &str, usage: Usage) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage.to_json(),
    })
}

/// The `data:` payloads of a streamed reply, `[DONE]` included, in order.
pub(crate) fn stream_payloads(
    meta: &CompletionMeta,
    reply: &str,
    usage: Usage,
    include_usage: bool,
) -> Vec<String> {
    let chunk = |choices: Value, usage: Value| {
        let mut body = json!({
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "choices": choices,
        });
        // OpenAI only adds the key when usage was asked for: null on every chunk but the last.
        if include_usage {
            body["usage"] = usage;
        }
        body.to_string()
    };
    let mut payloads: Vec<String> = stream_pieces(reply)
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            // The role rides on the first delta only, like OpenAI's stream.
            let delta = if i == 0 {
                json!({"role": "assistant", "content": piece})
            } else {
                json!({"content": piece})
            };
            chunk(
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
                Value::Null,
            )
        })
        .collect();
    payloads.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        Value::Null,
    ));
    if include_usage {
        payloads.push(chunk(json!([]), usage.to_json()));
    }
    payloads.push("[DONE]".to_owned());
    payloads
}

/// An OpenAI error body: `{"error":{"message","type","code"}}`.
pub(crate) fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: Value) -> ChatMessage {
        ChatMessage {
            role: role.to_owned(),
            content,
        }
    }

    #[test]
    fn token_rule_rounds_up_with_minimum_one() {
        assert_eq!(token_count(""), 1);
        assert_eq!(token_count("abc"), 1);
        assert_eq!(token_count("abcd"), 1);
        assert_eq!(token_count("abcde"), 2);
        assert_eq!(token_count("ééééé"), 2, "counts characters, not bytes");
    }

    #[test]
    fn reply_echoes_last_user_message_truncated() {
        let messages = vec![
            msg("system", json!("be terse")),
            msg("user", json!("first")),
            msg("assistant", Value::Null),
            msg("user", json!([{"type": "text", "text": "second"}])),
        ];
        assert_eq!(reply_text(&messages, None), "echo: second");
        let long = vec![msg("user", json!("x".repeat(500)))];
        assert_eq!(
            reply_text(&long, None),
            format!("echo: {}", "x".repeat(200))
        );
        assert_eq!(reply_text(&[], None), "echo: ");
    }

    #[test]
    fn reply_is_cut_to_max_tokens() {
        let long = vec![msg("user", json!("x".repeat(500)))];
        let reply = reply_text(&long, Some(3));
        assert_eq!(reply, "echo: xxxxxx");
        assert_eq!(token_count(&reply), 3);
        assert_eq!(reply_text(&long, Some(u64::MAX)).chars().count(), 206);
    }

    #[test]
    fn usage_sums_every_message_with_the_model_tokenizer() {
        let messages = vec![msg("system", json!("12345678")), msg("user", json!("hi"))];
        let reply = reply_text(&messages, None);
        // cl100k_base: "123" "456" "78" and "hi".
        assert_eq!(
            usage_for("gpt-4", &messages, &reply),
            Usage {
                prompt_tokens: 4,
                completion_tokens: 2
            }
        );
        let spaces = vec![msg("user", json!(" ".repeat(400)))];
        assert!(usage_for("gpt-4o", &spaces, "").prompt_tokens < 100);
    }

    #[test]
    fn pieces_reassemble_exactly() {
        for text in [
            "echo: ",
            "echo: one",
            "echo: a b c d e f g h i",
            "echo:  spaced  out ",
        ] {
            let pieces = stream_pieces(text);
            assert!(pieces.len() <= STREAM_PIECES, "{pieces:?}");
            assert_eq!(pieces.concat(), text);
        }
        assert_eq!(stream_pieces("echo: a b c d e f g").len(), 4);
    }

    #[test]
    fn cost_formats_without_float_noise() {
        assert_eq!(format_cost(2500), "0.0025");
        assert_eq!(format_cost(0), "0");
        assert_eq!(format_cost(1), "0.000001");
        assert_eq!(format_cost(1_500_000), "1.5");
        assert_eq!(format_cost(3_000_000), "3");
    }

    #[test]
    fn stream_payloads_end_with_usage_then_done() {
        let meta = CompletionMeta::new("m".to_owned());
        let usage = Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
        };
        let with = stream_payloads(&meta, "echo: hi", usage, true);
        assert_eq!(with.last().map(String::as_str), Some("[DONE]"));
        let usage_chunk: Value = serde_json::from_str(&with[with.len() - 2]).expect("json chunk");
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["total_tokens"], 3);
        let without = stream_payloads(&meta, "echo: hi", usage, false);
        assert_eq!(without.len(), with.len() - 1);
        assert!(without.iter().all(|p| !p.contains("\"usage\"")));
    }
}
