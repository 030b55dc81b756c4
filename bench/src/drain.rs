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

/// An API process without embedded workers (`EMBEDDED_WORKER=false`) on a database and queue
/// of its own, with the benchmark's team: what it accepts waits until worker processes started
/// beside it take it. The drain and the batch scenario run on one each.
pub struct Stage<'a> {
    setup: &'a DrainSetup<'a>,
    api: Proc,
    pub url: String,
    pub key: String,
    pub db_url: String,
}

impl<'a> Stage<'a> {
    /// Starts the API process `name` on `setup.db` and creates the team.
    pub async fn start(setup: &'a DrainSetup<'a>, name: &'static str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let db_url = format!("{}/{}", setup.postgres_url, setup.db);
        let mut api = Proc::spawn(
            name,
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
            &format!("{url}/health"),
            Duration::from_secs(60),
        )
        .await?;
        let key = crate::teams::Teams::create(setup.client, &url, 1)
            .await?
            .get(0)
            .key
            .clone();
        Ok(Self {
            setup,
            api,
            url,
            key,
            db_url,
        })
    }

    pub fn api_pid(&self) -> anyhow::Result<u32> {
        self.api.pid()
    }

    /// A connection to the stage's database.
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.db_url)
            .await
            .with_context(|| format!("cannot connect to {}", self.setup.db))
    }

    /// A `saasllm-worker` process (default settings) on the stage's database and queue.
    pub fn spawn_worker(&self, name: &'static str) -> anyhow::Result<Proc> {
        Proc::spawn(
            name,
            &self.setup.bin_dir.join("saasllm-worker"),
            &[],
            &[
                ("DATABASE_URL", self.db_url.clone()),
                ("QUEUE_NAME", self.setup.db.to_owned()),
                ("LLM_BASE_URL", self.setup.fake_url.to_owned()),
                ("RUST_LOG", "warn".into()),
            ],
            self.setup.log_dir,
        )
    }

    /// Starts `count` worker processes, named from `WORKER_NAMES` in order.
    pub fn start_workers(&self, count: usize) -> anyhow::Result<Workers> {
        let Some(names) = WORKER_NAMES.get(..count) else {
            bail!("at most {} worker processes", WORKER_NAMES.len());
        };
        let procs = names
            .iter()
            .map(|name| self.spawn_worker(name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pids = procs
            .iter()
            .map(Proc::pid)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let samplers = pids.iter().map(|&pid| RssSampler::start(pid)).collect();
        Ok(Workers {
            procs,
            pids,
            samplers,
            fake_pid: self.setup.fake_pid,
        })
    }

    pub async fn stop(self) {
        self.api.stop().await;
    }
}

/// Worker processes at work, their memory sampled.
pub struct Workers {
    procs: Vec<Proc>,
    pids: Vec<u32>,
    samplers: Vec<RssSampler>,
    fake_pid: u32,
}

impl Workers {
    /// Measures the CPU of the workers, the fake upstream and `others` from now on.
    pub fn meter(&self, others: &[(&'static str, u32)]) -> CpuMeter {
        let mut probes: Vec<(&'static str, u32)> = self
            .procs
            .iter()
            .map(|p| p.name)
            .zip(self.pids.iter().copied())
            .collect();
        probes.extend_from_slice(others);
        probes.push(("fake", self.fake_pid));
        CpuMeter::start(&probes)
    }

    /// Fails if a worker has exited (it would never finish its share).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.child.try_wait()? {
                bail!("{} exited with {status}; see {}", p.name, p.log.display());
            }
        }
        Ok(())
    }

    /// Stops them; returns the highest RSS any of them reached, in MiB.
    pub async fn stop(self) -> f64 {
        let peak_kib = self
            .samplers
            .iter()
            .zip(&self.pids)
            .map(|(s, &pid)| s.take_peak().max(rss_kib(pid).unwrap_or(0)))
            .max()
            .unwrap_or(0);
        drop(self.samplers);
        for p in self.procs {
            p.stop().await;
        }
        peak_kib as f64 / 1024.0
    }
}

/// Empties the calls table, so that a run does not go over an earlier run's rows and their dead
/// row versions (measured: the second of two drains ran 25-30 % slower than the same drain run
/// first, whichever came first).
pub async fn empty_calls(db: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query!("truncate llm_calls cascade")
        .execute(&mut *db)
        .await
        .context("cannot empty the calls of the previous run")?;
    sqlx::query!("vacuum analyze")
        .execute(&mut *db)
        .await
        .context("cannot vacuum the database")?;
    Ok(())
}

/// Submits `setup.calls` calls and drains them, once for each entry of `worker_counts`.
pub async fn run(setup: &DrainSetup<'_>, worker_counts: &[usize]) -> anyhow::Result<DrainReport> {
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
        empty_calls(&mut db).await?;
        let submitted = Instant::now();
        let jobs = submit(setup, &stage.url, &stage.key).await?;
        let submit_secs = submitted.elapsed().as_secs_f64();

        let mut fleet = stage.start_workers(workers)?;
        let meter = fleet.meter(&[]);
        let until = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let left = sqlx::query_scalar!(
                r#"select count(*) as "left!" from llm_calls
                   where finished_at is null and status in ('queued', 'running')"#
            )
            .fetch_one(&mut db)
            .await?;
            if left == 0 {
                break;
            }
            fleet.check_running()?;
            if Instant::now() > until {
                bail!("{left} calls still unfinished after {DRAIN_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
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
        .fetch_one(&mut db)
        .await?;
        let (succeeded, total, drain_secs, claims, commits) = (
            counted.succeeded,
            counted.total,
            counted.drain_secs,
            counted.claims,
            counted.commits,
        );
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
            worker_rss_peak_mib,
            cpu,
            claim_batch_mean: total as f64 / claims.max(1) as f64,
            result_group_mean: total as f64 / commits.max(1) as f64,
        });
    }
    db.close().await?;
    stage.stop().await;
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
