//! Ending a batch: once no line of its job is queued or running, its output file (lines that
//! succeeded) and error file (the others) are written from the stored results in OpenAI's
//! output line format, its lines' costs are settled against the team's budget, and it takes its
//! terminal status, all in one transaction taken by one worker.

use saasllm_shared::db::batch_endings::{self, Ending, FinishedLine};
use saasllm_shared::db::batch_runs;
use saasllm_shared::db::files::{self, ChunkWriter};
use saasllm_shared::domain::batch_api::{BatchEnding, FilePurpose};
use saasllm_shared::domain::status::{BatchStatus, CallStatus};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

/// Lines read from the database at a time.
const PAGE: i64 = 1_000;

/// Ends a finalizing batch, unless another worker is ending it; returns whether this one did.
pub async fn finalize(db: &PgPool, batch_id: &str) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    let Some(batch) = batch_runs::take_finalizing(&mut tx, batch_id).await? else {
        return Ok(false);
    };
    let mut output = Output::new(&batch.batch_id, &batch.team_id);
    if let Some(job_id) = batch.job_id {
        let mut after = uuid::Uuid::nil();
        loop {
            let page = batch_endings::finished_lines(&mut tx, job_id, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.call_id;
            for line in &page {
                output.write(&mut tx, line).await?;
            }
        }
    }
    let (completed, failed) = (output.completed, output.failed);
    let (output_file_id, error_file_id) = output.finish(&mut tx).await?;
    let status = batch
        .ending
        .map_or(BatchStatus::Completed, BatchEnding::status);
    batch_endings::end(
        &mut tx,
        &batch,
        &Ending {
            status,
            output_file_id: output_file_id.as_deref(),
            error_file_id: error_file_id.as_deref(),
            completed_lines: completed,
            failed_lines: failed,
        },
    )
    .await?;
    tx.commit().await?;
    metrics::counter!("batches_ended_total", "status" => status.as_str()).increment(1);
    tracing::info!(
        batch_id,
        status = status.as_str(),
        completed,
        failed,
        "batch ended"
    );
    Ok(true)
}

/// The two files being written; each is created with its first line.
struct Output<'a> {
    batch_id: &'a str,
    team_id: &'a str,
    results: Option<ChunkWriter>,
    errors: Option<ChunkWriter>,
    completed: i32,
    failed: i32,
}

impl<'a> Output<'a> {
    fn new(batch_id: &'a str, team_id: &'a str) -> Self {
        Self {
            batch_id,
            team_id,
            results: None,
            errors: None,
            completed: 0,
            failed: 0,
        }
    }

    async fn write(&mut self, conn: &mut PgConnection, line: &FinishedLine) -> anyhow::Result<()> {
        let succeeded = line.status == CallStatus::Succeeded;
        let (file, suffix) = if succeeded {
            self.completed += 1;
            (&mut self.results, "output")
        } else {
            self.failed += 1;
            (&mut self.errors, "error")
        };
        if file.is_none() {
            let name = format!("{}_{suffix}.jsonl", self.batch_id);
            let id = files::new_file_id();
            *file = Some(
                ChunkWriter::start(conn, &id, self.team_id, FilePurpose::BatchOutput, &name)
                    .await?,
            );
        }
        let writer = file.as_mut().ok_or_else(|| anyhow::anyhow!("no writer"))?;
        let mut text = serde_json::to_vec(&output_line(line))?;
        text.push(b'\n');
        writer.write(conn, &text).await?;
        Ok(())
    }

    /// The ids of the files written (none for a kind with no line).
    async fn finish(
        self,
        conn: &mut PgConnection,
    ) -> anyhow::Result<(Option<String>, Option<String>)> {
        let mut ids = [None, None];
        for (slot, writer) in ids.iter_mut().zip([self.results, self.errors]) {
            if let Some(writer) = writer {
                *slot = Some(writer.finish(conn).await?.file_id);
            }
        }
        let [results, errors] = ids;
        Ok((results, errors))
    }
}

/// A line of the output or error file, in OpenAI's format: the upstream's answer for a line
/// that ran (its error body when it failed there), or the error for one that never ran.
pub fn output_line(line: &FinishedLine) -> Value {
    let id = format!("batch_req_{}", line.call_id.simple());
    let request_id = line.call_id.to_string();
    if line.status == CallStatus::Succeeded {
        return json!({
            "id": id,
            "custom_id": line.custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": line.response},
            "error": null,
        });
    }
    let message = line
        .error
        .clone()
        .unwrap_or_else(|| "the request failed".into());
    match &line.error_code {
        // Refused before it ran, or withdrawn (cancelled, expired): it never reached a model.
        Some(code) => json!({
            "id": id,
            "custom_id": line.custom_id,
            "response": null,
            "error": {"code": code, "message": message},
        }),
        None => json!({
            "id": id,
            "custom_id": line.custom_id,
            "response": {
                "status_code": line.http_status.filter(|s| *s >= 400).unwrap_or(502),
                "request_id": request_id,
                "body": {"error": {"message": message, "type": "upstream_error", "param": null, "code": null}},
            },
            "error": null,
        }),
    }
}
