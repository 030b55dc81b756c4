//! Closed-loop load generation: N tasks each send one request, wait for its answer and send the
//! next, for a fixed time; latencies go into HDR histograms (microseconds).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hdrhistogram::Histogram;

use crate::procs::CpuMeter;

/// Named sub-steps of one operation with their durations (empty for single-request operations).
pub type Steps = Vec<(&'static str, Duration)>;

/// One operation; the argument is the index of the task running it (0..concurrency).
pub type Op = Arc<dyn Fn(usize) -> BoxFuture<'static, anyhow::Result<Steps>> + Send + Sync>;

/// Result of one measured run.
pub struct Run {
    pub label: String,
    pub concurrency: usize,
    pub window: Duration,
    /// Successful operations that started after the warm-up and ended before the deadline.
    pub ok: u64,
    /// Failed operations over the whole run (warm-up included).
    pub errors: u64,
    pub first_error: Option<String>,
    pub total: Histogram<u64>,
    pub steps: BTreeMap<&'static str, Histogram<u64>>,
    /// Cores each process kept busy over the whole run (warm-up included).
    pub cpu: Vec<(&'static str, f64)>,
}

impl Run {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// Percentile `q` (0..1) of the whole operation, in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        quantile_ms(&self.total, q)
    }

    pub fn step_ms(&self, step: &str, q: f64) -> f64 {
        self.steps.get(step).map_or(f64::NAN, |h| quantile_ms(h, q))
    }
}

pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs .. 10 min, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct TaskResult {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    total: Histogram<u64>,
    steps: BTreeMap<&'static str, Histogram<u64>>,
}

/// One task's operations, one after the other until `deadline`; those that start at or after
/// `measure_from` and end by `deadline` are measured.
async fn task_loop(
    op: Op,
    task: usize,
    measure_from: Instant,
    deadline: Instant,
) -> anyhow::Result<TaskResult> {
    let mut r = TaskResult {
        ok: 0,
        errors: 0,
        first_error: None,
        total: histogram()?,
        steps: BTreeMap::new(),
    };
    loop {
        let began = Instant::now();
        if began >= deadline {
            break;
        }
        let outcome = op(task).await;
        let ended = Instant::now();
        match outcome {
            Err(err) => {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| format!("{err:#}"));
                // Do not spin on a broken service.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(steps) => {
                if began < measure_from || ended > deadline {
                    continue;
                }
                r.ok += 1;
                r.total.saturating_record(micros(ended - began));
                for (name, d) in steps {
                    let h = match r.steps.entry(name) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => e.insert(histogram()?),
                    };
                    h.saturating_record(micros(d));
                }
            }
        }
    }
    Ok(r)
}

/// Runs `op` from `concurrency` tasks for `warmup + duration`; only operations that start after
/// the warm-up and end before the deadline are measured. Each task first runs one operation
/// that is not timed at all: what a first request pays once (connections, state a process builds
/// on first use, such as a tokenizer, which takes seconds in a debug build) is not a steady-state
/// figure, and could outlast a smoke run's window.
pub async fn run(
    label: impl Into<String>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    op: Op,
) -> anyhow::Result<Run> {
    // Errors here show up again in the timed part.
    futures::future::join_all((0..concurrency).map(|task| op(task))).await;
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| tokio::spawn(task_loop(Arc::clone(&op), task, measure_from, deadline)))
        .collect();
    let mut run = Run {
        label: label.into(),
        concurrency,
        window: duration,
        ok: 0,
        errors: 0,
        first_error: None,
        total: histogram()?,
        steps: BTreeMap::new(),
        cpu: Vec::new(),
    };
    for task in tasks {
        let r = task.await??;
        run.ok += r.ok;
        run.errors += r.errors;
        if run.first_error.is_none() {
            run.first_error = r.first_error;
        }
        run.total.add(&r.total)?;
        for (name, h) in r.steps {
            match run.steps.entry(name) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().add(&h)?,
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(h);
                }
            }
        }
    }
    Ok(run)
}

/// How the scenarios measure a run: its warm-up and measured window, and the processes whose
/// CPU is reported beside it.
pub struct Measure {
    pub warmup: Duration,
    pub duration: Duration,
    pub probes: Vec<(&'static str, u32)>,
}

impl Measure {
    /// [`run`] with the CPU the probes used over it.
    pub async fn run(
        &self,
        label: impl Into<String>,
        concurrency: usize,
        op: Op,
    ) -> anyhow::Result<Run> {
        let meter = CpuMeter::start(&self.probes);
        let mut run = run(label, concurrency, self.warmup, self.duration, op).await?;
        run.cpu = meter.cores();
        Ok(run)
    }
}
