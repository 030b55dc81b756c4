//! The batch's files: the JSONL input written and uploaded, and the output file checked.

use std::collections::HashSet;

use anyhow::{Context, ensure};
use serde_json::{Value, json};

use crate::GROUP;
use crate::requests::{chat_body, send};
use crate::stage::Stage;

/// `lines` chat completions on the benchmark's model group, `custom_id` `line-<n>`.
pub fn input_file(lines: usize) -> Vec<u8> {
    let mut body = chat_body();
    body["model"] = json!(GROUP);
    let mut file = Vec::new();
    for n in 0..lines {
        let line = json!({"custom_id": format!("line-{n}"), "method": "POST",
                          "url": "/v1/chat/completions", "body": body});
        // Serializing a `Value` cannot fail.
        file.extend(serde_json::to_vec(&line).unwrap_or_default());
        file.push(b'\n');
    }
    file
}

pub async fn upload(
    client: &reqwest::Client,
    stage: &Stage<'_>,
    file: &[u8],
) -> anyhow::Result<String> {
    let part = reqwest::multipart::Part::bytes(file.to_vec())
        .file_name("bench-batch.jsonl")
        .mime_str("application/jsonl")?;
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part("file", part);
    let url = format!("{}/v1/files", stage.url);
    let uploaded = send(client.post(url).bearer_auth(&stage.key).multipart(form)).await?;
    ensure!(
        uploaded["bytes"].as_u64() == Some(file.len() as u64),
        "the upload stored {} bytes of {}",
        uploaded["bytes"],
        file.len()
    );
    uploaded["id"]
        .as_str()
        .map(str::to_owned)
        .context("no id in the upload answer")
}

/// Checks the completed batch and its output file: every line succeeded, one output line per
/// input line with a 200 answer, each `custom_id` of the input exactly once. Returns the output
/// file's size in bytes.
pub async fn check_output(
    client: &reqwest::Client,
    stage: &Stage<'_>,
    batch: &Value,
    lines: usize,
) -> anyhow::Result<usize> {
    let counts = &batch["request_counts"];
    ensure!(
        counts["total"].as_u64() == Some(lines as u64)
            && counts["completed"].as_u64() == Some(lines as u64)
            && counts["failed"].as_u64() == Some(0)
            && batch["error_file_id"].is_null(),
        "batch {} of {lines} lines: request_counts {counts}, error file {}",
        batch["id"],
        batch["error_file_id"]
    );
    let output_id = batch["output_file_id"]
        .as_str()
        .context("the completed batch has no output file")?;
    let content = client
        .get(format!("{}/v1/files/{output_id}/content", stage.url))
        .bearer_auth(&stage.key)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let mut ids = HashSet::with_capacity(lines);
    for (n, line) in content
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let line: Value = serde_json::from_slice(line)
            .with_context(|| format!("output line {} is not JSON", n + 1))?;
        let id = line["custom_id"].as_str().unwrap_or_default();
        let known = id
            .strip_prefix("line-")
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i < lines);
        ensure!(
            known && line["response"]["status_code"] == json!(200),
            "output line {}: custom_id {id:?}, response status {}",
            n + 1,
            line["response"]["status_code"]
        );
        ensure!(
            ids.insert(id.to_owned()),
            "custom_id {id} is in the output twice"
        );
    }
    ensure!(
        ids.len() == lines,
        "the output file has {} lines for {lines} input lines",
        ids.len()
    );
    Ok(content.len())
}
