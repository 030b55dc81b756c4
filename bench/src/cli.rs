//! The command line, and the plan of a run it makes (durations, concurrencies, drain sizes).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
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
pub struct Cli {
    /// Scenarios to run, one or more (API memory is measured in every case). `all` is every
    /// scenario but `litellm`, and without `python` in smoke mode.
    #[arg(value_enum, default_values_t = [Which::All])]
    pub scenarios: Vec<Which>,
    /// Teams the sync, lifecycle and passthrough scenarios spread their load over (in turn).
    #[arg(long, default_value_t = 1)]
    pub teams: usize,
    /// Every scenario for about a second at low concurrency (CI: checks the benchmark still works).
    #[arg(long)]
    pub smoke: bool,
    /// Cargo profile whose binaries to use (target/<profile>), unless --bin-dir is given.
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// Directory holding `saasllm-api` and `fake-llm` (relative paths are from the workspace root).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Measured seconds per run (default 10, or 1 with --smoke).
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Calls submitted before each drain (default 100,000, or 2,000 with --smoke).
    #[arg(long)]
    pub drain_calls: Option<usize>,
    /// Worker processes of each drain and of each batch of `batch-api`, in order (default 1,2).
    #[arg(long, value_delimiter = ',')]
    pub drain_workers: Option<Vec<usize>>,
    /// PostgreSQL server (without database) where the throwaway database is created.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub postgres_url: String,
    /// Where to write the JSON results (relative paths are from the workspace root).
    #[arg(long, default_value = "target/bench/results.json")]
    pub out: PathBuf,
}

impl Cli {
    /// Whether scenario `w` runs: named, or part of `all`.
    pub fn wants(&self, w: Which) -> bool {
        self.scenarios.contains(&w)
            || (self.scenarios.contains(&Which::All)
                // The Python upstream needs a virtualenv (installed from PyPI on first use),
                // which a smoke run must not depend on; the LiteLLM proxy's takes minutes to
                // install.
                && match w {
                    Which::Python => !self.smoke,
                    Which::Litellm => false,
                    _ => true,
                })
    }

    /// `smoke` or `full`, as the results name it.
    pub fn mode(&self) -> &'static str {
        if self.smoke { "smoke" } else { "full" }
    }

    /// The run's plan: the mode's defaults with the command line's overrides.
    pub fn plan(&self) -> Plan {
        let mut plan = if self.smoke { Plan::SMOKE } else { Plan::FULL };
        if let Some(secs) = self.duration_secs {
            plan.duration = Duration::from_secs_f64(secs);
        }
        if let Some(calls) = self.drain_calls {
            plan.drain_calls = calls;
        }
        plan.drain_workers = self.drain_workers.clone().unwrap_or_else(|| vec![1, 2]);
        plan
    }
}

pub struct Plan {
    pub warmup: Duration,
    pub duration: Duration,
    pub sync_concurrency: [usize; 2],
    pub lifecycle_concurrency: usize,
    pub passthrough_concurrency: [usize; 2],
    pub drain_calls: usize,
    /// Worker processes of each drain.
    pub drain_workers: Vec<usize>,
}

impl Plan {
    /// A smoke run: about a second per run at low concurrency.
    const SMOKE: Self = Self {
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        sync_concurrency: [1, 4],
        lifecycle_concurrency: 4,
        passthrough_concurrency: [1, 4],
        drain_calls: 2_000,
        drain_workers: Vec::new(),
    };
    const FULL: Self = Self {
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(10),
        sync_concurrency: [1, 32],
        lifecycle_concurrency: 64,
        passthrough_concurrency: [1, 64],
        drain_calls: 100_000,
        drain_workers: Vec::new(),
    };
}
