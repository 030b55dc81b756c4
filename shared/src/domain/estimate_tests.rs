use serde_json::{Value, json};

use super::*;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn picks_the_tokenizer_of_openai_families_with_or_without_a_provider_prefix() {
    for model in [
        "gpt-4o",
        "openai/gpt-4o-mini",
        "gpt-4.1-nano",
        "o1",
        "o3-mini",
        "o4-mini",
    ] {
        assert_eq!(
            Encoding::of_model(model),
            Some(Encoding::O200kBase),
            "{model}"
        );
    }
    for model in ["gpt-4", "azure/gpt-4-turbo", "gpt-3.5-turbo"] {
        assert_eq!(
            Encoding::of_model(model),
            Some(Encoding::Cl100kBase),
            "{model}"
        );
    }
    for model in ["claude-3-5-sonnet", "mistral/mistral-large", "fake-model"] {
        assert_eq!(Encoding::of_model(model), None, "{model}");
    }
}

#[test]
fn counts_known_tokenizations_exactly() {
    // Reference counts from OpenAI's tiktoken.
    assert_eq!(Encoding::Cl100kBase.count("hello world"), 2);
    assert_eq!(Encoding::O200kBase.count("hello world"), 2);
    assert_eq!(
        Encoding::Cl100kBase.count("<|endoftext|>"),
        7,
        "special tokens are ordinary text"
    );
}

#[test]
fn other_models_get_one_and_a_half_times_cl100k_but_never_more_than_the_bytes() {
    let prose = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let cl100k = Encoding::Cl100kBase.count(&prose);
    assert_eq!(
        text_bound("claude-3-haiku", &prose),
        (cl100k * 3).div_ceil(2)
    );
    // Digits tokenize in threes in cl100k: 1.5x of that stays under one token per byte.
    let noise = "\u{0}\u{1}\u{2}".repeat(50);
    assert!(text_bound("mystery", &noise) <= noise.len() as u64);
    assert_eq!(text_bound("mystery", ""), 0);
}

#[test]
fn a_four_kilobyte_prompt_is_counted_near_its_real_size_and_quickly() {
    let prompt = "Summarize the following quarterly report in three bullet points. ".repeat(64);
    assert!(prompt.len() >= 4_000);
    let request =
        object(json!({"model": "gpt-4", "messages": [{"role": "user", "content": prompt}]}));
    let started = std::time::Instant::now();
    let bound = prompt_bound("gpt-4", &request);
    let real = Encoding::Cl100kBase.count(&prompt);
    assert!(bound >= real, "{bound} < {real}");
    assert!(bound <= real + 40, "{bound} is far above {real}");
    assert!(
        bound < prompt.len() as u64 / 3,
        "bytes were counted, not tokens"
    );
    // Generous for a debug build; a release build takes well under a millisecond.
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn the_prompt_bound_counts_names_tools_schemas_and_non_text_parts() {
    let plain = object(json!({"messages": [{"role": "user", "content": "hi"}]}));
    let named = object(
        json!({"messages": [{"role": "user", "name": "a_rather_long_user_name", "content": "hi"}]}),
    );
    let tools = object(json!({"messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look a word up in the dictionary",
                   "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}}));
    let image = object(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}));
    let audio_data = "A".repeat(10_000);
    let audio = object(json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": audio_data, "format": "wav"}}]}]}));

    let base = prompt_bound("gpt-4o", &plain);
    assert!(base > 2 * PER_MESSAGE_TOKENS);
    assert!(prompt_bound("gpt-4o", &named) > base);
    assert!(prompt_bound("gpt-4o", &tools) > base + 2 * PER_DEFINITION_TOKENS + 20);
    assert!(prompt_bound("gpt-4o", &image) >= base + IMAGE_TOKENS);
    assert!(prompt_bound("gpt-4o-mini", &image) >= base + IMAGE_TOKENS_GPT_4O_MINI);
    assert!(prompt_bound("gpt-4o", &audio) >= 10_000);
}

#[test]
fn the_prompt_bound_is_never_below_the_tokenizer_count_for_odd_text() {
    for text in [
        "\u{0}".repeat(300),
        " ".repeat(2_000),
        "a".repeat(5_000),
        "日本語のテキスト🙂".repeat(40),
        "<|endoftext|><|im_start|>".repeat(10),
    ] {
        let request = object(json!({"messages": [{"role": "user", "content": text}]}));
        for model in ["gpt-4o", "gpt-4", "claude-3-haiku", "cost-100"] {
            assert!(
                prompt_bound(model, &request) >= text_tokens(model, &text),
                "{model}: {text:?}"
            );
        }
    }
}

#[test]
fn output_bound_multiplies_max_tokens_by_n() {
    let bound = |body: Value| output_bound(&object(body), OutputLimit::DEFAULT);
    assert_eq!(bound(json!({})), Ok(DEFAULT_OUTPUT_TOKENS));
    assert_eq!(
        bound(json!({"max_tokens": null})),
        Ok(DEFAULT_OUTPUT_TOKENS)
    );
    assert_eq!(bound(json!({"max_tokens": 100})), Ok(100));
    assert_eq!(bound(json!({"max_tokens": 100, "n": 3})), Ok(300));
    assert_eq!(
        bound(json!({"max_tokens": 10, "max_completion_tokens": 50})),
        Ok(50)
    );
    assert_eq!(
        bound(json!({"max_completion_tokens": 131_072, "n": 128})),
        Ok(131_072 * 128)
    );
}

#[test]
fn output_bound_refuses_what_is_not_a_sane_positive_integer_naming_the_field() {
    for (body, field) in [
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"max_tokens": -5}), "max_tokens"),
        (json!({"max_tokens": 1e20}), "max_tokens"),
        (json!({"max_tokens": 100.0}), "max_tokens"),
        (json!({"max_tokens": "9"}), "max_tokens"),
        (json!({"max_tokens": i64::MAX}), "max_tokens"),
        (
            json!({"max_tokens": 200_000_000_000_000_000_u64}),
            "max_tokens",
        ),
        (json!({"max_tokens": 131_073}), "max_tokens"),
        (
            json!({"max_completion_tokens": true}),
            "max_completion_tokens",
        ),
        (json!({"n": 0}), "n"),
        (json!({"n": 129}), "n"),
        (json!({"n": "2"}), "n"),
    ] {
        let refused =
            output_bound(&object(body.clone()), OutputLimit::DEFAULT).expect_err(&body.to_string());
        assert_eq!(refused.field, field, "{body}");
        assert!(refused.message.contains(field), "{}", refused.message);
    }
}

#[test]
fn the_model_limit_comes_from_the_group_config_and_then_bounds_requests_without_one() {
    assert_eq!(OutputLimit::from_config(&json!({})), OutputLimit::DEFAULT);
    assert_eq!(
        OutputLimit::from_config(&json!({"max_output_tokens": 0})),
        OutputLimit::DEFAULT
    );
    assert_eq!(
        OutputLimit::from_config(&json!({"max_output_tokens": "x"})),
        OutputLimit::DEFAULT
    );
    let limit = OutputLimit::from_config(&json!({"max_output_tokens": 4_096}));
    assert_eq!(
        limit,
        OutputLimit {
            max: 4_096,
            unset: 4_096
        }
    );
    assert_eq!(output_bound(&object(json!({"n": 2})), limit), Ok(8_192));
    let refused = output_bound(&object(json!({"max_tokens": 5_000})), limit).expect_err("above");
    assert_eq!(refused.field, "max_tokens");
    assert!(refused.message.contains("4096"), "{}", refused.message);
}

#[test]
fn long_runs_are_counted_in_chunks_quickly_and_never_below_the_whole_count() {
    // Whole, 200 KB of spaces takes the tokenizer about a second (2 MB, tens of seconds).
    let spaces = " ".repeat(200_000);
    let started = std::time::Instant::now();
    let chunked = Encoding::Cl100kBase.count(&spaces);
    assert!(chunked > 0 && chunked <= spaces.len() as u64);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let prose = "Churn fell to two percent after the onboarding flow was rewritten. ".repeat(300);
    let multibyte = "日本語のテキスト🙂".repeat(1_000);
    for text in [&prose, &multibyte] {
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let whole = to_u64(encoding.bpe().count_ordinary(text));
            let chunked = encoding.count(text);
            assert!(chunked >= whole, "{chunked} < {whole}");
            assert!(
                chunked <= whole + whole / 50 + 8,
                "{chunked} far above {whole}"
            );
        }
    }
}
