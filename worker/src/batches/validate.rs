//! Validation: a batch's input file read chunk by chunk and checked line by line (on a blocking
//! thread: estimating a large prompt takes milliseconds), its lines inserted as calls of a new
//! job a chunk's lines at a time, their estimates reserved against the team's budget (lines it cannot cover fail
//! with `insufficient_quota`), and the batch moved to `in_progress`, all in one transaction.
//! The lines to run are queued after it commits. A malformed file fails the batch instead.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use saasllm_shared::db;
use saasllm_shared::db::batch_runs::{self, Line};
use saasllm_shared::db::batches::BatchRow;
use saasllm_shared::domain::status::CallEndpoint;
use saasllm_shared::queue::CallQueue;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::lines::{
    self, CheckedLine, FileError, Grants, MAX_LINE_BYTES, MAX_LINES, MAX_REPORTED_ERRORS,
};

/// A worker that has not finished validating after this long is taken for dead.
pub const TAKEOVER_SECS: f64 = 600.0;

/// Validates the next batch waiting for it, if any; returns whether there was one.
pub async fn next(db: &PgPool, queue: &CallQueue) -> anyhow::Result<bool> {
    let Some(batch) = batch_runs::take_validating(db, TAKEOVER_SECS).await? else {
        return Ok(false);
    };
    let mut tx = db.begin().await?;
    match load(&mut tx, &batch).await? {
        Loaded::Failed(errors) => {
            drop(tx);
            let errors: Vec<Value> = errors.iter().map(FileError::to_json).collect();
            let mut conn = db.acquire().await?;
            batch_runs::fail(&mut conn, &batch.batch_id, &Value::Array(errors)).await?;
            metrics::counter!("batches_failed_validation_total").increment(1);
        }
        Loaded::Ready(ready) => {
            let to_queue = reserve_and_start(&mut tx, &batch, ready).await?;
            let Some(to_queue) = to_queue else {
                // Cancelled while being validated: nothing it inserted is kept.
                return Ok(true);
            };
            tx.commit().await?;
            if !to_queue.is_empty() {
                let limits = db::teams::limits(db, &batch.team_id)
                    .await?
                    .unwrap_or_default();
                if let Err(e) = queue.push(&batch.team_id, &limits, &to_queue).await {
                    // The lines stay queued in PostgreSQL; the reconciler pushes them again.
                    tracing::warn!(error = %e, batch_id = %batch.batch_id, "could not queue a batch's lines");
                }
            }
        }
    }
    Ok(true)
}

/// A file read to its end.
enum Loaded {
    Failed(Vec<FileError>),
    Ready(Ready),
}

/// The inserted job and the lines to run, with their estimates, in file order.
struct Ready {
    job_id: Uuid,
    total_lines: i32,
    runnable: Vec<(Uuid, i64)>,
}

/// Reads and checks the file, inserting its lines as the job's calls page by page.
async fn load(conn: &mut PgConnection, batch: &BatchRow) -> anyhow::Result<Loaded> {
    if db::files::find(&mut *conn, &batch.team_id, &batch.input_file_id)
        .await?
        .is_none()
    {
        return Ok(Loaded::Failed(vec![FileError {
            code: "invalid_file",
            message: format!("input file '{}' no longer exists", batch.input_file_id),
            line: 0,
        }]));
    }
    let grants = Arc::new(Grants {
        groups: db::model_groups::granted_to(&mut *conn, &batch.team_id).await?,
    });
    let job_id = Uuid::now_v7();
    batch_runs::insert_job(&mut *conn, job_id, batch).await?;

    let mut loading = Loading {
        batch,
        job_id,
        endpoint: batch.endpoint.call_endpoint(),
        grants,
        seen: HashSet::new(),
        errors: Vec::new(),
        runnable: Vec::new(),
        total: 0,
    };
    let mut reader = LineReader::default();
    let mut seq = 0;
    loop {
        let chunk = db::files::chunk(&mut *conn, &batch.input_file_id, seq).await?;
        seq += 1;
        let Some(page) = loading.lines_of(&mut reader, chunk.as_deref()) else {
            break;
        };
        if loading.take_page(conn, page).await?.is_break() || chunk.is_none() {
            break;
        }
    }
    Ok(loading.end())
}

/// A file being read: what its lines so far came to.
struct Loading<'a> {
    batch: &'a BatchRow,
    job_id: Uuid,
    endpoint: CallEndpoint,
    grants: Arc<Grants>,
    /// Custom ids met so far (each must be unique in the file).
    seen: HashSet<String>,
    errors: Vec<FileError>,
    runnable: Vec<(Uuid, i64)>,
    /// Lines read so far.
    total: usize,
}

impl Loading<'_> {
    /// The lines `chunk` completes (the last line at the end of the file, `chunk` being `None`);
    /// `None` when a line is too long, which fails the file.
    fn lines_of(&mut self, reader: &mut LineReader, chunk: Option<&[u8]>) -> Option<Vec<Vec<u8>>> {
        let Some(bytes) = chunk else {
            return Some(reader.finish());
        };
        match reader.push(bytes) {
            Ok(page) => Some(page),
            Err(LineTooLong(line)) => {
                self.errors.push(FileError {
                    code: "line_too_long",
                    message: format!(
                        "line {line} is longer than {MAX_LINE_BYTES} bytes, the most one request may take"
                    ),
                    line,
                });
                None
            }
        }
    }

    /// Checks a page of lines and, while the file has no error, inserts them. Breaks when the
    /// file has too many lines or errors to go on.
    async fn take_page(
        &mut self,
        conn: &mut PgConnection,
        page: Vec<Vec<u8>>,
    ) -> anyhow::Result<ControlFlow<()>> {
        if page.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        let first = self.total + 1;
        self.total += page.len();
        if self.total > MAX_LINES {
            self.errors.push(FileError {
                code: "too_many_lines",
                message: format!("a batch file holds at most {MAX_LINES} requests"),
                line: MAX_LINES + 1,
            });
            return Ok(ControlFlow::Break(()));
        }
        let seen = std::mem::take(&mut self.seen);
        let (checked, seen_after, page_errors) =
            check_page(page, first, self.endpoint, Arc::clone(&self.grants), seen).await?;
        self.seen = seen_after;
        self.errors.extend(page_errors);
        if self.errors.len() >= MAX_REPORTED_ERRORS {
            return Ok(ControlFlow::Break(()));
        }
        if self.errors.is_empty() {
            let inserted = insert_page(conn, self.batch, self.job_id, self.endpoint, &checked);
            self.runnable.extend(inserted.await?);
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The file read: its errors (an empty file is one), or the job ready to run.
    fn end(mut self) -> Loaded {
        if self.errors.is_empty() && self.total == 0 {
            self.errors.push(FileError {
                code: "empty_file",
                message: "the input file holds no requests".into(),
                line: 0,
            });
        }
        if !self.errors.is_empty() {
            self.errors.truncate(MAX_REPORTED_ERRORS);
            return Loaded::Failed(self.errors);
        }
        Loaded::Ready(Ready {
            job_id: self.job_id,
            total_lines: self.total as i32,
            runnable: self.runnable,
        })
    }
}

/// Checks a page of raw lines on a blocking thread.
async fn check_page(
    page: Vec<Vec<u8>>,
    first: usize,
    endpoint: CallEndpoint,
    grants: Arc<Grants>,
    mut seen: HashSet<String>,
) -> anyhow::Result<(Vec<CheckedLine>, HashSet<String>, Vec<FileError>)> {
    tokio::task::spawn_blocking(move || {
        let mut checked = Vec::with_capacity(page.len());
        let mut errors = Vec::new();
        for (offset, raw) in page.iter().enumerate() {
            match lines::check_line(raw, first + offset, endpoint, &grants, &mut seen) {
                Ok(line) => checked.push(line),
                Err(e) => errors.push(e),
            }
        }
        (checked, seen, errors)
    })
    .await
    .map_err(|e| anyhow::anyhow!("checking a batch's lines failed: {e}"))
}

/// Inserts a page of checked lines; returns the ids and estimates of those to run.
async fn insert_page(
    conn: &mut PgConnection,
    batch: &BatchRow,
    job_id: Uuid,
    endpoint: CallEndpoint,
    checked: &[CheckedLine],
) -> anyhow::Result<Vec<(Uuid, i64)>> {
    let rows: Vec<Line<'_>> = checked
        .iter()
        .map(|line| match &line.outcome {
            Ok(planned) => Line {
                custom_id: &line.custom_id,
                model_group: &line.model,
                model_group_id: planned.target.model_group_id,
                model_chain: planned
                    .target
                    .model_group_id
                    .is_none()
                    .then(|| json!(planned.target.chain)),
                request: planned.request.clone(),
                budget_micro_usd: Some(planned.estimate),
                refused: None,
            },
            Err((code, message)) => Line {
                custom_id: &line.custom_id,
                model_group: &line.model,
                model_group_id: None,
                model_chain: None,
                request: json!({}),
                budget_micro_usd: None,
                refused: Some((code, message.clone())),
            },
        })
        .collect();
    let ids = batch_runs::insert_lines(conn, job_id, &batch.team_id, endpoint, &rows).await?;
    let estimates = checked
        .iter()
        .filter_map(|line| line.outcome.as_ref().ok().map(|p| p.estimate));
    Ok(ids.into_iter().zip(estimates).collect())
}

/// Reserves the estimates of the lines the budget covers, in file order (a line that does not
/// fit fails with `insufficient_quota`, and later, cheaper lines may still fit), and starts the
/// batch. The team's balance row is locked only for this last step. `None` when the batch was
/// cancelled meanwhile (the caller drops the transaction).
async fn reserve_and_start(
    conn: &mut PgConnection,
    batch: &BatchRow,
    ready: Ready,
) -> anyhow::Result<Option<Vec<Uuid>>> {
    let free = batch_runs::lock_free_budget(conn, &batch.team_id, batch.usd_per_credit_micro)
        .await?
        .unwrap_or(0);
    let mut reserved = 0i64;
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for (id, estimate) in ready.runnable {
        if reserved.saturating_add(estimate) <= free {
            reserved += estimate;
            accepted.push(id);
        } else {
            refused.push(id);
        }
    }
    if !refused.is_empty() {
        batch_runs::refuse_for_budget(conn, &refused).await?;
    }
    let slice_id = (reserved > 0).then(Uuid::now_v7);
    if let Some(slice_id) = slice_id {
        batch_runs::reserve(conn, batch, slice_id, reserved).await?;
    }
    let started = batch_runs::start(
        conn,
        &batch.batch_id,
        ready.job_id,
        ready.total_lines,
        slice_id,
        !accepted.is_empty(),
    )
    .await?;
    Ok(started.then_some(accepted))
}

/// Splits content arriving in chunks into lines (without their `\n` or `\r\n`), skipping
/// blank lines. A line longer than `MAX_LINE_BYTES` is not kept in memory: `push` reports it.
#[derive(Default)]
pub struct LineReader {
    partial: Vec<u8>,
    /// Lines completed so far, blank ones included (for the number of a line too long).
    seen: usize,
}

/// A line longer than `MAX_LINE_BYTES`, by its 1-based number among all lines.
pub struct LineTooLong(pub usize);

impl LineReader {
    /// The lines completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.extend(&rest[..end])?;
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.partial);
            self.seen += 1;
            Self::keep(&mut lines, line);
        }
        self.extend(rest)?;
        Ok(lines)
    }

    fn extend(&mut self, piece: &[u8]) -> Result<(), LineTooLong> {
        if self.partial.len() + piece.len() > MAX_LINE_BYTES {
            return Err(LineTooLong(self.seen + 1));
        }
        self.partial.extend_from_slice(piece);
        Ok(())
    }

    /// The last line, if the content did not end with a newline.
    pub fn finish(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        Self::keep(&mut lines, std::mem::take(&mut self.partial));
        lines
    }

    fn keep(lines: &mut Vec<Vec<u8>>, mut line: Vec<u8>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(line);
        }
    }
}
