//! The run's set-up: the fake upstream and the API started on the run's database, the teams
//! created, the API's idle memory measured; and what the scenarios against them share.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{Cli, Plan};
use crate::load::{Measure, Op, Run};
use crate::procs::{Api, ApiSettings, Proc, RssSampler, free_port, rss_kib};
use crate::report::print_run;
use crate::requests::Ctx;
use crate::teams::Teams;

/// The processes under test, held by the caller of [`start`] so that they are stopped whatever
/// the scenarios' outcome.
#[derive(Default)]
pub struct Processes {
    fake: Option<Proc>,
    api: Option<Api>,
}

impl Processes {
    pub async fn stop(self) {
        if let Some(api) = self.api {
            api.stop().await;
        }
        if let Some(fake) = self.fake {
            fake.stop().await;
        }
    }
}

/// The started processes and the teams, as the scenarios need them.
pub struct Stack {
    pub ctx: Arc<Ctx>,
    pub fake_pid: u32,
    pub api_pid: u32,
    /// The API's RSS after start-up and set-up, before any load, in KiB.
    pub idle_kib: u64,
}

/// Starts the fake upstream and the API (into `procs`), creates `cli.teams` teams and measures
/// the API's idle memory.
pub async fn start(
    cli: &Cli,
    client: &reqwest::Client,
    bin_dir: &Path,
    log_dir: &Path,
    db: &str,
    procs: &mut Processes,
) -> anyhow::Result<Stack> {
    let fake_port = free_port()?;
    let api_port = free_port()?;
    let fake_url = format!("http://127.0.0.1:{fake_port}");

    let fake = procs.fake.insert(Proc::spawn(
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
        client,
        &format!("{fake_url}/health"),
        Duration::from_secs(20),
    )
    .await?;
    let fake_pid = fake.pid()?;

    let settings = ApiSettings {
        name: "saasllm-api",
        port: api_port,
        database_url: format!("{}/{db}", cli.postgres_url),
        queue: db.to_owned(),
        upstream: &fake_url,
        extra_env: Vec::new(),
    };
    let api = procs
        .api
        .insert(Api::start(client, bin_dir, log_dir, settings).await?);
    let api_pid = api.pid()?;

    let teams = Arc::new(Teams::create(client, &api.url, cli.teams).await?);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        api: api.url.clone(),
        fake: fake_url,
        teams,
    });

    // Idle memory: after start-up and setup, before any load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = rss_kib(api_pid).context("cannot read the API's RSS")?;
    Ok(Stack {
        ctx,
        fake_pid,
        api_pid,
        idle_kib,
    })
}

/// What the scenarios against the run's API and fake upstream share: their requests, the plan,
/// how a run is measured (CPU of both processes), and the API's memory, sampled while it lives.
pub struct Session<'a> {
    pub ctx: Arc<Ctx>,
    pub plan: &'a Plan,
    pub measure: Measure,
    sampler: RssSampler,
    api_pid: u32,
}

impl<'a> Session<'a> {
    pub fn start(stack: &Stack, plan: &'a Plan) -> Self {
        Self {
            ctx: Arc::clone(&stack.ctx),
            plan,
            measure: Measure {
                warmup: plan.warmup,
                duration: plan.duration,
                probes: vec![("api", stack.api_pid), ("fake", stack.fake_pid)],
            },
            sampler: RssSampler::start(stack.api_pid),
            api_pid: stack.api_pid,
        }
    }

    /// Measures a run of `op` from `concurrency` tasks and prints its row.
    pub async fn run(&self, label: &str, concurrency: usize, op: Op) -> anyhow::Result<Run> {
        let run = self.measure.run(label, concurrency, op).await?;
        print_run(&run);
        Ok(run)
    }

    /// Starts a new period of the API's peak memory (a scenario's).
    pub fn reset_peak(&self) {
        self.sampler.take_peak();
    }

    /// The API's peak RSS since [`Session::reset_peak`] (or now, if higher), in MiB.
    pub fn peak_mib(&self) -> f64 {
        let now = rss_kib(self.api_pid).unwrap_or(0);
        self.sampler.take_peak().max(now) as f64 / 1024.0
    }
}
