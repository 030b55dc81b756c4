//! The scenarios through the jobs API: `sync` (llm-calls on long-lived jobs, each task taking its
//! own jobs in turn) and `lifecycle` (create a job, one llm-call, complete it), each against the
//! fake upstream called directly at the same concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use futures::FutureExt;
use serde_json::{Value, json};

use crate::load::{Op, Steps};
use crate::report::{Results, keep_compared, print_step, run_json, target};
use crate::requests::{Ctx, group_call_body, send};
use crate::stack::Session;
use crate::teams::Team;

/// Jobs of each task: (team index, job id), taken in turn.
type JobsPerTask = Vec<Vec<(usize, String)>>;

impl Ctx {
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
    async fn jobs_per_task(&self, c: usize) -> anyhow::Result<JobsPerTask> {
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

    async fn complete_job(&self, team: &Team, job: &str) -> anyhow::Result<()> {
        send(
            self.client
                .post(format!("{}/api/jobs/{job}/complete", self.api))
                .bearer_auth(&team.key)
                .json(&json!({"status": "completed"})),
        )
        .await?;
        Ok(())
    }
}

/// An llm-call on the next of the task's own jobs.
fn sync_op(ctx: &Arc<Ctx>, jobs: JobsPerTask) -> Op {
    let c = jobs.len();
    let jobs = Arc::new(jobs);
    let turns: Arc<Vec<AtomicUsize>> = Arc::new((0..c).map(|_| AtomicUsize::new(0)).collect());
    let ctx = Arc::clone(ctx);
    Arc::new(move |task| {
        let ctx = Arc::clone(&ctx);
        let mine = &jobs[task % jobs.len()];
        let (team, job) =
            &mine[turns[task % turns.len()].fetch_add(1, Ordering::Relaxed) % mine.len()];
        let (team, job) = (*team, job.clone());
        async move {
            ctx.llm_call(ctx.teams.get(team), &job).await?;
            Ok(Steps::new())
        }
        .boxed()
    })
}

/// The `sync` scenario: llm-calls through the API against the upstream directly, at each of
/// the plan's concurrencies.
pub async fn sync(s: &Session<'_>, results: &mut Results) -> anyhow::Result<()> {
    s.reset_peak();
    let mut by_c = Vec::new();
    for c in s.plan.sync_concurrency {
        let jobs = s.ctx.jobs_per_task(c).await?;
        let direct = s.run("sync: upstream direct", c, s.ctx.direct_op()).await?;
        let via = s
            .run("sync: llm-call via api", c, sync_op(&s.ctx, jobs))
            .await?;
        let added = |q| via.ms(q) - direct.ms(q);
        results.targets.push(target(
            format!("sync llm-call added p50, c={c}"),
            added(0.5),
            "ms",
            "<=",
            3.0,
        ));
        results.targets.push(target(
            format!("sync llm-call added p99, c={c}"),
            added(0.99),
            "ms",
            "<=",
            15.0,
        ));
        by_c.push(Value::Object(keep_compared(&mut results.runs, direct, via)));
    }
    results
        .scenarios
        .insert("sync_llm_call".into(), json!(by_c));
    results
        .peaks
        .insert("sync_llm_call".into(), json!(s.peak_mib()));
    Ok(())
}

/// Steps of one job's lifecycle, in order.
const LIFECYCLE_STEPS: [&str; 3] = ["create", "llm-call", "complete"];

/// A whole job with the next team: create, one llm-call, complete; each a step.
fn lifecycle_op(ctx: &Arc<Ctx>) -> Op {
    let ctx = Arc::clone(ctx);
    Arc::new(move |_| {
        let ctx = Arc::clone(&ctx);
        async move {
            let team = ctx.teams.next();
            let t0 = Instant::now();
            let job = ctx.create_job(team).await?;
            let t1 = Instant::now();
            ctx.llm_call(team, &job).await?;
            let t2 = Instant::now();
            ctx.complete_job(team, &job).await?;
            let t3 = Instant::now();
            let [create, call, complete] = LIFECYCLE_STEPS;
            Ok(vec![
                (create, t1 - t0),
                (call, t2 - t1),
                (complete, t3 - t2),
            ])
        }
        .boxed()
    })
}

/// The `lifecycle` scenario: whole jobs through the API against the upstream directly.
pub async fn lifecycle(s: &Session<'_>, results: &mut Results) -> anyhow::Result<()> {
    s.reset_peak();
    let c = s.plan.lifecycle_concurrency;
    let direct = s
        .run("lifecycle: upstream direct", c, s.ctx.direct_op())
        .await?;
    let via = s
        .run("lifecycle: job via api", c, lifecycle_op(&s.ctx))
        .await?;
    let mut steps = serde_json::Map::new();
    for step in LIFECYCLE_STEPS {
        print_step(&via, step);
        steps.insert(
            step.into(),
            json!({"p50_ms": via.step_ms(step, 0.5), "p99_ms": via.step_ms(step, 0.99),
                   "p999_ms": via.step_ms(step, 0.999)}),
        );
    }
    results.targets.push(target(
        format!("lifecycle jobs/s, c={c}"),
        via.per_sec(),
        "jobs/s",
        ">=",
        1000.0,
    ));
    results.scenarios.insert(
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
    results
        .peaks
        .insert("job_lifecycle".into(), json!(s.peak_mib()));
    results.runs.push(direct);
    results.runs.push(via);
    Ok(())
}
