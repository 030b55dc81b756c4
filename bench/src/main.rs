// Printing the results table to standard output is this binary's whole job, so the workspace's
// `print_stdout` lint (meant for the services, which log through tracing) does not apply here.
#![allow(clippy::print_stdout)]

//! `saasllm-bench`: starts the fake upstream and the API (prebuilt binaries) on a throwaway
//! database, runs closed-loop scenarios against both, and reports added latency, throughput and
//! memory against the targets. See docs/BENCHMARKS.md.

mod batch_api;
mod console;
mod drain;
mod load;
mod procs;
mod teams;
mod upstreams;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::FutureExt;
use serde_json::{Value, json};

use crate::load::{Op, Run, Steps};
use crate::procs::{CpuMeter, Proc, RssSampler, cpu_json, drop_database, free_port, rss_kib};
use crate::teams::{Team, Teams};

const ADMIN_KEY: &str = "bench-admin-key";
const TEAM: &str = "team_bench";
const GROUP: &str = "BenchAgent";
const MODEL: &str = "gpt-4o-mini";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    All,
    Sync,
    Lifecycle,
    Passthrough,
    Drain,
    /// Passthrough with a Python (aiohttp) OpenAI-compatible upstream instead of the fake.
    Python,
    /// Passthrough through the LiteLLM proxy in front of the fake (not part of `all`).
    Litellm,
    /// Console pages (server time) over 100,000 seeded jobs (2,000 with --smoke).
    Console,
    /// OpenAI Batch API: a 50,000-line batch (500 with --smoke) run by worker processes.
    BatchApi,
}

/// Benchmark saasllm-api against the fake upstream (expects prebuilt binaries).
#[derive(Debug, Parser)]
#[command(name = "saasllm-bench")]
struct Cli {
    /// Scenarios to run, one or more (API memory is measured in every case). `all` is every
    /// scenario but `litellm`, and without `python` in smoke mode.
    #[arg(value_enum, default_values_t = [Which::All])]
    scenarios: Vec<Which>,
    /// Teams the sync, lifecycle and passthrough scenarios spread their load over (in turn).
    #[arg(long, default_value_t = 1)]
    teams: usize,
    /// Every scenario for about a second at low concurrency (CI: checks the benchmark still works).
    #[arg(long)]
    smoke: bool,
    /// Cargo profile whose binaries to use (target/<profile>), unless --bin-dir is given.
    #[arg(long, default_value = "release")]
    profile: String,
    /// Directory holding `saasllm-api` and `fake-llm` (relative paths are from the workspace root).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Measured seconds per run (default 10, or 1 with --smoke).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Calls submitted before each drain (default 100,000, or 2,000 with --smoke).
    #[arg(long)]
    drain_calls: Option<usize>,
    /// Worker processes of each drain and of each batch of `batch-api`, in order (default 1,2).
    #[arg(long, value_delimiter = ',')]
    drain_workers: Option<Vec<usize>>,
    /// PostgreSQL server (without database) where the throwaway database is created.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres_url: String,
    /// Where to write the JSON results (relative paths are from the workspace root).
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
}

struct Plan {
    warmup: Duration,
    duration: Duration,
    sync_concurrency: [usize; 2],
    lifecycle_concurrency: usize,
    passthrough_concurrency: [usize; 2],
    drain_calls: usize,
    /// Worker processes of each drain.
    drain_workers: Vec<usize>,
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    let bin_dir = root.join(
        cli.bin_dir
            .clone()
            .unwrap_or_else(|| Path::new("target").join(&cli.profile)),
    );
    let out = root.join(&cli.out);
    let log_dir = out
        .parent()
        .map_or_else(|| root.join("target/bench"), Path::to_path_buf);
    std::fs::create_dir_all(&log_dir)?;

    let plan = if cli.smoke {
        Plan {
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs_f64(cli.duration_secs.unwrap_or(1.0)),
            sync_concurrency: [1, 4],
            lifecycle_concurrency: 4,
            passthrough_concurrency: [1, 4],
            drain_calls: cli.drain_calls.unwrap_or(2_000),
            drain_workers: cli.drain_workers.clone().unwrap_or_else(|| vec![1, 2]),
        }
    } else {
        Plan {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs_f64(cli.duration_secs.unwrap_or(10.0)),
            sync_concurrency: [1, 32],
            lifecycle_concurrency: 64,
            passthrough_concurrency: [1, 64],
            drain_calls: cli.drain_calls.unwrap_or(100_000),
            drain_workers: cli.drain_workers.clone().unwrap_or_else(|| vec![1, 2]),
        }
    };

    let db = format!("saasllm_bench_{}", std::process::id());
    // A leftover from a crashed run with the same pid would otherwise be reused.
    for name in databases(&db) {
        drop_database(&cli.postgres_url, &name).await?;
    }

    let mut fake: Option<Proc> = None;
    let mut api: Option<Proc> = None;
    let result = bench(&cli, &plan, &bin_dir, &log_dir, &db, &mut fake, &mut api).await;
    for p in [api, fake].into_iter().flatten() {
        p.stop().await;
    }
    let mut dropped = Ok(());
    for name in databases(&db) {
        dropped = dropped.and(drop_database(&cli.postgres_url, &name).await);
    }

    let report = result.inspect_err(|_| {
        eprintln!(
            "benchmark failed; process logs are in {}",
            log_dir.display()
        );
    })?;
    dropped.context("cannot drop the benchmark database")?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nresults written to {}", out.display());
    Ok(())
}

/// The run's databases: its own, then the drain's and the batch scenario's (each of those runs
/// an API process of its own, on a database and queue of the same name).
fn databases(db: &str) -> [String; 3] {
    [db.to_owned(), format!("{db}_drain"), format!("{db}_batch")]
}

fn chat_body() -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Summarize the benchmark in one sentence."}],
    })
}

/// The same chat, addressed to the model group (the body of an llm-call on a job).
fn group_call_body() -> Value {
    let mut body = chat_body();
    body["model_group"] = json!(GROUP);
    if let Some(o) = body.as_object_mut() {
        o.remove("model");
    }
    body
}

/// Sends a request and turns a non-2xx status (or a transport error) into an error.
async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

struct Ctx {
    client: reqwest::Client,
    api: String,
    fake: String,
    teams: Arc<Teams>,
}

/// A non-streaming chat completion at `{base}/v1/chat/completions`: with the key of the next
/// team in turn when `teams` is given (through the API), else with `key` if any (an upstream).
fn chat_op(
    client: &reqwest::Client,
    base: &str,
    teams: Option<Arc<Teams>>,
    key: Option<String>,
) -> Op {
    let client = client.clone();
    let url = format!("{base}/v1/chat/completions");
    Arc::new(move |_| {
        let mut req = client.post(&url).json(&chat_body());
        if let Some(teams) = &teams {
            req = req.bearer_auth(&teams.next().key);
        } else if let Some(key) = &key {
            req = req.bearer_auth(key);
        }
        async move {
            send(req).await?;
            Ok(Steps::new())
        }
        .boxed()
    })
}

impl Ctx {
    fn direct_op(&self) -> Op {
        chat_op(&self.client, &self.fake, None, None)
    }

    /// A streamed chat completion from `base` (the API with the team key, or the fake upstream
    /// directly): step `first byte` is the time to the first chunk of the body.
    fn stream_op(self: &Arc<Self>, via_api: bool) -> Op {
        let ctx = Arc::clone(self);
        Arc::new(move |_| {
            let ctx = Arc::clone(&ctx);
            async move {
                let started = Instant::now();
                let base = if via_api { &ctx.api } else { &ctx.fake };
                let mut body = chat_body();
                body["stream"] = json!(true);
                let mut req = ctx
                    .client
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&body);
                if via_api {
                    req = req.bearer_auth(&ctx.teams.next().key);
                }
                let mut resp = req.send().await?;
                if !resp.status().is_success() {
                    bail!("HTTP {}", resp.status());
                }
                let mut first_byte = None;
                let mut tail = Vec::new();
                while let Some(chunk) = resp.chunk().await? {
                    first_byte.get_or_insert_with(|| started.elapsed());
                    tail.extend_from_slice(&chunk);
                    // Only the end matters: it must close with the `[DONE]` event.
                    let keep = tail.len().saturating_sub(64);
                    tail.drain(..keep);
                }
                if !String::from_utf8_lossy(&tail).contains("[DONE]") {
                    bail!("the stream ended without [DONE]");
                }
                Ok(vec![(
                    "first byte",
                    first_byte.context("the stream had no body")?,
                )])
            }
            .boxed()
        })
    }

    async fn create_job(&self, team: &Team) -> anyhow::Result<String> {
        let job = send(
            self.client
                .post(format!("{}/api/jobs/create", self.api))
                .bearer_auth(&team.key)
                .json(&json!({"team_id": team.id, "job_type": "bench"})),
        )
        .await?;
        job["job_id"]
            .as_str()
            .map(str::to_owned)
            .context("no job_id in the job create answer")
    }

    /// Long-lived jobs for `c` tasks: max(c, teams) of them, job i belonging to task i % c and
    /// team i % teams, so every team gets load and no two tasks share a job. Each task takes its
    /// own jobs in turn.
    async fn jobs_per_task(&self, c: usize) -> anyhow::Result<Vec<Vec<(usize, String)>>> {
        let n = c.max(self.teams.count());
        let jobs =
            futures::future::try_join_all((0..n).map(|i| async move {
                anyhow::Ok((i, self.create_job(self.teams.get(i)).await?))
            }))
            .await?;
        let mut per_task = vec![Vec::new(); c];
        for (i, job) in jobs {
            per_task[i % c].push((i, job));
        }
        Ok(per_task)
    }

    async fn llm_call(&self, team: &Team, job: &str) -> anyhow::Result<()> {
        send(
            self.client
                .post(format!("{}/api/jobs/{job}/llm-call", self.api))
                .bearer_auth(&team.key)
                .json(&group_call_body()),
        )
        .await?;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    cli: &Cli,
    plan: &Plan,
    bin_dir: &Path,
    log_dir: &Path,
    db: &str,
    fake_slot: &mut Option<Proc>,
    api_slot: &mut Option<Proc>,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;

    let fake_port = free_port()?;
    let api_port = free_port()?;
    let fake_url = format!("http://127.0.0.1:{fake_port}");
    let api_url = format!("http://127.0.0.1:{api_port}");

    let fake = fake_slot.insert(Proc::spawn(
        "fake-llm",
        &bin_dir.join("fake-llm"),
        &["--no-record"],
        &[
            ("FAKE_LLM_ADDR", format!("127.0.0.1:{fake_port}")),
            ("FAKE_LLM_LATENCY_MS", "0".into()),
            ("RUST_LOG", "warn".into()),
        ],
        log_dir,
    )?);
    fake.wait_healthy(
        &client,
        &format!("{fake_url}/health"),
        Duration::from_secs(20),
    )
    .await?;
    let fake_pid = fake.pid()?;

    let api = api_slot.insert(Proc::spawn(
        "saasllm-api",
        &bin_dir.join("saasllm-api"),
        &[],
        &[
            ("DATABASE_URL", format!("{}/{db}", cli.postgres_url)),
            ("QUEUE_NAME", db.to_owned()),
            ("BIND_ADDR", format!("127.0.0.1:{api_port}")),
            ("ADMIN_API_KEY", ADMIN_KEY.into()),
            ("LLM_BASE_URL", fake_url.clone()),
            ("RUST_LOG", "warn".into()),
        ],
        log_dir,
    )?);
    api.wait_healthy(
        &client,
        &format!("{api_url}/health"),
        Duration::from_secs(60),
    )
    .await?;
    let api_pid = api.pid()?;

    let teams = Arc::new(Teams::create(&client, &api_url, cli.teams).await?);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        api: api_url.clone(),
        fake: fake_url.clone(),
        teams: Arc::clone(&teams),
    });

    // Idle memory: after start-up and setup, before any load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = rss_kib(api_pid).context("cannot read the API's RSS")?;
    let sampler = RssSampler::start(api_pid);

    let mode = if cli.smoke { "smoke" } else { "full" };
    println!(
        "saasllm-bench ({mode}): binaries {}, {} s per run after {} s warm-up, {} team(s), api RSS idle {:.1} MiB",
        bin_dir.display(),
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        teams.count(),
        idle_kib as f64 / 1024.0
    );
    println!(
        "\n{:<34} {:>4} {:>8} {:>5} {:>9} {:>8} {:>8} {:>8}",
        "run", "c", "ok", "err", "per sec", "p50 ms", "p99 ms", "p99.9 ms"
    );
    println!("{:>87}", "(then cpu cores per process over the run)");

    let mut runs: Vec<Run> = Vec::new();
    let mut scenarios = serde_json::Map::new();
    let mut targets: Vec<Value> = Vec::new();
    let mut peaks = serde_json::Map::new();
    let probes = [("api", api_pid), ("fake", fake_pid)];
    let measure = |label: &str, c: usize, op: Op| {
        let label = label.to_owned();
        async move {
            let meter = CpuMeter::start(&probes);
            let mut run = load::run(label, c, plan.warmup, plan.duration, op).await?;
            run.cpu = meter.cores();
            anyhow::Ok(run)
        }
    };

    let want = |w: Which| {
        cli.scenarios.contains(&w)
            || (cli.scenarios.contains(&Which::All)
                // The Python upstream needs a virtualenv (installed from PyPI on first use),
                // which a smoke run must not depend on; the LiteLLM proxy's takes minutes to
                // install.
                && match w {
                    Which::Python => !cli.smoke,
                    Which::Litellm => false,
                    _ => true,
                })
    };

    if want(Which::Sync) {
        sampler.take_peak();
        let mut by_c = Vec::new();
        for c in plan.sync_concurrency {
            let jobs = Arc::new(ctx.jobs_per_task(c).await?);
            let turns: Arc<Vec<AtomicUsize>> =
                Arc::new((0..c).map(|_| AtomicUsize::new(0)).collect());
            let direct = measure("sync: upstream direct", c, ctx.direct_op()).await?;
            print_run(&direct);
            let c2 = Arc::clone(&ctx);
            let op: Op = Arc::new(move |task| {
                let ctx = Arc::clone(&c2);
                let mine = &jobs[task % jobs.len()];
                let (team, job) =
                    &mine[turns[task % turns.len()].fetch_add(1, Ordering::Relaxed) % mine.len()];
                let (team, job) = (*team, job.clone());
                async move {
                    ctx.llm_call(ctx.teams.get(team), &job).await?;
                    Ok(Steps::new())
                }
                .boxed()
            });
            let via = measure("sync: llm-call via api", c, op).await?;
            print_run(&via);
            let added = |q| via.ms(q) - direct.ms(q);
            targets.push(target(
                format!("sync llm-call added p50, c={c}"),
                added(0.5),
                "ms",
                "<=",
                3.0,
            ));
            targets.push(target(
                format!("sync llm-call added p99, c={c}"),
                added(0.99),
                "ms",
                "<=",
                15.0,
            ));
            by_c.push(Value::Object(comparison(&via, &direct)));
            runs.push(direct);
            runs.push(via);
        }
        scenarios.insert("sync_llm_call".into(), json!(by_c));
        peaks.insert("sync_llm_call".into(), json!(peak_mib(&sampler, api_pid)));
    }

    if want(Which::Lifecycle) {
        sampler.take_peak();
        let c = plan.lifecycle_concurrency;
        let direct = measure("lifecycle: upstream direct", c, ctx.direct_op()).await?;
        print_run(&direct);
        let c2 = Arc::clone(&ctx);
        let op: Op = Arc::new(move |_| {
            let ctx = Arc::clone(&c2);
            async move {
                let team = ctx.teams.next();
                let t0 = Instant::now();
                let job = ctx.create_job(team).await?;
                let t1 = Instant::now();
                ctx.llm_call(team, &job).await?;
                let t2 = Instant::now();
                send(
                    ctx.client
                        .post(format!("{}/api/jobs/{job}/complete", ctx.api))
                        .bearer_auth(&team.key)
                        .json(&json!({"status": "completed"})),
                )
                .await?;
                let t3 = Instant::now();
                Ok(vec![
                    ("create", t1 - t0),
                    ("llm-call", t2 - t1),
                    ("complete", t3 - t2),
                ])
            }
            .boxed()
        });
        let via = measure("lifecycle: job via api", c, op).await?;
        print_run(&via);
        let mut steps = serde_json::Map::new();
        for step in ["create", "llm-call", "complete"] {
            print_step(&via, step);
            steps.insert(
                step.into(),
                json!({"p50_ms": via.step_ms(step, 0.5), "p99_ms": via.step_ms(step, 0.99),
                       "p999_ms": via.step_ms(step, 0.999)}),
            );
        }
        targets.push(target(
            format!("lifecycle jobs/s, c={c}"),
            via.per_sec(),
            "jobs/s",
            ">=",
            1000.0,
        ));
        scenarios.insert(
            "job_lifecycle".into(),
            json!({
                "concurrency": c,
                "jobs_per_sec": via.per_sec(),
                "upstream_direct_req_per_sec": direct.per_sec(),
                "steps": steps,
                "api": run_json(&via),
                "direct": run_json(&direct),
            }),
        );
        peaks.insert("job_lifecycle".into(), json!(peak_mib(&sampler, api_pid)));
        runs.push(direct);
        runs.push(via);
    }

    if want(Which::Passthrough) {
        sampler.take_peak();
        let mut by_c = Vec::new();
        for c in plan.passthrough_concurrency {
            let direct = measure("passthrough: upstream direct", c, ctx.direct_op()).await?;
            print_run(&direct);
            let op = chat_op(&ctx.client, &ctx.api, Some(Arc::clone(&ctx.teams)), None);
            let via = measure("passthrough: /v1 via api", c, op).await?;
            print_run(&via);
            let added = |q| via.ms(q) - direct.ms(q);
            if c == plan.passthrough_concurrency[0] {
                targets.push(target(
                    format!("passthrough added p99, c={c}"),
                    added(0.99),
                    "ms",
                    "<=",
                    1.0,
                ));
            } else {
                targets.push(target(
                    format!("passthrough req/s, c={c}"),
                    via.per_sec(),
                    "req/s",
                    ">=",
                    5000.0,
                ));
            }
            by_c.push(Value::Object(comparison(&via, &direct)));
            runs.push(direct);
            runs.push(via);
            if c == 1 {
                let op = upstreams::paired_op(
                    ctx.direct_op(),
                    chat_op(&ctx.client, &ctx.api, Some(Arc::clone(&ctx.teams)), None),
                );
                let both = measure("passthrough: paired, direct + api", c, op).await?;
                upstreams::print_paired(&both);
                scenarios.insert(
                    "passthrough_paired_c1".into(),
                    upstreams::paired_json(&both),
                );
                runs.push(both);
            }
        }
        scenarios.insert("passthrough".into(), json!(by_c));

        // Streaming: the same request with "stream": true; first byte = first chunk of the body.
        let mut by_c = Vec::new();
        for c in plan.passthrough_concurrency {
            let direct = measure("stream: upstream direct", c, ctx.stream_op(false)).await?;
            print_run(&direct);
            print_step(&direct, "first byte");
            let via = measure("stream: /v1 via api", c, ctx.stream_op(true)).await?;
            print_run(&via);
            print_step(&via, "first byte");
            let added_first = |q| via.step_ms("first byte", q) - direct.step_ms("first byte", q);
            let mut row = comparison(&via, &direct);
            for (name, value) in [
                ("first_byte_added_p50_ms", added_first(0.5)),
                ("first_byte_added_p99_ms", added_first(0.99)),
                ("first_byte_p50_ms", via.step_ms("first byte", 0.5)),
                ("first_byte_p99_ms", via.step_ms("first byte", 0.99)),
            ] {
                row.insert(name.into(), json!(value));
            }
            by_c.push(Value::Object(row));
            runs.push(direct);
            runs.push(via);
        }
        scenarios.insert("passthrough_streaming".into(), json!(by_c));
        peaks.insert("passthrough".into(), json!(peak_mib(&sampler, api_pid)));
    }
    drop(sampler);

    if want(Which::Python) || want(Which::Litellm) {
        let root = workspace_root();
        let setup = upstreams::Setup {
            root: &root,
            client: &client,
            bin_dir,
            log_dir,
            database_url: format!("{}/{db}", cli.postgres_url),
            db,
            fake_url: &fake_url,
            fake_pid,
            teams: Arc::clone(&teams),
            warmup: plan.warmup,
            duration: plan.duration,
            concurrency: plan.passthrough_concurrency,
        };
        if want(Which::Python) {
            let (report, mut done) = upstreams::python(&setup).await?;
            scenarios.insert("passthrough_python".into(), report);
            runs.append(&mut done);
        }
        if want(Which::Litellm) {
            let (report, mut done) = upstreams::litellm(&setup).await?;
            scenarios.insert("passthrough_litellm".into(), report);
            runs.append(&mut done);
        }
    } else if cli.scenarios.contains(&Which::All) && cli.smoke {
        println!("(python: skipped in smoke mode)");
    }

    let mut worker_rss: Option<(f64, f64)> = None;
    let [_, drain_db, batch_db] = databases(db);
    let drain_setup = drain::DrainSetup {
        client: &client,
        bin_dir,
        log_dir,
        postgres_url: &cli.postgres_url,
        db: &drain_db,
        fake_url: &fake_url,
        fake_pid,
        calls: plan.drain_calls,
    };
    if want(Which::Drain) {
        println!(
            "\n{:<34} {:>8} {:>9} {:>10} {:>9} {:>10}  cpu cores",
            "drain", "calls", "submit s", "drain s", "calls/s", "per worker"
        );
        let report = drain::run(&drain_setup, &plan.drain_workers).await?;
        let one_worker = report
            .runs
            .iter()
            .find(|r| r.workers == 1)
            .map(drain::DrainRun::per_sec);
        for r in &report.runs {
            println!(
                "{:<34} {:>8} {:>9.1} {:>10.2} {:>9.0} {:>10.0}  {}  claim batch {:.1}, result group {:.1}",
                format!("drain: {} worker process(es)", r.workers),
                r.calls,
                r.submit_secs,
                r.drain_secs,
                r.per_sec(),
                r.per_worker_per_sec(),
                cpu_text(&r.cpu),
                r.claim_batch_mean,
                r.result_group_mean,
            );
            match (r.workers, one_worker) {
                (1, _) => targets.push(target(
                    "drain calls/s, 1 worker".to_owned(),
                    r.per_sec(),
                    "calls/s",
                    ">=",
                    3000.0,
                )),
                // On a machine of a few cores more processes cannot add throughput; they must
                // not lose any.
                (n, Some(one)) => targets.push(target(
                    format!("drain calls/s, {n} workers, as a share of 1 worker's"),
                    r.per_sec() / one,
                    "ratio",
                    ">=",
                    1.0,
                )),
                (n, None) => targets.push(target(
                    format!("drain calls/s per worker, {n} workers"),
                    r.per_worker_per_sec(),
                    "calls/s",
                    ">=",
                    3000.0,
                )),
            }
        }
        let peak = report
            .runs
            .iter()
            .map(|r| r.worker_rss_peak_mib)
            .fold(report.worker_rss_idle_mib, f64::max);
        worker_rss = Some((report.worker_rss_idle_mib, peak));
        scenarios.insert(
            "async_drain".into(),
            json!({
                "calls_per_drain": plan.drain_calls,
                "worker_rss_idle_mib": report.worker_rss_idle_mib,
                "runs": report.runs.iter().map(drain::DrainRun::to_json).collect::<Vec<_>>(),
            }),
        );
    }

    if want(Which::BatchApi) {
        let drain = scenarios.get("async_drain");
        let workers = &plan.drain_workers;
        let report = batch_api::run(&drain_setup, &batch_db, cli.smoke, workers, drain).await?;
        scenarios.insert("batch_api".into(), report);
    }

    if want(Which::Console) {
        let (jobs, requests) = if cli.smoke { (2_000, 5) } else { (100_000, 50) };
        let database_url = format!("{}/{db}", cli.postgres_url);
        let (report, goal) = console::run(&api_url, &database_url, jobs, requests).await?;
        scenarios.insert("console".into(), report);
        targets.push(goal);
    }

    let idle_mib = idle_kib as f64 / 1024.0;
    let peak_mib = peaks
        .values()
        .filter_map(Value::as_f64)
        .fold(idle_mib, f64::max);
    targets.push(target("api RSS idle".into(), idle_mib, "MiB", "<=", 64.0));
    targets.push(target(
        "api RSS peak under load".into(),
        peak_mib,
        "MiB",
        "<=",
        256.0,
    ));
    if let Some((idle, peak)) = worker_rss {
        targets.push(target("worker RSS idle".into(), idle, "MiB", "<=", 64.0));
        targets.push(target(
            "worker RSS peak under load".into(),
            peak,
            "MiB",
            "<=",
            256.0,
        ));
    }
    scenarios.insert(
        "memory".into(),
        json!({"api_rss_idle_mib": idle_mib, "api_rss_peak_mib": peak_mib,
               "api_rss_peak_mib_by_scenario": peaks,
               "worker_rss_idle_mib": worker_rss.map(|w| w.0),
               "worker_rss_peak_mib": worker_rss.map(|w| w.1)}),
    );

    println!(
        "\n{:<40} {:>12} {:>14}  result",
        "target", "measured", "goal"
    );
    for t in &targets {
        println!(
            "{:<40} {:>12} {:>14}  {}",
            t["name"].as_str().unwrap_or_default(),
            format!(
                "{:.2} {}",
                t["value"].as_f64().unwrap_or(f64::NAN),
                t["unit"].as_str().unwrap_or_default()
            ),
            format!(
                "{} {}",
                t["op"].as_str().unwrap_or_default(),
                t["goal"].as_f64().unwrap_or(f64::NAN)
            ),
            t["result"].as_str().unwrap_or_default()
        );
    }
    if cli.smoke {
        println!("(smoke run: short and at low concurrency, the figures mean nothing)");
    }

    // Failed requests mean the benchmark (or the service) is broken, not slow.
    for r in &runs {
        let total = r.ok + r.errors;
        if r.ok == 0 || r.errors * 100 > total {
            bail!(
                "{} (c={}): {} ok, {} failed; first error: {}",
                r.label,
                r.concurrency,
                r.ok,
                r.errors,
                r.first_error.as_deref().unwrap_or("none")
            );
        }
    }

    Ok(json!({
        "mode": mode,
        "binaries": bin_dir.display().to_string(),
        "warmup_secs": plan.warmup.as_secs_f64(),
        "duration_secs": plan.duration.as_secs_f64(),
        "teams": teams.count(),
        "machine": machine(),
        "scenarios": scenarios,
        "targets": targets,
    }))
}

fn peak_mib(sampler: &RssSampler, pid: u32) -> f64 {
    let now = rss_kib(pid).unwrap_or(0);
    sampler.take_peak().max(now) as f64 / 1024.0
}

fn target(name: String, value: f64, unit: &str, op: &str, goal: f64) -> Value {
    let pass = match op {
        "<=" => value <= goal,
        _ => value >= goal,
    };
    json!({"name": name, "value": value, "unit": unit, "op": op, "goal": goal,
           "result": if pass { "PASS" } else { "MISS" }})
}

fn print_run(r: &Run) {
    println!(
        "{:<34} {:>4} {:>8} {:>5} {:>9.0} {:>8.2} {:>8.2} {:>8.2}  {}",
        r.label,
        r.concurrency,
        r.ok,
        r.errors,
        r.per_sec(),
        r.ms(0.5),
        r.ms(0.99),
        r.ms(0.999),
        cpu_text(&r.cpu)
    );
}

fn print_step(r: &Run, step: &str) {
    println!(
        "  {:<32} {:>4} {:>8} {:>5} {:>9} {:>8.2} {:>8.2} {:>8.2}",
        format!("step {step}"),
        "",
        "",
        "",
        "",
        r.step_ms(step, 0.5),
        r.step_ms(step, 0.99),
        r.step_ms(step, 0.999)
    );
}

/// `api 0.91 postgres 0.85 ...`: cores each process kept busy.
fn cpu_text(cpu: &[(&'static str, f64)]) -> String {
    cpu.iter()
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A run through the API next to its direct-upstream baseline: throughput and added latency.
fn comparison(via: &Run, direct: &Run) -> serde_json::Map<String, Value> {
    let added = |q| via.ms(q) - direct.ms(q);
    [
        ("concurrency", json!(via.concurrency)),
        ("req_per_sec", json!(via.per_sec())),
        ("upstream_direct_req_per_sec", json!(direct.per_sec())),
        ("added_p50_ms", json!(added(0.5))),
        ("added_p99_ms", json!(added(0.99))),
        ("added_p999_ms", json!(added(0.999))),
        ("api", run_json(via)),
        ("direct", run_json(direct)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

fn run_json(r: &Run) -> Value {
    json!({
        "concurrency": r.concurrency,
        "ok": r.ok,
        "errors": r.errors,
        "per_sec": r.per_sec(),
        "p50_ms": r.ms(0.5),
        "p99_ms": r.ms(0.99),
        "p999_ms": r.ms(0.999),
        "max_ms": r.total.max() as f64 / 1000.0,
        "cpu_cores": cpu_json(&r.cpu),
    })
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown");
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
    })
}
