use std::collections::HashSet;

use chrono::Utc;
use saasllm_shared::db::model_groups::{ModelEntryRow, ModelGroupRow};
use saasllm_shared::domain::status::{CallEndpoint, ModelGroupStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Grants, check_line};
use crate::batches::validate::LineReader;

fn grants() -> Grants {
    let group = |name: &str, models: &[&str]| {
        let id = Uuid::now_v7();
        let row = ModelGroupRow {
            model_group_id: id,
            group_name: name.to_owned(),
            display_name: None,
            description: None,
            status: ModelGroupStatus::Active,
            metadata: json!({}),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let entries = models
            .iter()
            .enumerate()
            .map(|(priority, model)| ModelEntryRow {
                model_group_id: id,
                priority: priority as i32,
                model_name: (*model).to_owned(),
                config: json!({}),
            })
            .collect();
        (row, entries)
    };
    Grants {
        groups: vec![
            group("ChatAgent", &["gpt-4o-mini", "gpt-4"]),
            group("Embedder", &["text-embedding-3-small"]),
        ],
    }
}

fn check(line: &Value, endpoint: CallEndpoint) -> super::CheckedLine {
    let raw = serde_json::to_vec(line).expect("json");
    check_line(&raw, 1, endpoint, &grants(), &mut HashSet::new()).expect("a valid line")
}

fn chat(model: &str) -> Value {
    json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": model, "messages": [{"role": "user", "content": "hello"}]}})
}

#[test]
fn a_group_runs_its_chain_and_a_model_runs_alone() {
    let by_group = check(&chat("ChatAgent"), CallEndpoint::Chat);
    let planned = by_group.outcome.expect("runs");
    assert!(planned.target.model_group_id.is_some());
    assert_eq!(planned.target.chain.len(), 2);
    // No output limit asked: the chain's smallest default is held, so the estimate bounds it.
    assert_eq!(planned.request["max_completion_tokens"], 1024);

    let direct = check(&chat("gpt-4"), CallEndpoint::Chat)
        .outcome
        .expect("runs");
    assert_eq!(direct.target.model_group_id, None);
    assert_eq!(direct.target.chain[0].0, "gpt-4");
    // The group's estimate covers its dearest model (gpt-4).
    assert!(planned.estimate >= direct.estimate);
}

#[test]
fn line_problems_refuse_the_line_with_openai_codes() {
    let mut wrong_url = chat("ChatAgent");
    wrong_url["url"] = json!("/v1/embeddings");
    let mut wrong_method = chat("ChatAgent");
    wrong_method["method"] = json!("GET");
    let mut streaming = chat("ChatAgent");
    streaming["body"]["stream"] = json!(true);
    let mut nul = chat("ChatAgent");
    nul["body"]["messages"][0]["content"] = json!("a\u{0}b");
    let cases = [
        (chat("claude-3-opus"), "model_not_allowed"),
        (wrong_url, "invalid_url"),
        (wrong_method, "invalid_method"),
        (streaming, "invalid_request"),
        (nul, "invalid_request"),
        (
            json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": 3}),
            "invalid_body",
        ),
        (
            json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}),
            "invalid_request",
        ),
    ];
    for (line, code) in cases {
        let checked = check(&line, CallEndpoint::Chat);
        let (found, message) = checked.outcome.expect_err("refused");
        assert_eq!(found, code, "{line}: {message}");
    }
}

#[test]
fn embeddings_lines_are_estimated_from_their_input() {
    let line = json!({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
                      "body": {"model": "Embedder", "input": ["one", "two"]}});
    let planned = check(&line, CallEndpoint::Embeddings)
        .outcome
        .expect("runs");
    assert!(planned.estimate >= 1);
    let bad = json!({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
                     "body": {"model": "Embedder", "input": []}});
    assert_eq!(
        check(&bad, CallEndpoint::Embeddings)
            .outcome
            .expect_err("refused")
            .0,
        "invalid_request"
    );
}

#[test]
fn file_problems_fail_the_batch_with_their_line() {
    let grants = grants();
    let mut seen = HashSet::new();
    let endpoint = CallEndpoint::Chat;
    let not_json = check_line(b"{nope", 3, endpoint, &grants, &mut seen).expect_err("fails");
    assert_eq!((not_json.code, not_json.line), ("invalid_json_line", 3));
    let array = check_line(b"[1]", 4, endpoint, &grants, &mut seen).expect_err("fails");
    assert_eq!(array.code, "invalid_json_line");
    let no_id =
        check_line(br#"{"method": "POST"}"#, 5, endpoint, &grants, &mut seen).expect_err("fails");
    assert_eq!(no_id.code, "invalid_custom_id");
    let long_id = serde_json::to_vec(&json!({"custom_id": "x".repeat(513)})).expect("json");
    assert_eq!(
        check_line(&long_id, 6, endpoint, &grants, &mut seen)
            .expect_err("fails")
            .code,
        "invalid_custom_id"
    );
    let line = serde_json::to_vec(&chat("ChatAgent")).expect("json");
    check_line(&line, 7, endpoint, &grants, &mut seen).expect("first use");
    let again = check_line(&line, 8, endpoint, &grants, &mut seen).expect_err("fails");
    assert_eq!((again.code, again.line), ("duplicate_custom_id", 8));
}

#[test]
fn lines_are_split_across_chunks_without_blank_ones() {
    let mut reader = LineReader::default();
    let push =
        |reader: &mut LineReader, bytes: &[u8]| reader.push(bytes).ok().expect("short lines");
    let mut lines = push(&mut reader, b"{\"a\"");
    assert!(lines.is_empty());
    lines.extend(push(&mut reader, b": 1}\r\n\n  \n{\"b\": 2}\n{\"c\""));
    lines.extend(push(&mut reader, b": 3}"));
    lines.extend(reader.finish());
    assert_eq!(
        lines,
        vec![
            b"{\"a\": 1}".to_vec(),
            b"{\"b\": 2}".to_vec(),
            b"{\"c\": 3}".to_vec()
        ]
    );
}

#[test]
fn a_line_past_the_limit_is_reported_by_its_number_without_being_kept() {
    let mut reader = LineReader::default();
    let first = reader.push(b"{}\n\n").ok().expect("short lines");
    assert_eq!(first.len(), 1);
    let piece = vec![b'a'; super::MAX_LINE_BYTES / 2 + 1];
    assert!(reader.push(&piece).is_ok());
    let Err(super::super::validate::LineTooLong(line)) = reader.push(&piece) else {
        panic!("a line over the limit was accepted");
    };
    assert_eq!(line, 3);
}
