//! What a run reports: the table rows printed as runs end, the target rows (measured against
//! the goals), and the JSON results the scenarios add up to.

use anyhow::bail;
use serde_json::{Value, json};

use crate::load::Run;
use crate::procs::cpu_json;

/// What the scenarios of a run add up to.
#[derive(Default)]
pub struct Results {
    /// Every measured run, checked for failed requests at the end.
    pub runs: Vec<Run>,
    /// Each scenario's JSON report, by name.
    pub scenarios: serde_json::Map<String, Value>,
    /// Target rows, from [`target`].
    pub targets: Vec<Value>,
    /// The API's peak memory under each scenario, in MiB.
    pub peaks: serde_json::Map<String, Value>,
    /// The worker processes' idle and peak memory, in MiB, when the drain ran.
    pub worker_rss: Option<(f64, f64)>,
}

impl Results {
    /// Adds the memory targets and the `memory` scenario: the API's RSS idle (`idle_kib`) and
    /// its peak over the scenarios, and the workers' when the drain ran.
    pub fn add_memory(&mut self, idle_kib: u64) {
        let idle_mib = idle_kib as f64 / 1024.0;
        let peak_mib = self
            .peaks
            .values()
            .filter_map(Value::as_f64)
            .fold(idle_mib, f64::max);
        for (who, idle, peak) in [
            Some(("api", idle_mib, peak_mib)),
            self.worker_rss.map(|(idle, peak)| ("worker", idle, peak)),
        ]
        .into_iter()
        .flatten()
        {
            self.targets
                .push(target(format!("{who} RSS idle"), idle, "MiB", "<=", 64.0));
            self.targets.push(target(
                format!("{who} RSS peak under load"),
                peak,
                "MiB",
                "<=",
                256.0,
            ));
        }
        self.scenarios.insert(
            "memory".into(),
            json!({"api_rss_idle_mib": idle_mib, "api_rss_peak_mib": peak_mib,
                   "api_rss_peak_mib_by_scenario": self.peaks,
                   "worker_rss_idle_mib": self.worker_rss.map(|w| w.0),
                   "worker_rss_peak_mib": self.worker_rss.map(|w| w.1)}),
        );
    }

    /// Prints the targets table.
    pub fn print_targets(&self) {
        println!(
            "\n{:<40} {:>12} {:>14}  result",
            "target", "measured", "goal"
        );
        for t in &self.targets {
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
    }

    /// Fails on a run with no success or more than 1 % failed requests: that means the
    /// benchmark (or the service) is broken, not slow.
    pub fn check_runs(&self) -> anyhow::Result<()> {
        for r in &self.runs {
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
        Ok(())
    }
}

/// A target row: `value` in `unit` against `goal` (`op` is `<=` or `>=`), PASS or MISS.
pub fn target(name: String, value: f64, unit: &str, op: &str, goal: f64) -> Value {
    let pass = match op {
        "<=" => value <= goal,
        _ => value >= goal,
    };
    json!({"name": name, "value": value, "unit": unit, "op": op, "goal": goal,
           "result": if pass { "PASS" } else { "MISS" }})
}

/// Prints the header of the runs table ([`print_run`] and [`print_step`] write its rows).
pub fn print_runs_header() {
    println!(
        "\n{:<34} {:>4} {:>8} {:>5} {:>9} {:>8} {:>8} {:>8}",
        "run", "c", "ok", "err", "per sec", "p50 ms", "p99 ms", "p99.9 ms"
    );
    println!("{:>87}", "(then cpu cores per process over the run)");
}

pub fn print_run(r: &Run) {
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

pub fn print_step(r: &Run, step: &str) {
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
pub fn cpu_text(cpu: &[(&'static str, f64)]) -> String {
    cpu.iter()
        .map(|(name, cores)| format!("{name} {cores:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A run through the API next to its direct-upstream baseline: throughput and added latency.
pub fn comparison(via: &Run, direct: &Run) -> serde_json::Map<String, Value> {
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

/// Keeps a direct-upstream run and the same load through the API, in that order, and returns
/// their [`comparison`] row.
pub fn keep_compared(runs: &mut Vec<Run>, direct: Run, via: Run) -> serde_json::Map<String, Value> {
    let row = comparison(&via, &direct);
    runs.push(direct);
    runs.push(via);
    row
}

pub fn run_json(r: &Run) -> Value {
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

/// The machine the run was on: CPU count and model.
pub fn machine() -> Value {
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
