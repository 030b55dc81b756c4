//! OpenAI's Batch API end to end: a JSONL file of chat completions (50,000 lines, OpenAI's
//! largest batch) is uploaded to `POST /v1/files`, a batch is created on it, and
//! `GET /v1/batches/{id}` is polled until it has completed, with separate `saasllm-worker`
//! processes doing the work (validation, the lines, the output file). Then the output file is
//! downloaded and checked: one successful answer per line, every `custom_id` once.
//!
//! It runs on a stage of its own (see [`Stage`]: API without embedded workers, its own database
//! and queue), so only the workers started for the batch move it. The phases are timed by the
//! client, as the time the poll first sees each status: the batch's own `in_progress_at` and
//! `completed_at` are the start times of the transactions that validate and finalize it, so they
//! do not tell how long those took.

mod files;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::drain::DrainSetup;
use crate::procs::cpu_json;
use crate::report::cpu_text;
use crate::requests::send;
use crate::stage::{Stage, Workers, empty_calls};
use files::{check_output, input_file, upload};

/// Lines of the batch: OpenAI's most per batch, and a smoke run's.
const LINES: usize = 50_000;
const SMOKE_LINES: usize = 500;
const MIB: f64 = 1_048_576.0;
/// The table's header; [`BatchRun::print`] writes its rows.
const HEADER: &str = "batch api                       lines upload s  validate  run s final s total s run l/s all l/s calls/s vs drain  cpu cores";
/// How often the batch is polled. Each poll counts the batch's calls in PostgreSQL, so polling
/// much faster would load the machine it measures.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// A batch that has not completed after this long is reported as a failure.
const BATCH_TIMEOUT: Duration = Duration::from_secs(900);
/// How long workers may take to start looking for batch work.
const WORKERS_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One batch, driven by `workers` processes. Times in seconds.
struct BatchRun {
    workers: usize,
    lines: usize,
    file_bytes: usize,
    upload_secs: f64,
    /// Batch created -> first poll that sees it `in_progress` (or past it).
    validate_secs: f64,
    /// -> first poll that sees it `finalizing` (or past it).
    run_secs: f64,
    /// -> first poll that sees it `completed`.
    finalize_secs: f64,
    /// If no poll saw `finalizing`, finalization was shorter than a poll and is in `run_secs`.
    finalizing_seen: bool,
    /// First line started -> last finished, by the calls' own times (as the drain measures).
    calls_secs: f64,
    output_bytes: usize,
    worker_rss_peak_mib: f64,
    cpu: Vec<(&'static str, f64)>,
}

impl BatchRun {
    /// Upload, then created -> completed seen (the workers' start-up between them excluded).
    fn total_secs(&self) -> f64 {
        self.upload_secs + self.validate_secs + self.run_secs + self.finalize_secs
    }

    fn run_per_sec(&self) -> f64 {
        self.lines as f64 / self.run_secs
    }

    fn overall_per_sec(&self) -> f64 {
        self.lines as f64 / self.total_secs()
    }

    fn print(&self, drain_per_sec: Option<f64>) {
        println!(
            "{:<30} {:>6} {:>8.2} {:>9.2} {:>6.2} {:>7.2} {:>7.2} {:>7.0} {:>7.0} {:>7.0} {:>8}  {}",
            format!("batch: {} worker process(es)", self.workers),
            self.lines,
            self.upload_secs,
            self.validate_secs,
            self.run_secs,
            self.finalize_secs,
            self.total_secs(),
            self.run_per_sec(),
            self.overall_per_sec(),
            self.lines as f64 / self.calls_secs,
            drain_per_sec.map_or("n/a".into(), |d| format!("{:.2}", self.run_per_sec() / d)),
            cpu_text(&self.cpu),
        );
        let unseen = "; finalizing not seen by a poll (counted in run)";
        println!(
            "  input {:.1} MiB, output {:.1} MiB (checked), worker RSS peak {:.1} MiB{}",
            self.file_bytes as f64 / MIB,
            self.output_bytes as f64 / MIB,
            self.worker_rss_peak_mib,
            if self.finalizing_seen { "" } else { unseen },
        );
    }

    fn to_json(&self, drain_per_sec: Option<f64>) -> Value {
        json!({
            "workers": self.workers,
            "lines": self.lines,
            "input_file_bytes": self.file_bytes,
            "upload_secs": self.upload_secs,
            "validate_secs": self.validate_secs,
            "run_secs": self.run_secs,
            "finalize_secs": self.finalize_secs,
            "finalizing_seen": self.finalizing_seen,
            "total_secs": self.total_secs(),
            "lines_per_sec_run": self.run_per_sec(),
            "lines_per_sec_overall": self.overall_per_sec(),
            "calls_secs": self.calls_secs,
            "calls_per_sec": self.lines as f64 / self.calls_secs,
            "drain_calls_per_sec": drain_per_sec,
            "run_vs_drain": drain_per_sec.map(|d| self.run_per_sec() / d),
            "output_file_bytes": self.output_bytes,
            "worker_rss_peak_mib": self.worker_rss_peak_mib,
            "cpu_cores": cpu_json(&self.cpu),
        })
    }
}

/// Runs a batch of `LINES` lines (`SMOKE_LINES` in smoke mode) once for each entry of
/// `worker_counts`, on the drain's processes and a database `db` of its own, prints a row for
/// each and returns the scenario's JSON report. `drain` is the drain scenario's report of the
/// same run, if it ran: its calls/s with the same number of workers is each row's baseline.
pub async fn run(
    drain_setup: &DrainSetup<'_>,
    db: &str,
    smoke: bool,
    worker_counts: &[usize],
    drain: Option<&Value>,
) -> anyhow::Result<Value> {
    let lines = if smoke { SMOKE_LINES } else { LINES };
    let setup = DrainSetup {
        db,
        calls: lines,
        ..*drain_setup
    };
    let stage = Stage::start(&setup, "saasllm-api-batch").await?;
    let file = input_file(lines);
    let result = async {
        let mut db = stage.connect().await?;
        println!("\n{HEADER}");
        let mut rows = Vec::new();
        for &workers in worker_counts {
            let run = one_batch(&setup, &stage, &mut db, &file, workers).await?;
            let baseline = drain_per_sec(drain, workers);
            run.print(baseline);
            rows.push(run.to_json(baseline));
        }
        db.close().await?;
        anyhow::Ok(
            json!({"lines_per_batch": lines, "poll_every_ms": POLL_EVERY.as_millis(),
                          "runs": rows}),
        )
    }
    .await;
    stage.stop().await;
    result
}

/// The drain's calls/s with `workers` worker processes, from its JSON report.
fn drain_per_sec(drain: Option<&Value>, workers: usize) -> Option<f64> {
    drain?["runs"]
        .as_array()?
        .iter()
        .find(|r| r["workers"].as_u64() == Some(workers as u64))?["calls_per_sec"]
        .as_f64()
}

/// One upload, batch and check with `workers` worker processes, on an empty calls table.
async fn one_batch(
    setup: &DrainSetup<'_>,
    stage: &Stage<'_>,
    db: &mut PgConnection,
    file: &[u8],
    workers: usize,
) -> anyhow::Result<BatchRun> {
    empty_calls(db).await?;
    let uploaded = Instant::now();
    let file_id = upload(setup.client, stage, file).await?;
    let upload_secs = uploaded.elapsed().as_secs_f64();

    let mut fleet = stage.start_workers(workers)?;
    wait_listening(db, &mut fleet, workers).await?;
    let meter = fleet.meter(&[("api", stage.api_pid()?)]);
    let created = Instant::now();
    let request = json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                         "completion_window": "24h"});
    let url = format!("{}/v1/batches", stage.url);
    let batch = send(
        setup
            .client
            .post(url)
            .bearer_auth(&stage.key)
            .json(&request),
    )
    .await?;
    let id = batch["id"].as_str().context("no id in the batch answer")?;
    let seen = follow(setup.client, stage, id, created, &mut fleet).await?;
    let cpu = meter.cores();
    let worker_rss_peak_mib = fleet.stop().await;

    let output_bytes = check_output(setup.client, stage, &seen.batch, setup.calls).await?;
    let calls_secs = sqlx::query_scalar!(
        r#"select extract(epoch from max(c.finished_at) - min(c.started_at))::float8 as "calls_secs?"
         from batches b join llm_calls c on c.job_id = b.job_id where b.batch_id = $1"#,
        id
    )
    .fetch_one(&mut *db)
    .await?;
    Ok(BatchRun {
        workers,
        lines: setup.calls,
        file_bytes: file.len(),
        upload_secs,
        validate_secs: seen.in_progress.as_secs_f64(),
        run_secs: (seen.finalizing - seen.in_progress).as_secs_f64(),
        finalize_secs: (seen.completed - seen.finalizing).as_secs_f64(),
        finalizing_seen: seen.finalizing_seen,
        calls_secs: calls_secs.context("no line has start and finish times")?,
        output_bytes,
        worker_rss_peak_mib,
        cpu,
    })
}

/// Waits until the workers' batch loops have started (at least `count` connections have run
/// the step that takes batches to validate; each worker runs it every second), so that their
/// start-up is not counted as validation.
async fn wait_listening(
    db: &mut PgConnection,
    fleet: &mut Workers,
    count: usize,
) -> anyhow::Result<()> {
    let until = Instant::now() + WORKERS_READY_TIMEOUT;
    loop {
        let listening = sqlx::query_scalar!(
            r#"select count(*) as "listening!" from pg_stat_activity
             where datname = current_database() and query like '%validation_taken_at = now()%'
               and pid <> pg_backend_pid()"#
        )
        .fetch_one(&mut *db)
        .await?;
        if listening >= count as i64 {
            return Ok(());
        }
        fleet.check_running()?;
        ensure!(
            Instant::now() < until,
            "{listening} of {count} workers look for batch work after {WORKERS_READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When the polls first saw each status, from the batch's creation, and the completed batch.
struct Seen {
    in_progress: Duration,
    finalizing: Duration,
    completed: Duration,
    finalizing_seen: bool,
    batch: Value,
}

/// Polls the batch until it has completed; fails on any other end, or if a worker exits.
async fn follow(
    client: &reqwest::Client,
    stage: &Stage<'_>,
    id: &str,
    created: Instant,
    fleet: &mut Workers,
) -> anyhow::Result<Seen> {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut in_progress, mut finalizing) = (None, None);
    loop {
        tick.tick().await;
        let batch = send(
            client
                .get(format!("{}/v1/batches/{id}", stage.url))
                .bearer_auth(&stage.key),
        )
        .await?;
        let at = created.elapsed();
        match batch["status"].as_str().unwrap_or_default() {
            "validating" => {}
            "in_progress" => {
                in_progress.get_or_insert(at);
            }
            "finalizing" => {
                in_progress.get_or_insert(at);
                finalizing.get_or_insert(at);
            }
            "completed" => {
                let in_progress = *in_progress.get_or_insert(at);
                return Ok(Seen {
                    in_progress,
                    finalizing: finalizing.unwrap_or(at),
                    completed: at,
                    finalizing_seen: finalizing.is_some(),
                    batch,
                });
            }
            other => bail!("batch {id} ended {other}: {}", batch["errors"]),
        }
        fleet.check_running()?;
        ensure!(
            created.elapsed() < BATCH_TIMEOUT,
            "batch {id} not completed after {BATCH_TIMEOUT:?}: {}",
            batch["request_counts"]
        );
    }
}
