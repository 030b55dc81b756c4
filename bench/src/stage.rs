//! A stage for the scenarios that run worker processes (the drain and the Batch API): an API
//! process without embedded workers on a database and queue of its own, and the workers
//! started beside it.

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

use crate::drain::DrainSetup;
use crate::procs::{Api, ApiSettings, CpuMeter, Proc, RssSampler, free_port, rss_kib};

/// Worker processes get these names (and log files) in order.
const WORKER_NAMES: [&str; 4] = [
    "saasllm-worker-1",
    "saasllm-worker-2",
    "saasllm-worker-3",
    "saasllm-worker-4",
];

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
        let db_url = format!("{}/{}", setup.postgres_url, setup.db);
        let settings = ApiSettings {
            name,
            port: free_port()?,
            database_url: db_url.clone(),
            queue: setup.db.to_owned(),
            upstream: setup.fake_url,
            extra_env: vec![("EMBEDDED_WORKER", "false".into())],
        };
        let Api { proc: api, url } =
            Api::start(setup.client, setup.bin_dir, setup.log_dir, settings).await?;
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
