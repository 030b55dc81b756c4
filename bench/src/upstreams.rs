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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::load::{self, Measure, Op, Run};
use crate::procs::{Api, ApiSettings, Proc, free_port};
use crate::report::{Results, keep_compared, print_run, print_step};
use crate::requests::chat_op;
use crate::teams::Teams;

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

/// The `python` and `litellm` scenarios, those of them `python` and `litellm` ask for.
pub async fn scenarios(
    s: &Setup<'_>,
    python: bool,
    litellm: bool,
    results: &mut Results,
) -> anyhow::Result<()> {
    if python {
        let (report, mut runs) = self::python(s).await?;
        results
            .scenarios
            .insert("passthrough_python".into(), report);
        results.runs.append(&mut runs);
    }
    if litellm {
        let (report, mut runs) = self::litellm(s).await?;
        results
            .scenarios
            .insert("passthrough_litellm".into(), report);
        results.runs.append(&mut runs);
    }
    Ok(())
}

/// The Python upstream scenario: its JSON report and its runs.
async fn python(s: &Setup<'_>) -> anyhow::Result<(Value, Vec<Run>)> {
    let venv = s
        .venv(
            "target/bench-venv",
            "bench/python/requirements.txt",
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
    let pid = upstream.pid()?;
    let upstream = Upstream {
        proc: upstream,
        url,
        key: None,
        probes: vec![("python", pid)],
        description: "aiohttp (bench/python/upstream.py)",
    };
    s.through_api("python", "saasllm-api-python", upstream)
        .await
}

/// The LiteLLM scenario: its JSON report and its runs.
async fn litellm(s: &Setup<'_>) -> anyhow::Result<(Value, Vec<Run>)> {
    let venv = s
        .venv(
            "target/litellm-venv",
            "tests/e2e/litellm/requirements.txt",
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
    let pid = proxy.pid()?;
    let upstream = Upstream {
        proc: proxy,
        url,
        key: Some(master_key),
        probes: vec![("litellm", pid), ("fake", s.fake_pid)],
        description: "LiteLLM proxy -> fake (tests/e2e/litellm/config.yaml)",
    };
    s.through_api("litellm", "saasllm-api-litellm", upstream)
        .await
}

/// An upstream process started for a scenario, healthy.
struct Upstream {
    proc: Proc,
    url: String,
    /// The key it wants, if any (the API is given it too).
    key: Option<String>,
    /// Its processes, for the CPU columns.
    probes: Vec<(&'static str, u32)>,
    /// What it is, for the report.
    description: &'static str,
}

impl Setup<'_> {
    /// Makes the virtualenv `dir` with `requirements` (both from the workspace root) unless it
    /// is up to date (see [`ensure_venv`]); returns its path.
    async fn venv(&self, dir: &str, requirements: &str, program: &str) -> anyhow::Result<PathBuf> {
        let venv = self.root.join(dir);
        ensure_venv(&venv, &self.root.join(requirements), program).await?;
        Ok(venv)
    }

    /// Puts an API process on the run's database in front of `upstream` and compares the two
    /// (see [`Setup::compare`]); stops both whatever the outcome.
    async fn through_api(
        &self,
        name: &str,
        api_name: &'static str,
        upstream: Upstream,
    ) -> anyhow::Result<(Value, Vec<Run>)> {
        let result = async {
            let port = free_port()?;
            let settings = ApiSettings {
                name: api_name,
                port,
                database_url: self.database_url.clone(),
                queue: format!("{}_{}", self.db, port),
                upstream: &upstream.url,
                extra_env: upstream
                    .key
                    .iter()
                    .map(|key| ("LLM_API_KEY", key.clone()))
                    .collect(),
            };
            let api = Api::start(self.client, self.bin_dir, self.log_dir, settings).await?;
            let mut probes = vec![("api", api.pid()?)];
            probes.extend_from_slice(&upstream.probes);
            let direct = chat_op(self.client, &upstream.url, None, upstream.key.clone());
            let result = self.compare(name, direct, &api.url, probes).await;
            api.stop().await;
            result
        }
        .await;
        upstream.proc.stop().await;
        let (mut report, runs) = result?;
        report["upstream"] = json!(upstream.description);
        Ok((report, runs))
    }

    /// At each concurrency: `direct` (the upstream called directly), then `/v1` through the API
    /// at `api` with the teams' keys in turn; at c=1 also both in turn (see [`paired_op`]).
    async fn compare(
        &self,
        name: &str,
        direct: Op,
        api: &str,
        probes: Vec<(&'static str, u32)>,
    ) -> anyhow::Result<(Value, Vec<Run>)> {
        let measure = Measure {
            warmup: self.warmup,
            duration: self.duration,
            probes,
        };
        let mut by_c = Vec::new();
        let mut paired = Value::Null;
        let mut runs = Vec::new();
        for c in self.concurrency {
            let measure = |label: String, op: Op| measure.run(label, c, op);
            let base = measure(format!("{name}: upstream direct"), Arc::clone(&direct)).await?;
            print_run(&base);
            let via = measure(
                format!("{name}: /v1 via api"),
                chat_op(self.client, api, Some(Arc::clone(&self.teams)), None),
            )
            .await?;
            print_run(&via);
            by_c.push(Value::Object(keep_compared(&mut runs, base, via)));
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
