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

use crate::procs::{CpuMeter, Proc, RssSampler, cpu_json, free_port, rss_kib};
use crate::{ADMIN_KEY, group_call_body, send};

/// The most calls one bulk request may carry.
const CALLS_PER_REQUEST: usize = 50_000;

/// Worker processes get these names (and log files) in order.
const WORKER_NAMES: [&str; 4] = [
    "saasllm-worker-1",
    "saasllm-worker-2",
    "saasllm-worker-3",
    "saasllm-worker-4",
];

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

/// Submits `setup.calls` calls and drains them, once for each entry of `worker_counts`.
pub async fn run(setup: &DrainSetup<'_>, worker_counts: &[usize]) -> anyhow::Result<DrainReport> {
    let port = free_port()?;
    let api_url = format!("http://127.0.0.1:{port}");
    let db_url = format!("{}/{}", setup.postgres_url, setup.db);
    let mut api = Proc::spawn(
        "saasllm-api-drain",
        &setup.bin_dir.join("saasllm-api"),
        &[],
        &[
            ("DATABASE_URL", db_url.clone()),
            ("QUEUE_NAME", setup.db.to_owned()),
            ("BIND_ADDR", format!("127.0.0.1:{port}")),
            ("ADMIN_API_KEY", ADMIN_KEY.into()),
            ("LLM_BASE_URL", setup.fake_url.to_owned()),
            ("EMBEDDED_WORKER", "false".into()),
            ("RUST_LOG", "warn".into()),
        ],
        setup.log_dir,
    )?;
    api.wait_healthy(
        setup.client,
        &format!("{api_url}/health"),
        Duration::from_secs(60),
    )
    .await?;
    let key = crate::teams::Teams::create(setup.client, &api_url, 1)
        .await?
        .get(0)
        .key
        .clone();
    let mut db = PgConnection::connect(&db_url)
        .await
        .context("cannot connect to the drain database")?;

    let worker_env = [
        ("DATABASE_URL", db_url.clone()),
        ("QUEUE_NAME", setup.db.to_owned()),
        ("LLM_BASE_URL", setup.fake_url.to_owned()),
        ("RUST_LOG", "warn".into()),
    ];
    let spawn_worker = |name: &'static str| {
        Proc::spawn(
            name,
            &setup.bin_dir.join("saasllm-worker"),
            &[],
            &worker_env,
            setup.log_dir,
        )
    };

    // Idle: a worker that has started and found nothing to do.
    let idle = spawn_worker("saasllm-worker-idle")?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let worker_rss_idle_mib =
        rss_kib(idle.pid()?).context("cannot read the worker's RSS")? as f64 / 1024.0;
    idle.stop().await;

    let mut runs = Vec::new();
    for &workers in worker_counts {
        if workers > WORKER_NAMES.len() {
            bail!("at most {} worker processes", WORKER_NAMES.len());
        }
        // Each drain starts from an empty calls table, so that a later drain does not run over
        // the earlier one's rows and its dead row versions (measured: the second of two
        // drains ran 25-30 % slower than the same drain run first, whichever came first).
        sqlx::query("truncate llm_calls cascade")
            .execute(&mut db)
            .await
            .context("cannot empty the calls of the previous drain")?;
        sqlx::query("vacuum analyze")
            .execute(&mut db)
            .await
            .context("cannot vacuum the drain database")?;
        let submitted = Instant::now();
        let jobs = submit(setup, &api_url, &key).await?;
        let submit_secs = submitted.elapsed().as_secs_f64();

        let mut procs = Vec::new();
        for name in &WORKER_NAMES[..workers] {
            procs.push(spawn_worker(name)?);
        }
        let pids = procs
            .iter()
            .map(Proc::pid)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let samplers: Vec<RssSampler> = pids.iter().map(|&pid| RssSampler::start(pid)).collect();
        let mut probes: Vec<(&'static str, u32)> = WORKER_NAMES[..workers]
            .iter()
            .copied()
            .zip(pids.iter().copied())
            .collect();
        probes.push(("fake", setup.fake_pid));
        let meter = CpuMeter::start(&probes);

        let until = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let (left,): (i64,) = sqlx::query_as(
                "select count(*) from llm_calls where finished_at is null and status in ('queued', 'running')",
            )
            .fetch_one(&mut db)
            .await?;
            if left == 0 {
                break;
            }
            for p in &mut procs {
                if let Some(status) = p.child.try_wait()? {
                    bail!("{} exited with {status}; see {}", p.name, p.log.display());
                }
            }
            if Instant::now() > until {
                bail!("{left} calls still unfinished after {DRAIN_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let cpu = meter.cores();
        let worker_rss_peak_kib = samplers
            .iter()
            .zip(&pids)
            .map(|(s, &pid)| s.take_peak().max(rss_kib(pid).unwrap_or(0)))
            .max()
            .unwrap_or(0);
        drop(samplers);
        for p in procs {
            p.stop().await;
        }

        // A statement's `now()` is its transaction's start: the calls of one claim share their
        // `started_at`, the results of one commit their `finished_at`.
        let (succeeded, total, drain_secs, claims, commits): (i64, i64, Option<f64>, i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'succeeded'), count(*), \
                    extract(epoch from max(finished_at) - min(started_at))::float8, \
                    count(distinct (worker_id, started_at)), count(distinct (worker_id, finished_at)) \
             from llm_calls where job_id = any($1::uuid[])",
        )
        .bind(&jobs)
        .fetch_one(&mut db)
        .await?;
        if succeeded != total || total != setup.calls as i64 {
            bail!(
                "drain with {workers} worker(s): {succeeded} of {total} calls succeeded, {} submitted; see {}",
                setup.calls,
                setup.log_dir.display()
            );
        }
        runs.push(DrainRun {
            workers,
            calls: u64::try_from(total).unwrap_or(0),
            submit_secs,
            drain_secs: drain_secs.context("no call has start and finish times")?,
            worker_rss_peak_mib: worker_rss_peak_kib as f64 / 1024.0,
            cpu,
            claim_batch_mean: total as f64 / claims.max(1) as f64,
            result_group_mean: total as f64 / commits.max(1) as f64,
        });
    }
    db.close().await?;
    api.stop().await;
    Ok(DrainReport {
        worker_rss_idle_mib,
        runs,
    })
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
