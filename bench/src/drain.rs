//! Asynchronous drain: calls are submitted in bulk while no worker runs, then separate
//! `saasllm-worker` processes are started and timed until every call has finished.
//!
//! It runs against its own API process (`EMBEDDED_WORKER=false`), database and queue name, so
//! nothing else takes the calls, and reads the outcome from PostgreSQL: the drain time is from the
//! first call a worker started to the last one it finished (worker start-up is not counted).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::procs::{cpu_json, rss_kib};
use crate::report::{Results, cpu_text, target};
use crate::requests::{group_call_body, send};
use crate::stage::{Stage, Workers, empty_calls};

/// The most calls one bulk request may carry.
const CALLS_PER_REQUEST: usize = 50_000;

/// A drain that has not finished after this long is reported as a failure.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);

pub struct DrainSetup<'a> {
    pub client: &'a reqwest::Client,
    pub bin_dir: &'a Path,
    pub log_dir: &'a Path,
    pub postgres_url: &'a str,
    /// Database (and queue name) of the drain, created by its API process.
    pub db: &'a str,
    pub fake_url: &'a str,
    pub fake_pid: u32,
    /// Calls submitted before each drain.
    pub calls: usize,
}

pub struct DrainRun {
    pub workers: usize,
    pub calls: u64,
    pub submit_secs: f64,
    pub drain_secs: f64,
    pub worker_rss_peak_mib: f64,
    pub cpu: Vec<(&'static str, f64)>,
    /// Mean calls per claim statement (calls claimed together share their `started_at`).
    pub claim_batch_mean: f64,
    /// Mean results per commit (results written together share their `finished_at`).
    pub result_group_mean: f64,
}

impl DrainRun {
    pub fn per_sec(&self) -> f64 {
        self.calls as f64 / self.drain_secs
    }

    pub fn per_worker_per_sec(&self) -> f64 {
        self.per_sec() / self.workers as f64
    }

    /// Prints the run's row of the drain table.
    fn print(&self) {
        println!(
            "{:<34} {:>8} {:>9.1} {:>10.2} {:>9.0} {:>10.0}  {}  claim batch {:.1}, result group {:.1}",
            format!("drain: {} worker process(es)", self.workers),
            self.calls,
            self.submit_secs,
            self.drain_secs,
            self.per_sec(),
            self.per_worker_per_sec(),
            cpu_text(&self.cpu),
            self.claim_batch_mean,
            self.result_group_mean,
        );
    }

    /// The run's target row; `one_worker` is the calls/s of the drain with one worker, if any.
    fn target(&self, one_worker: Option<f64>) -> Value {
        match (self.workers, one_worker) {
            (1, _) => target(
                "drain calls/s, 1 worker".to_owned(),
                self.per_sec(),
                "calls/s",
                ">=",
                3000.0,
            ),
            // On a machine of a few cores more processes cannot add throughput; they must not
            // lose any.
            (n, Some(one)) => target(
                format!("drain calls/s, {n} workers, as a share of 1 worker's"),
                self.per_sec() / one,
                "ratio",
                ">=",
                1.0,
            ),
            (n, None) => target(
                format!("drain calls/s per worker, {n} workers"),
                self.per_worker_per_sec(),
                "calls/s",
                ">=",
                3000.0,
            ),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "workers": self.workers,
            "calls": self.calls,
            "submit_secs": self.submit_secs,
            "submitted_per_sec": self.calls as f64 / self.submit_secs,
            "drain_secs": self.drain_secs,
            "calls_per_sec": self.per_sec(),
            "calls_per_sec_per_worker": self.per_worker_per_sec(),
            "worker_rss_peak_mib": self.worker_rss_peak_mib,
            "cpu_cores": cpu_json(&self.cpu),
            "claim_batch_mean": self.claim_batch_mean,
            "result_group_mean": self.result_group_mean,
        })
    }
}

pub struct DrainReport {
    pub worker_rss_idle_mib: f64,
    pub runs: Vec<DrainRun>,
}

/// The `drain` scenario: prints a row for each drain and adds their targets, the workers'
/// memory and the scenario's report to `results`.
pub async fn scenario(
    setup: &DrainSetup<'_>,
    worker_counts: &[usize],
    results: &mut Results,
) -> anyhow::Result<()> {
    println!(
        "\n{:<34} {:>8} {:>9} {:>10} {:>9} {:>10}  cpu cores",
        "drain", "calls", "submit s", "drain s", "calls/s", "per worker"
    );
    let report = run(setup, worker_counts).await?;
    let one_worker = report
        .runs
        .iter()
        .find(|r| r.workers == 1)
        .map(DrainRun::per_sec);
    for r in &report.runs {
        r.print();
        results.targets.push(r.target(one_worker));
    }
    let peak = report
        .runs
        .iter()
        .map(|r| r.worker_rss_peak_mib)
        .fold(report.worker_rss_idle_mib, f64::max);
    results.worker_rss = Some((report.worker_rss_idle_mib, peak));
    results.scenarios.insert(
        "async_drain".into(),
        json!({
            "calls_per_drain": setup.calls,
            "worker_rss_idle_mib": report.worker_rss_idle_mib,
            "runs": report.runs.iter().map(DrainRun::to_json).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

/// Submits `setup.calls` calls and drains them, once for each entry of `worker_counts`.
async fn run(setup: &DrainSetup<'_>, worker_counts: &[usize]) -> anyhow::Result<DrainReport> {
    let stage = Stage::start(setup, "saasllm-api-drain").await?;
    let mut db = stage.connect().await?;

    // Idle: a worker that has started and found nothing to do.
    let idle = stage.spawn_worker("saasllm-worker-idle")?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let worker_rss_idle_mib =
        rss_kib(idle.pid()?).context("cannot read the worker's RSS")? as f64 / 1024.0;
    idle.stop().await;

    let mut runs = Vec::new();
    for &workers in worker_counts {
        runs.push(one_drain(setup, &stage, &mut db, workers).await?);
    }
    db.close().await?;
    stage.stop().await;
    Ok(DrainReport {
        worker_rss_idle_mib,
        runs,
    })
}

/// One submission and drain with `workers` worker processes, on an empty calls table.
async fn one_drain(
    setup: &DrainSetup<'_>,
    stage: &Stage<'_>,
    db: &mut PgConnection,
    workers: usize,
) -> anyhow::Result<DrainRun> {
    empty_calls(db).await?;
    let submitted = Instant::now();
    let jobs = submit(setup, &stage.url, &stage.key).await?;
    let submit_secs = submitted.elapsed().as_secs_f64();

    let mut fleet = stage.start_workers(workers)?;
    let meter = fleet.meter(&[]);
    wait_drained(db, &mut fleet).await?;
    let cpu = meter.cores();
    let worker_rss_peak_mib = fleet.stop().await;

    // A statement's `now()` is its transaction's start: the calls of one claim share their
    // `started_at`, the results of one commit their `finished_at`.
    // The job ids are the API's text, bound as text[] and cast as before; the span is null
    // when no call matched.
    let counted = sqlx::query!(
        r#"select count(*) filter (where status = 'succeeded') as "succeeded!", count(*) as "total!",
                    extract(epoch from max(finished_at) - min(started_at))::float8 as "drain_secs?",
                    count(distinct (worker_id, started_at)) as "claims!",
                    count(distinct (worker_id, finished_at)) as "commits!"
             from llm_calls where job_id = any($1::text[]::uuid[])"#,
        &jobs[..]
    )
    .fetch_one(&mut *db)
    .await?;
    let (succeeded, total) = (counted.succeeded, counted.total);
    if succeeded != total || total != setup.calls as i64 {
        bail!(
            "drain with {workers} worker(s): {succeeded} of {total} calls succeeded, {} submitted; see {}",
            setup.calls,
            setup.log_dir.display()
        );
    }
    Ok(DrainRun {
        workers,
        calls: u64::try_from(total).unwrap_or(0),
        submit_secs,
        drain_secs: counted
            .drain_secs
            .context("no call has start and finish times")?,
        worker_rss_peak_mib,
        cpu,
        claim_batch_mean: total as f64 / counted.claims.max(1) as f64,
        result_group_mean: total as f64 / counted.commits.max(1) as f64,
    })
}

/// Waits until no call is queued or running; fails if a worker exits or `DRAIN_TIMEOUT` passes.
async fn wait_drained(db: &mut PgConnection, fleet: &mut Workers) -> anyhow::Result<()> {
    let until = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let left = sqlx::query_scalar!(
            r#"select count(*) as "left!" from llm_calls
                   where finished_at is null and status in ('queued', 'running')"#
        )
        .fetch_one(&mut *db)
        .await?;
        if left == 0 {
            return Ok(());
        }
        fleet.check_running()?;
        if Instant::now() > until {
            bail!("{left} calls still unfinished after {DRAIN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Submits `setup.calls` calls in as few bulk requests as allowed, one job per request; returns
/// the job ids.
async fn submit(setup: &DrainSetup<'_>, api_url: &str, key: &str) -> anyhow::Result<Vec<String>> {
    let call = group_call_body();
    let mut jobs = Vec::new();
    let mut left = setup.calls;
    while left > 0 {
        let n = left.min(CALLS_PER_REQUEST);
        left -= n;
        let job = send(
            setup
                .client
                .post(format!("{api_url}/api/jobs/create"))
                .bearer_auth(key)
                .json(&json!({"team_id": crate::TEAM, "job_type": "bench-drain"})),
        )
        .await?;
        let job = job["job_id"]
            .as_str()
            .context("no job_id in the job create answer")?
            .to_owned();
        let calls = vec![call.clone(); n];
        let accepted = send(
            setup
                .client
                .post(format!("{api_url}/api/jobs/{job}/llm-calls"))
                .bearer_auth(key)
                .json(&json!({ "calls": calls })),
        )
        .await?;
        if accepted["count"].as_u64() != Some(n as u64) {
            bail!(
                "bulk submission accepted {} of {n} calls",
                accepted["count"]
            );
        }
        jobs.push(job);
    }
    Ok(jobs)
}
