//! Passthrough in front of Python upstreams, each against the same upstream called directly in
//! the same run:
//!
//! - `python`: a minimal aiohttp OpenAI-compatible server (`bench/python/upstream.py`, from a
//!   virtualenv at `target/bench-venv` that is installed from `bench/python/requirements.txt` on
//!   first use);
//! - `litellm`: the LiteLLM proxy in front of the fake upstream, with the virtualenv
//!   (`target/litellm-venv`), requirements and configuration of `scripts/e2e-litellm`
//!   (`tests/e2e/litellm/`), so "direct" is LiteLLM -> fake and "via api" is API -> LiteLLM ->
//!   fake.
//!
//! Each starts its upstream and an API process of its own (the run's database, its own queue
//! name) whose `LLM_BASE_URL` points at that upstream.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::load::{self, Op, Run};
use crate::procs::{CpuMeter, Proc, free_port};
use crate::teams::Teams;
use crate::{ADMIN_KEY, chat_op, comparison, print_run, print_step};

/// What the scenarios share with the rest of the run.
pub struct Setup<'a> {
    pub root: &'a Path,
    pub client: &'a reqwest::Client,
    pub bin_dir: &'a Path,
    pub log_dir: &'a Path,
    /// The run's database (its URL with the database name).
    pub database_url: String,
    /// The run's database name, from which each API process's queue name is made.
    pub db: &'a str,
    pub fake_url: &'a str,
    pub fake_pid: u32,
    pub teams: Arc<Teams>,
    pub warmup: Duration,
    pub duration: Duration,
    pub concurrency: [usize; 2],
}

/// Settings that make the LiteLLM proxy start without the network and without a database (as in
/// scripts/e2e-litellm): bundled copies of what it would fetch, no telemetry, no schema update.
const LITELLM_ENV: [(&str, &str); 8] = [
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True"),
    ("LITELLM_LOCAL_POLICY_TEMPLATES", "True"),
    ("LITELLM_LOCAL_BLOG_POSTS", "True"),
    ("LITELLM_LOCAL_AUTOROUTER_PRESETS", "True"),
    ("LITELLM_DONT_SHOW_FEEDBACK_BOX", "True"),
    ("DISABLE_SCHEMA_UPDATE", "True"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
];

/// The Python upstream scenario: its JSON report and its runs.
pub async fn python(s: &Setup<'_>) -> anyhow::Result<(Value, Vec<Run>)> {
    let venv = s.root.join("target/bench-venv");
    ensure_venv(
        &venv,
        &s.root.join("bench/python/requirements.txt"),
        "python",
    )
    .await?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let script = s.root.join("bench/python/upstream.py");
    let mut upstream = Proc::spawn(
        "python-upstream",
        &venv.join("bin/python"),
        &[
            script.to_str().context("non-UTF-8 path")?,
            "--port",
            &port.to_string(),
        ],
        &[("PYTHONDONTWRITEBYTECODE", "1".into())],
        s.log_dir,
    )?;
    upstream
        .wait_healthy(s.client, &format!("{url}/health"), Duration::from_secs(30))
        .await?;
    let upstream_pid = upstream.pid()?;
    let result = async {
        let api = s.start_api("saasllm-api-python", &url, None).await?;
        let api_pid = api.pid()?;
        let result = s
            .compare(
                "python",
                chat_op(s.client, &url, None, None),
                &api.url,
                &[("api", api_pid), ("python", upstream_pid)],
            )
            .await;
        api.stop().await;
        result
    }
    .await;
    upstream.stop().await;
    let (mut report, runs) = result?;
    report["upstream"] = json!("aiohttp (bench/python/upstream.py)");
    Ok((report, runs))
}

/// The LiteLLM scenario: its JSON report and its runs.
pub async fn litellm(s: &Setup<'_>) -> anyhow::Result<(Value, Vec<Run>)> {
    let venv = s.root.join("target/litellm-venv");
    ensure_venv(
        &venv,
        &s.root.join("tests/e2e/litellm/requirements.txt"),
        "litellm",
    )
    .await?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let master_key = format!("sk-bench-litellm-{}", std::process::id());
    let config = s.root.join("tests/e2e/litellm/config.yaml");
    let mut env: Vec<(&str, String)> = LITELLM_ENV
        .iter()
        .map(|&(k, v)| (k, v.to_owned()))
        .collect();
    env.push(("FAKE_LLM_BASE", format!("{}/v1", s.fake_url)));
    env.push(("LITELLM_MASTER_KEY", master_key.clone()));
    // Stateless (config file only): it must not touch the service's database or Redis.
    let mut proxy = Proc::spawn_unsetting(
        "litellm",
        &venv.join("bin/litellm"),
        &[
            "--config",
            config.to_str().context("non-UTF-8 path")?,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
        &env,
        &["DATABASE_URL", "REDIS_URL"],
        s.log_dir,
    )?;
    let started = std::time::Instant::now();
    proxy
        .wait_healthy(
            s.client,
            &format!("{url}/health/liveliness"),
            Duration::from_secs(180),
        )
        .await?;
    eprintln!(
        "LiteLLM proxy up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let proxy_pid = proxy.pid()?;
    let result = async {
        let api = s
            .start_api("saasllm-api-litellm", &url, Some(&master_key))
            .await?;
        let api_pid = api.pid()?;
        let result = s
            .compare(
                "litellm",
                chat_op(s.client, &url, None, Some(master_key.clone())),
                &api.url,
                &[
                    ("api", api_pid),
                    ("litellm", proxy_pid),
                    ("fake", s.fake_pid),
                ],
            )
            .await;
        api.stop().await;
        result
    }
    .await;
    proxy.stop().await;
    let (mut report, runs) = result?;
    report["upstream"] = json!("LiteLLM proxy -> fake (tests/e2e/litellm/config.yaml)");
    Ok((report, runs))
}

/// An API process started by [`Setup::start_api`], with the URL it serves.
struct Api {
    proc: Proc,
    url: String,
}

impl Api {
    fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid()
    }

    async fn stop(self) {
        self.proc.stop().await;
    }
}

impl Setup<'_> {
    /// An API process on the run's database whose upstream is `upstream`.
    async fn start_api(
        &self,
        name: &'static str,
        upstream: &str,
        upstream_key: Option<&str>,
    ) -> anyhow::Result<Api> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut env = vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("QUEUE_NAME", format!("{}_{}", self.db, port)),
            ("BIND_ADDR", format!("127.0.0.1:{port}")),
            ("ADMIN_API_KEY", ADMIN_KEY.into()),
            ("LLM_BASE_URL", upstream.to_owned()),
            ("RUST_LOG", "warn".into()),
        ];
        if let Some(key) = upstream_key {
            env.push(("LLM_API_KEY", key.to_owned()));
        }
        let mut proc = Proc::spawn(
            name,
            &self.bin_dir.join("saasllm-api"),
            &[],
            &env,
            self.log_dir,
        )?;
        proc.wait_healthy(
            self.client,
            &format!("{url}/health"),
            Duration::from_secs(60),
        )
        .await?;
        Ok(Api { proc, url })
    }

    /// At each concurrency: `direct` (the upstream called directly), then `/v1` through the API
    /// at `api` with the teams' keys in turn; at c=1 also both in turn (see [`paired_op`]).
    async fn compare(
        &self,
        name: &str,
        direct: Op,
        api: &str,
        probes: &[(&'static str, u32)],
    ) -> anyhow::Result<(Value, Vec<Run>)> {
        let mut by_c = Vec::new();
        let mut paired = Value::Null;
        let mut runs = Vec::new();
        for c in self.concurrency {
            let measure = |label: String, op: Op| async move {
                let meter = CpuMeter::start(probes);
                let mut run = load::run(label, c, self.warmup, self.duration, op).await?;
                run.cpu = meter.cores();
                anyhow::Ok(run)
            };
            let base = measure(format!("{name}: upstream direct"), Arc::clone(&direct)).await?;
            print_run(&base);
            let via = measure(
                format!("{name}: /v1 via api"),
                chat_op(self.client, api, Some(Arc::clone(&self.teams)), None),
            )
            .await?;
            print_run(&via);
            by_c.push(Value::Object(comparison(&via, &base)));
            runs.push(base);
            runs.push(via);
            if c == 1 {
                let op = paired_op(
                    Arc::clone(&direct),
                    chat_op(self.client, api, Some(Arc::clone(&self.teams)), None),
                );
                let both = measure(format!("{name}: paired, direct + api"), op).await?;
                print_paired(&both);
                paired = paired_json(&both);
                runs.push(both);
            }
        }
        Ok((json!({"by_concurrency": by_c, "paired_c1": paired}), runs))
    }
}

const DIRECT: &str = "direct";
const VIA_API: &str = "via api";

/// The upstream directly and `/v1` through the API, one after the other from each task, the order
/// swapped every time: both are measured at the same moments of the machine, which separate runs
/// are not (on a shared machine, load and fsync time move from one run to the next, and the c=1
/// path through the API waits for two commits). Steps `direct` and `via api`.
pub fn paired_op(direct: Op, via: Op) -> Op {
    let turn = Arc::new(AtomicUsize::new(0));
    Arc::new(move |task| {
        let direct_first = turn.fetch_add(1, Ordering::Relaxed).is_multiple_of(2);
        let (direct, via) = (direct(task), via(task));
        async move {
            let (d, v) = if direct_first {
                let d = timed(direct).await?;
                (d, timed(via).await?)
            } else {
                let v = timed(via).await?;
                (timed(direct).await?, v)
            };
            Ok(vec![(DIRECT, d), (VIA_API, v)])
        }
        .boxed()
    })
}

/// Prints a run of [`paired_op`] and its two steps.
pub fn print_paired(run: &Run) {
    print_run(run);
    print_step(run, DIRECT);
    print_step(run, VIA_API);
}

/// A run of [`paired_op`]: each side's percentiles and what the API added.
pub fn paired_json(run: &Run) -> Value {
    let added = |q| run.step_ms(VIA_API, q) - run.step_ms(DIRECT, q);
    json!({
        "concurrency": run.concurrency,
        "pairs": run.ok,
        "direct_p50_ms": run.step_ms(DIRECT, 0.5),
        "direct_p99_ms": run.step_ms(DIRECT, 0.99),
        "api_p50_ms": run.step_ms(VIA_API, 0.5),
        "api_p99_ms": run.step_ms(VIA_API, 0.99),
        "added_p50_ms": added(0.5),
        "added_p99_ms": added(0.99),
    })
}

async fn timed(op: BoxFuture<'static, anyhow::Result<load::Steps>>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    op.await?;
    Ok(started.elapsed())
}

/// Makes `dir` a virtualenv with `requirements` installed, unless it already is one for this
/// exact file (`.requirements.sha256` inside it holds the hash of the file it was made from, as
/// scripts/e2e-litellm writes it) whose `bin/<program>` exists.
async fn ensure_venv(dir: &Path, requirements: &Path, program: &str) -> anyhow::Result<()> {
    let text = std::fs::read(requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    let want = hex::encode(Sha256::digest(&text));
    let stamp = dir.join(".requirements.sha256");
    let installed = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want);
    if installed && dir.join("bin").join(program).is_file() {
        return Ok(());
    }
    eprintln!(
        "installing {} into {} (first use or changed requirements)...",
        requirements.display(),
        dir.display()
    );
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    run(tokio::process::Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(dir))
    .await
    .context("cannot create a virtualenv (python3 with the venv module is needed)")?;
    run(tokio::process::Command::new(dir.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--require-virtualenv",
            "-r",
        ])
        .arg(requirements))
    .await
    .with_context(|| format!("cannot install {}", requirements.display()))?;
    std::fs::write(&stamp, format!("{want}\n"))?;
    Ok(())
}

async fn run(cmd: &mut tokio::process::Command) -> anyhow::Result<()> {
    let status = cmd.stdin(std::process::Stdio::null()).status().await?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
