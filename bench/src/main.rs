// Printing the results table to standard output is this binary's whole job, so the workspace's
// `print_stdout` lint (meant for the services, which log through tracing) does not apply here.
#![allow(clippy::print_stdout)]

//! `saasllm-bench`: starts the fake upstream and the API (prebuilt binaries) on a throwaway
//! database, runs closed-loop scenarios against both, and reports added latency, throughput and
//! memory against the targets. See docs/BENCHMARKS.md.

mod batch_api;
mod cli;
mod console;
mod drain;
mod jobs;
mod load;
mod passthrough;
mod procs;
mod report;
mod requests;
mod stack;
mod stage;
mod teams;
mod upstreams;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::{Value, json};

use crate::cli::{Cli, Plan, Which};
use crate::procs::drop_database;
use crate::report::Results;
use crate::stack::{Processes, Session, Stack};

const ADMIN_KEY: &str = "bench-admin-key";
const TEAM: &str = "team_bench";
const GROUP: &str = "BenchAgent";
const MODEL: &str = "gpt-4o-mini";

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where a run reads binaries and writes its logs and results (absolute).
struct Paths {
    root: PathBuf,
    bin_dir: PathBuf,
    log_dir: PathBuf,
    out: PathBuf,
}

impl Paths {
    fn of(cli: &Cli) -> Self {
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
        Self {
            root,
            bin_dir,
            log_dir,
            out,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let paths = Paths::of(&cli);
    std::fs::create_dir_all(&paths.log_dir)?;
    let plan = cli.plan();

    let db = format!("saasllm_bench_{}", std::process::id());
    // A leftover from a crashed run with the same pid would otherwise be reused.
    for name in databases(&db) {
        drop_database(&cli.postgres_url, &name).await?;
    }

    let mut procs = Processes::default();
    let result = bench(&cli, &plan, &paths, &db, &mut procs).await;
    procs.stop().await;
    let mut dropped = Ok(());
    for name in databases(&db) {
        dropped = dropped.and(drop_database(&cli.postgres_url, &name).await);
    }

    let report = result.inspect_err(|_| {
        eprintln!(
            "benchmark failed; process logs are in {}",
            paths.log_dir.display()
        );
    })?;
    dropped.context("cannot drop the benchmark database")?;
    if let Some(dir) = paths.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&paths.out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nresults written to {}", paths.out.display());
    Ok(())
}

/// The run's databases: its own, then the drain's and the batch scenario's (each of those runs
/// an API process of its own, on a database and queue of the same name).
fn databases(db: &str) -> [String; 3] {
    [db.to_owned(), format!("{db}_drain"), format!("{db}_batch")]
}

/// Starts the processes under test (into `procs`), runs the scenarios the command line asks
/// for, prints the targets and returns the JSON results.
async fn bench(
    cli: &Cli,
    plan: &Plan,
    paths: &Paths,
    db: &str,
    procs: &mut Processes,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let stack = stack::start(cli, &client, &paths.bin_dir, &paths.log_dir, db, procs).await?;
    let mut results = Results::default();

    let session = Session::start(&stack, plan);
    println!(
        "saasllm-bench ({}): binaries {}, {} s per run after {} s warm-up, {} team(s), api RSS idle {:.1} MiB",
        cli.mode(),
        paths.bin_dir.display(),
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        stack.ctx.teams.count(),
        stack.idle_kib as f64 / 1024.0
    );
    report::print_runs_header();
    if cli.wants(Which::Sync) {
        jobs::sync(&session, &mut results).await?;
    }
    if cli.wants(Which::Lifecycle) {
        jobs::lifecycle(&session, &mut results).await?;
    }
    if cli.wants(Which::Passthrough) {
        passthrough::run(&session, &mut results).await?;
    }
    // The API's memory is sampled over these three only.
    drop(session);

    other_scenarios(cli, plan, paths, db, &client, &stack, &mut results).await?;

    results.add_memory(stack.idle_kib);
    results.print_targets();
    if cli.smoke {
        println!("(smoke run: short and at low concurrency, the figures mean nothing)");
    }
    results.check_runs()?;
    Ok(json!({
        "mode": cli.mode(),
        "binaries": paths.bin_dir.display().to_string(),
        "warmup_secs": plan.warmup.as_secs_f64(),
        "duration_secs": plan.duration.as_secs_f64(),
        "teams": stack.ctx.teams.count(),
        "machine": report::machine(),
        "scenarios": results.scenarios,
        "targets": results.targets,
    }))
}

/// The scenarios with processes of their own (Python upstreams, drain, Batch API) and the
/// console, which runs on the run's API.
async fn other_scenarios(
    cli: &Cli,
    plan: &Plan,
    paths: &Paths,
    db: &str,
    client: &reqwest::Client,
    stack: &Stack,
    results: &mut Results,
) -> anyhow::Result<()> {
    let database_url = format!("{}/{db}", cli.postgres_url);
    let (python, litellm) = (cli.wants(Which::Python), cli.wants(Which::Litellm));
    if python || litellm {
        let setup = upstreams::Setup {
            root: &paths.root,
            client,
            bin_dir: &paths.bin_dir,
            log_dir: &paths.log_dir,
            database_url: database_url.clone(),
            db,
            fake_url: &stack.ctx.fake,
            fake_pid: stack.fake_pid,
            teams: Arc::clone(&stack.ctx.teams),
            warmup: plan.warmup,
            duration: plan.duration,
            concurrency: plan.passthrough_concurrency,
        };
        upstreams::scenarios(&setup, python, litellm, results).await?;
    } else if cli.scenarios.contains(&Which::All) && cli.smoke {
        println!("(python: skipped in smoke mode)");
    }

    let [_, drain_db, batch_db] = databases(db);
    let drain_setup = drain::DrainSetup {
        client,
        bin_dir: &paths.bin_dir,
        log_dir: &paths.log_dir,
        postgres_url: &cli.postgres_url,
        db: &drain_db,
        fake_url: &stack.ctx.fake,
        fake_pid: stack.fake_pid,
        calls: plan.drain_calls,
    };
    if cli.wants(Which::Drain) {
        drain::scenario(&drain_setup, &plan.drain_workers, results).await?;
    }
    if cli.wants(Which::BatchApi) {
        let drain = results.scenarios.get("async_drain");
        let workers = &plan.drain_workers;
        let report = batch_api::run(&drain_setup, &batch_db, cli.smoke, workers, drain).await?;
        results.scenarios.insert("batch_api".into(), report);
    }
    if cli.wants(Which::Console) {
        let (jobs, requests) = if cli.smoke { (2_000, 5) } else { (100_000, 50) };
        let (report, goal) = console::run(&stack.ctx.api, &database_url, jobs, requests).await?;
        results.scenarios.insert("console".into(), report);
        results.targets.push(goal);
    }
    Ok(())
}
