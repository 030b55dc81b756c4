//! Upper bounds on what a chat completion request can be billed for, computed before it is sent:
//! its prompt tokens (tokenizer-aware) and its output tokens (`max_tokens` x `n`, validated).
//!
//! Prompt tokens:
//! - OpenAI models (`gpt-4o`, `gpt-4.1`, `gpt-5`, `o1`, `o3`, `o4` families: `o200k_base`;
//!   `gpt-4`, `gpt-3.5`: `cl100k_base`; provider-prefixed names such as `openai/gpt-4o` too) are
//!   counted with their own tokenizer, plus a generous per-message allowance for the chat
//!   template (OpenAI adds 3-4 tokens a message and 3 for the reply; [`PER_MESSAGE_TOKENS`] is 8).
//! - Other models use tokenizers we do not ship. They are estimated at 1.5 x the `cl100k_base`
//!   count (the tokenizers of Claude, Llama, Mistral and Gemini produce 0.9-1.3x as many tokens
//!   as `cl100k_base` on text and code), but never above the byte count: every token of a
//!   byte-level BPE or byte-fallback tokenizer covers at least one byte, so bytes are a hard bound.
//! - Strings are counted with special tokens read as ordinary text, which can only count more.
//! - Images count a fixed allowance ([`IMAGE_TOKENS`], or [`IMAGE_TOKENS_GPT_4O_MINI`] for the
//!   `gpt-4o-mini` family, which bills images at about 33x the tokens), above what a high-detail
//!   image at the largest size costs; other non-text parts (audio, files) count the bytes of
//!   their JSON, far above what they are billed.
//! - Tool and function definitions and `response_format` schemas count the tokens of their JSON
//!   (more than the upstream's compact rendering) plus [`PER_DEFINITION_TOKENS`] each.

use std::sync::OnceLock;

use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;

// Embeddings requests are bounded by their input alone; their rules live beside this module.
pub use super::estimate_embeddings::{MAX_EMBEDDING_INPUTS, embedding_input_bound};

/// Output tokens a request may ask for when its model group sets no `max_output_tokens` for the
/// model: 131,072 (128k), at or above the output limit of today's models. A group raises or
/// lowers it per model with `config.max_output_tokens`.
pub const DEFAULT_OUTPUT_TOKEN_CAP: u64 = 131_072;
/// Output tokens per choice reserved for, and allowed to, a request that sets neither
/// `max_tokens` nor `max_completion_tokens` (see [`hold_to_estimate`]).
pub const DEFAULT_OUTPUT_TOKENS: u64 = 1_024;
/// Most choices (`n`) a request may ask for, as OpenAI allows.
pub const MAX_CHOICES: u64 = 128;
/// Chat template tokens allowed for each message (and once for the reply).
pub const PER_MESSAGE_TOKENS: u64 = 8;
/// Template tokens allowed for each tool definition and a response format.
pub const PER_DEFINITION_TOKENS: u64 = 16;
/// Allowance per image: a high-detail image costs at most 85 + 8 x 170 = 1,445 tokens on
/// tile-priced models and 1,536 patches x 1.72 = 2,642 on patch-priced ones.
pub const IMAGE_TOKENS: u64 = 3_000;
/// The `gpt-4o-mini` family bills an image as 2,833 + 8 x 5,667 = 48,169 tokens at most.
pub const IMAGE_TOKENS_GPT_4O_MINI: u64 = 48_200;

/// A tokenizer this module ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    /// The tokenizer of an OpenAI model (`None` for others).
    pub fn of_model(model: &str) -> Option<Self> {
        let bare = bare_model(model);
        let starts = |prefixes: &[&str]| prefixes.iter().any(|p| bare.starts_with(p));
        if starts(&[
            "gpt-4o",
            "chatgpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "o1",
            "o3",
            "o4",
        ]) {
            Some(Self::O200kBase)
        } else if starts(&["gpt-4", "gpt-3.5", "gpt-35"]) {
            Some(Self::Cl100kBase)
        } else {
            None
        }
    }

    /// The tokenizer's cell: each is built on first use only, since a built one holds tens of
    /// MiB (both together would put an idle API process past 80 MiB).
    fn cell(self) -> &'static OnceLock<CoreBPE> {
        static O200K: OnceLock<CoreBPE> = OnceLock::new();
        static CL100K: OnceLock<CoreBPE> = OnceLock::new();
        match self {
            Self::O200kBase => &O200K,
            Self::Cl100kBase => &CL100K,
        }
    }

    /// The tokenizer, built once per process (building one takes up to a second of CPU).
    fn bpe(self) -> &'static CoreBPE {
        let build: fn() -> anyhow::Result<CoreBPE> = match self {
            Self::O200kBase => tiktoken_rs::o200k_base,
            Self::Cl100kBase => tiktoken_rs::cl100k_base,
        };
        // The BPE data is compiled into the binary, so building can only fail on a broken build.
        self.cell()
            .get_or_init(|| build().expect("bundled tokenizer data is valid"))
    }

    /// Tokens of `text`, special tokens read as ordinary text. Counted in chunks of at most
    /// [`CHUNK_BYTES`]: the tokenizer takes time superlinear in the length of a run without a
    /// split point (2 MB of spaces takes tens of seconds whole, milliseconds in chunks). A split
    /// only loses merges across it, so the sum is at least the whole count; [`CHUNK_SLACK_TOKENS`]
    /// per split covers a pre-tokenizer that resynchronizes differently after one.
    pub fn count(self, text: &str) -> u64 {
        let bpe = self.bpe();
        let mut rest = text;
        let mut total = 0u64;
        while rest.len() > CHUNK_BYTES {
            let mut cut = CHUNK_BYTES;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (chunk, tail) = rest.split_at(cut);
            total = total
                .saturating_add(to_u64(bpe.count_ordinary(chunk)))
                .saturating_add(CHUNK_SLACK_TOKENS);
            rest = tail;
        }
        total.saturating_add(to_u64(bpe.count_ordinary(rest)))
    }
}

/// Longest text handed to the tokenizer at once.
const CHUNK_BYTES: usize = 4_096;
/// Tokens added for each split of a longer text.
const CHUNK_SLACK_TOKENS: u64 = 4;

/// Whether the tokenizer `model` is estimated with is built already (counting is then fast;
/// otherwise the first count builds it, which belongs on a blocking thread).
pub fn tokenizer_ready(model: &str) -> bool {
    Encoding::of_model(model)
        .unwrap_or(Encoding::Cl100kBase)
        .cell()
        .get()
        .is_some()
}

/// The model name without a provider prefix (`openai/gpt-4o` -> `gpt-4o`).
fn bare_model(model: &str) -> &str {
    model.rsplit('/').next().unwrap_or(model)
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Tokens of `text` as the model's tokenizer counts them; `cl100k_base` for models whose
/// tokenizer is not shipped. This is the realistic count (the fake upstream reports it), which
/// [`text_bound`] never undercuts.
pub fn text_tokens(model: &str, text: &str) -> u64 {
    Encoding::of_model(model)
        .unwrap_or(Encoding::Cl100kBase)
        .count(text)
}

/// An upper bound of the tokens `model` counts for `text` (see the module notes).
pub fn text_bound(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match Encoding::of_model(model) {
        Some(encoding) => encoding.count(text),
        None => {
            let cl100k = Encoding::Cl100kBase.count(text);
            cl100k.saturating_mul(3).div_ceil(2).min(to_u64(text.len()))
        }
    }
}

/// An upper bound of the prompt tokens of a chat request (`request` is its JSON object).
pub fn prompt_bound(model: &str, request: &Map<String, Value>) -> u64 {
    let image = if bare_model(model).starts_with("gpt-4o-mini") {
        IMAGE_TOKENS_GPT_4O_MINI
    } else {
        IMAGE_TOKENS
    };
    let mut total = PER_MESSAGE_TOKENS; // the reply's priming
    if let Some(Value::Array(messages)) = request.get("messages") {
        for message in messages {
            total = total
                .saturating_add(PER_MESSAGE_TOKENS)
                .saturating_add(value_bound(model, message, image));
        }
    }
    // Definitions the upstream renders into the prompt.
    for field in ["tools", "functions"] {
        if let Some(Value::Array(definitions)) = request.get(field) {
            for definition in definitions {
                total = total
                    .saturating_add(PER_DEFINITION_TOKENS)
                    .saturating_add(json_bound(model, definition));
            }
        }
    }
    for field in ["response_format", "tool_choice", "function_call"] {
        if let Some(value) = request.get(field).filter(|v| !v.is_null()) {
            total = total
                .saturating_add(PER_DEFINITION_TOKENS)
                .saturating_add(json_bound(model, value));
        }
    }
    total
}

/// Tokens of a value's JSON text.
fn json_bound(model: &str, value: &Value) -> u64 {
    match value {
        Value::String(text) => text_bound(model, text),
        other => text_bound(model, &other.to_string()),
    }
}

/// Tokens of a message (or a part of it): every string in it, images at the allowance, other
/// non-text parts at the bytes of their JSON.
fn value_bound(model: &str, value: &Value, image: u64) -> u64 {
    match value {
        Value::String(text) => text_bound(model, text),
        Value::Array(items) => items.iter().fold(0u64, |sum, item| {
            sum.saturating_add(value_bound(model, item, image))
        }),
        Value::Object(object) => match object.get("type").and_then(Value::as_str) {
            Some("image_url" | "input_image" | "image") => image,
            // Keys of a message are template syntax, already in the per-message allowance.
            Some("text") | None => object.values().fold(0u64, |sum, item| {
                sum.saturating_add(value_bound(model, item, image))
            }),
            Some(_) => to_u64(value.to_string().len()),
        },
        // Numbers and booleans (tool call ids, flags) are short; their text bounds them.
        Value::Number(n) => text_bound(model, &n.to_string()),
        Value::Bool(_) | Value::Null => 0,
    }
}

/// Why a request's output bound was refused: the field and the message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

/// The output tokens a request may be billed for: `max_tokens` or `max_completion_tokens` (the
/// larger if both; `limit.unset` if neither) times `n`. Each must be an integer from 1 to
/// `limit.max`, and `n` from 1 to [`MAX_CHOICES`].
pub fn output_bound(request: &Map<String, Value>, limit: OutputLimit) -> Result<u64, InvalidField> {
    let mut max_output = None;
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = positive_integer(request, field, limit.max)? {
            max_output = Some(max_output.map_or(n, |m: u64| m.max(n)));
        }
    }
    let choices = positive_integer(request, "n", MAX_CHOICES)?.unwrap_or(1);
    Ok(max_output.unwrap_or(limit.unset).saturating_mul(choices))
}

/// Gives a request that sets no output limit the one its estimate assumed (`limit.unset`), as
/// `max_completion_tokens` (which current OpenAI models and LiteLLM accept for every provider),
/// so the upstream cannot bill more output than was reserved.
pub fn hold_to_estimate(request: &mut Map<String, Value>, limit: OutputLimit) {
    let unset = |field: &str| matches!(request.get(field), None | Some(Value::Null));
    if unset("max_tokens") && unset("max_completion_tokens") {
        request.insert("max_completion_tokens".into(), Value::from(limit.unset));
    }
}

/// A field that must be an integer in `1..=limit` when present (null counts as absent).
fn positive_integer(
    request: &Map<String, Value>,
    field: &'static str,
    limit: u64,
) -> Result<Option<u64>, InvalidField> {
    let value = match request.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    match value.as_u64() {
        Some(n) if (1..=limit).contains(&n) => Ok(Some(n)),
        _ => Err(InvalidField {
            field,
            message: format!("`{field}` must be an integer from 1 to {limit}; got {value}"),
        }),
    }
}

/// A model's output limit, from its group config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit {
    /// The most output tokens a request may ask for.
    pub max: u64,
    /// The output tokens estimated for a request that asks for no limit.
    pub unset: u64,
}

impl OutputLimit {
    /// Without a configured limit: up to [`DEFAULT_OUTPUT_TOKEN_CAP`], [`DEFAULT_OUTPUT_TOKENS`]
    /// when unset.
    pub const DEFAULT: Self = Self {
        max: DEFAULT_OUTPUT_TOKEN_CAP,
        unset: DEFAULT_OUTPUT_TOKENS,
    };

    /// The group config's `max_output_tokens` (a positive integer) is both the most a request may
    /// ask for and what a request without a limit is estimated at, so that with it set every
    /// estimate is an upper bound; without it, [`OutputLimit::DEFAULT`].
    pub fn from_config(config: &Value) -> Self {
        match config
            .get("max_output_tokens")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
        {
            Some(n) => Self { max: n, unset: n },
            None => Self::DEFAULT,
        }
    }
}

#[cfg(test)]
#[path = "estimate_tests.rs"]
mod tests;
