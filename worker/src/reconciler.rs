//! Finds work that Redis lost or a dead worker left behind, and reaps expired jobs. PostgreSQL
//! is the truth; this loop makes Redis agree with it. It also runs the periodic work of teams:
//! scheduled credit grants, budget resets and alerts.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::queue::CallQueue;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{refills, team_alerts};

/// Most rows handled per step of a pass.
const BATCH: i64 = 1_000;

/// Age after which an open budget reservation of the OpenAI-compatible path is abandoned; far
/// beyond any upstream timeout.
const STALE_RESERVATION: Duration = Duration::from_secs(3_600);

/// How long responses stored for `Idempotency-Key` retries are kept (the documented 48 h).
const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(48 * 3_600);

/// Settings of the reconciler.
#[derive(Debug, Clone, Copy)]
pub struct ReconcilerSettings {
    pub interval: Duration,
    /// How long a popped id may take to be claimed before the call counts as lost.
    pub grace: Duration,
}

/// Runs passes until cancelled. Every worker process runs this loop, and one pass per interval
/// runs in the whole fleet: a process that finds a pass running, or one started less than an
/// interval ago, skips its turn. A pass scans every unfinished call, so N workers each running
/// their own would cost PostgreSQL N times the work for nothing.
pub async fn run(
    db: PgPool,
    queue: CallQueue,
    settings: ReconcilerSettings,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval(settings.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        match pass_unless_done(&db, &queue, settings).await {
            Ok(Turn::Ran) | Ok(Turn::Skipped) => {}
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed; retrying next interval"),
        }
    }
}

/// Whether a process ran the fleet's pass or left it to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Ran,
    Skipped,
}

/// Runs a pass unless another process is running one or started one within most of an
/// interval (the margin keeps a fleet's passes about an interval apart despite timer jitter).
pub async fn pass_unless_done(
    db: &PgPool,
    queue: &CallQueue,
    settings: ReconcilerSettings,
) -> anyhow::Result<Turn> {
    let mut turn = db.begin().await?;
    let gap = settings.interval.as_secs_f64() * 0.8;
    if !db::claims::start_reconciler_pass(&mut turn, gap).await? {
        return Ok(Turn::Skipped);
    }
    let outcome = pass(db, queue, settings).await;
    // Ends the turn (the lock goes with the transaction) whatever the pass did.
    turn.commit().await?;
    outcome.map(|()| Turn::Ran)
}

/// One pass: expired leases back to the queue, lost queued calls re-pushed, overdue jobs
/// expired, abandoned budget reservations released, lapsed budget slices returned, stored idempotent responses purged,
/// completing jobs whose calls are done settled, scheduled credit grants and budget resets
/// applied, team alerts evaluated. Each step runs whatever happened to the others:
/// a Redis outage stops only the steps that need Redis. Fails if any step failed (each failure
/// is logged with its step).
pub async fn pass(
    db: &PgPool,
    queue: &CallQueue,
    settings: ReconcilerSettings,
) -> anyhow::Result<()> {
    pass_at(db, queue, settings, Utc::now()).await
}

/// `pass` with the clock given: `now` decides which scheduled grants and budget resets are due
/// and stamps alert events (tests move it across period boundaries instead of waiting).
pub async fn pass_at(
    db: &PgPool,
    queue: &CallQueue,
    settings: ReconcilerSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let steps = [
        ("re-queue", requeue(db, queue, settings).await),
        ("job expiry", expire_jobs(db).await),
        ("reservation release", release_reservations(db).await),
        ("budget slice return", return_lapsed_slices(db).await),
        ("idempotency purge", purge_idempotency(db).await),
        ("completing jobs", settle_completing(db).await),
        // Before the alerts, so a grant or a reset re-arms them in the same pass.
        ("scheduled refills", refills::apply_due(db, now).await),
        ("team alerts", team_alerts::evaluate(db, now).await),
    ];
    let failed: Vec<&str> = steps
        .iter()
        .filter_map(|(step, result)| {
            let error = result.as_ref().err()?;
            tracing::warn!(step, error = %error, "reconciler step failed; retrying next interval");
            Some(*step)
        })
        .collect();
    match failed.is_empty() {
        true => Ok(()),
        false => Err(anyhow::anyhow!(
            "reconciler steps failed: {}",
            failed.join(", ")
        )),
    }
}

/// The steps that make Redis agree with PostgreSQL: limits, calls of expired leases, and queued
/// calls Redis lost.
async fn requeue(
    db: &PgPool,
    queue: &CallQueue,
    settings: ReconcilerSettings,
) -> anyhow::Result<()> {
    // Limits first: after Redis lost its data they must be back before calls are re-pushed.
    let limits = db::teams::all_limits(db).await?;
    queue.set_limits(&limits).await?;
    let limits_of = |team: &str| {
        limits
            .iter()
            .find(|(t, _)| t == team)
            .map(|(_, l)| *l)
            .unwrap_or_default()
    };

    let expired = db::calls::requeue_expired_leases(db, BATCH).await?;
    if !expired.is_empty() {
        tracing::warn!(
            count = expired.len(),
            "re-queued calls whose worker lease expired"
        );
        let mut by_team: HashMap<&str, Vec<Uuid>> = HashMap::new();
        for (call_id, team) in &expired {
            by_team.entry(team).or_default().push(*call_id);
        }
        for (team, ids) in by_team {
            queue.push(team, &limits_of(team), &ids).await?;
        }
    }

    // Each team's list is FIFO: every call of the team pushed before the one next in line has
    // been popped. A queued call last pushed more than the grace period before that one (and
    // before now) was popped by a worker that never claimed it, or Redis lost it. The grace
    // applies to the next call's time too because `enqueued_at` is set when the insert's
    // transaction starts, a little before the push: neighbours in a backlog reach Redis slightly
    // out of `enqueued_at` order, and without the margin the ones just behind the next call were
    // taken for lost and pushed again. Each such duplicate then left an entry in line whose call
    // looked newer than the calls behind it, so a later pass could push the whole backlog a
    // second time.
    let grace_cutoff = Utc::now() - settings.grace;
    for team in db::calls::teams_with_queued_before(db, grace_cutoff).await? {
        let cutoff = match queue.next_in_line(&team).await? {
            None => Some(grace_cutoff),
            Some(next) => db::calls::enqueued_at(db, next)
                .await?
                .map(|at| (at - settings.grace).min(grace_cutoff)),
        };
        let Some(cutoff) = cutoff else { continue };
        let lost = db::calls::take_lost_queued(db, &team, cutoff, BATCH).await?;
        if !lost.is_empty() {
            tracing::warn!(
                count = lost.len(),
                team_id = %team,
                "re-pushed queued calls missing from Redis"
            );
            queue.push(&team, &limits_of(&team), &lost).await?;
        }
    }

    Ok(())
}

async fn expire_jobs(db: &PgPool) -> anyhow::Result<()> {
    let reaped = db::jobs::expire_overdue(db, BATCH).await?;
    if reaped > 0 {
        tracing::info!(
            count = reaped,
            "expired jobs past their TTL and released their holds"
        );
    }
    Ok(())
}

/// Budget slices whose lease lapsed belong to API processes that died or lost the database:
/// what they held goes back to their teams.
async fn return_lapsed_slices(db: &PgPool) -> anyhow::Result<()> {
    let returned = db::budget_slices::reclaim_expired(db, BATCH).await?;
    if returned > 0 {
        tracing::warn!(
            count = returned,
            "returned budget slices whose API process stopped renewing them"
        );
    }
    Ok(())
}

async fn release_reservations(db: &PgPool) -> anyhow::Result<()> {
    let released = db::spend::release_stale(db, STALE_RESERVATION.as_secs_f64(), BATCH).await?;
    if released > 0 {
        tracing::warn!(
            count = released,
            "released budget reservations of requests that never finished"
        );
    }
    Ok(())
}

async fn purge_idempotency(db: &PgPool) -> anyhow::Result<()> {
    db::idempotency::purge_older_than(db, IDEMPOTENCY_RETENTION.as_secs_f64()).await?;
    Ok(())
}

async fn settle_completing(db: &PgPool) -> anyhow::Result<()> {
    for job_id in db::jobs::completing_ready(db, BATCH).await? {
        db::jobs::settle(db, job_id).await?;
    }
    Ok(())
}
