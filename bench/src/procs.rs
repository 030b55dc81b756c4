//! The processes under test (fake upstream and API), the throwaway database, and RSS sampling.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::process::{Child, Command};

use crate::ADMIN_KEY;

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A started child process whose output goes to a log file.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_unsetting(name, binary, args, env, &[], log_dir)
    }

    /// As [`Proc::spawn`], with the variables `unset` removed from the inherited environment.
    pub fn spawn_unsetting(
        name: &'static str,
        binary: &Path,
        args: &[&str],
        env: &[(&str, String)],
        unset: &[&str],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        if !binary.is_file() {
            bail!(
                "{} not found; build it first (cargo build --release -p saasllm-api -p saasllm-worker -p saasllm-fake-llm, \
                 or pass --bin-dir)",
                binary.display()
            );
        }
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        for k in unset {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self { name, child, log })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("process already exited")
    }

    /// Polls `url` until it answers 200, failing if the process exits or `timeout` passes.
    pub async fn wait_healthy(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before becoming healthy; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if let Ok(resp) = client.get(url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "{} not healthy at {url} after {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// How long an API process may take to answer its health check.
const API_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `saasllm-api` process to start with the benchmark's admin key: its name (and log file),
/// port, database, queue name and upstream, and any further settings.
pub struct ApiSettings<'a> {
    pub name: &'static str,
    pub port: u16,
    pub database_url: String,
    pub queue: String,
    pub upstream: &'a str,
    pub extra_env: Vec<(&'static str, String)>,
}

/// A started `saasllm-api` process and the URL it serves.
pub struct Api {
    pub proc: Proc,
    pub url: String,
}

impl Api {
    /// Starts the API from `bin_dir` and waits until it is healthy (stopping it if it does not
    /// become so).
    pub async fn start(
        client: &reqwest::Client,
        bin_dir: &Path,
        log_dir: &Path,
        settings: ApiSettings<'_>,
    ) -> anyhow::Result<Self> {
        let port = settings.port;
        let url = format!("http://127.0.0.1:{port}");
        let mut env = vec![
            ("DATABASE_URL", settings.database_url),
            ("QUEUE_NAME", settings.queue),
            ("BIND_ADDR", format!("127.0.0.1:{port}")),
            ("ADMIN_API_KEY", ADMIN_KEY.into()),
            ("LLM_BASE_URL", settings.upstream.to_owned()),
            ("RUST_LOG", "warn".into()),
        ];
        env.extend(settings.extra_env);
        let mut proc = Proc::spawn(
            settings.name,
            &bin_dir.join("saasllm-api"),
            &[],
            &env,
            log_dir,
        )?;
        let healthy = proc
            .wait_healthy(client, &format!("{url}/health"), API_START_TIMEOUT)
            .await;
        if let Err(err) = healthy {
            proc.stop().await;
            return Err(err);
        }
        Ok(Self { proc, url })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid()
    }

    pub async fn stop(self) {
        self.proc.stop().await;
    }
}

/// Drops the benchmark database (terminating leftover sessions).
pub async fn drop_database(postgres_url: &str, db: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(&format!("{postgres_url}/postgres"))
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {postgres_url}"))?;
    // Dynamic SQL: the database name varies, and a name cannot be a bind parameter.
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Resident set size of `pid` in KiB (VmRSS of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the RSS of `pid` every 100 ms and keeps the peak since the last `take_peak`.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
            }
        });
        Self { peak, task }
    }

    /// Peak RSS in KiB since the previous call, then starts a new period.
    pub fn take_peak(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Linux reports process times in /proc in units of USER_HZ, which is 100 on every architecture
/// it supports.
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) of `pid` so far, in seconds, from /proc/<pid>/stat.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing ')' start at
    // field 3, so utime (14) and stime (15) are the 12th and 13th of them.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU seconds of every process named `postgres` on this machine (the server and its backends).
pub fn postgres_cpu_secs() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .filter_map(cpu_secs)
        .sum()
}

/// `{"api": 0.91, "postgres": 0.85, ...}`: cores per process, for the JSON results.
pub fn cpu_json(cpu: &[(&'static str, f64)]) -> serde_json::Value {
    cpu.iter()
        .map(|&(name, cores)| (name.to_owned(), serde_json::Value::from(cores)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// CPU seconds used by named processes (plus PostgreSQL and the benchmark itself) since a moment:
/// divided by the wall time, the number of cores each one kept busy.
pub struct CpuMeter {
    started: Instant,
    probes: Vec<(&'static str, Option<u32>)>,
    before: Vec<f64>,
}

impl CpuMeter {
    pub fn start(processes: &[(&'static str, u32)]) -> Self {
        let mut probes: Vec<(&'static str, Option<u32>)> = processes
            .iter()
            .map(|&(name, pid)| (name, Some(pid)))
            .collect();
        probes.push(("postgres", None));
        probes.push(("bench", Some(std::process::id())));
        let before = probes.iter().map(|&(_, pid)| Self::read(pid)).collect();
        Self {
            started: Instant::now(),
            probes,
            before,
        }
    }

    fn read(pid: Option<u32>) -> f64 {
        match pid {
            Some(pid) => cpu_secs(pid).unwrap_or(0.0),
            None => postgres_cpu_secs(),
        }
    }

    /// Cores kept busy by each probe since `start`.
    pub fn cores(&self) -> Vec<(&'static str, f64)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-3);
        self.probes
            .iter()
            .zip(&self.before)
            .map(|(&(name, pid), before)| (name, (Self::read(pid) - before).max(0.0) / wall))
            .collect()
    }
}
