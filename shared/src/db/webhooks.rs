//! Webhook deliveries: written in the transaction that causes the event, claimed by workers under
//! a short lease, and finished by one guarded update per attempt. The claim is fenced by the
//! attempt count and the lease end it set, so a worker whose lease ran out can no longer record
//! its attempt over another worker's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::money::MicroUsd;
use crate::domain::outcomes::CreditHold;
use crate::domain::status::JobStatus;
use crate::domain::stored_names::stored_names;

/// The event sent when a job reaches its final status.
pub const JOB_SETTLED: &str = "job.settled";

/// The job and call figures a `job.settled` payload is made of.
struct SettledJob {
    job_id: Uuid,
    team_id: String,
    job_type: String,
    status: JobStatus,
    credit_hold: CreditHold,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    callback_url: Option<String>,
    calls_total: i64,
    calls_succeeded: i64,
    calls_failed: i64,
    calls_cancelled: i64,
    calls_running: i64,
    cost_micro_usd: i64,
    total_tokens: i64,
}

/// Queues the `job.settled` event of a job that has a callback URL (a no-op otherwise). Call it
/// in the transaction that moves the job to its final status, after that update, so the event
/// exists exactly when the settlement does. A second call for the same job adds nothing.
pub async fn enqueue_job_settled(conn: &mut PgConnection, job_id: Uuid) -> sqlx::Result<()> {
    let job = sqlx::query_as!(
        SettledJob,
        r#"select j.job_id, j.team_id, j.job_type, j.status as "status: JobStatus",
                j.credit_hold as "credit_hold: CreditHold", j.metadata, j.created_at,
                j.completed_at, j.callback_url,
                count(c.call_id) as "calls_total!",
                count(*) filter (where c.status = 'succeeded') as "calls_succeeded!",
                count(*) filter (where c.status = 'failed') as "calls_failed!",
                count(*) filter (where c.status = 'cancelled') as "calls_cancelled!",
                count(*) filter (where c.status = 'running') as "calls_running!",
                coalesce(sum(c.cost_micro_usd), 0)::bigint as "cost_micro_usd!",
                coalesce(sum(c.total_tokens), 0)::bigint as "total_tokens!"
         from jobs j left join llm_calls c on c.job_id = j.job_id
         where j.job_id = $1
         group by j.job_id"#,
        job_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(job) = job else { return Ok(()) };
    let Some(url) = job.callback_url.as_deref() else {
        return Ok(());
    };
    let payload = json!({
        "type": JOB_SETTLED,
        "timestamp": job.completed_at.unwrap_or_else(Utc::now),
        "data": {
            "job_id": job.job_id,
            "team_id": job.team_id,
            "job_type": job.job_type,
            "status": job.status,
            "credits_charged": i32::from(job.credit_hold == CreditHold::Charged),
            "calls": {
                "total": job.calls_total,
                "succeeded": job.calls_succeeded,
                "failed": job.calls_failed,
                // A cancelled job settles while its running calls finish.
                "cancelled": job.calls_cancelled,
                "running": job.calls_running,
            },
            "total_cost_usd": MicroUsd(job.cost_micro_usd).usd(),
            "total_tokens": job.total_tokens,
            "created_at": job.created_at,
            "completed_at": job.completed_at,
            "metadata": job.metadata,
        },
    });
    sqlx::query!(
        "insert into webhook_deliveries (delivery_id, job_id, team_id, event_type, payload, url)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (job_id, event_type) do nothing",
        Uuid::now_v7(),
        job.job_id,
        &job.team_id,
        JOB_SETTLED,
        &payload,
        url
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery_id: Uuid,
    pub url: String,
    pub payload: serde_json::Value,
    /// Attempts made before this one.
    pub attempts: i32,
    /// End of this claim's lease; with `attempts`, the fence of the attempt's result.
    pub claimed_until: DateTime<Utc>,
    /// The signing secret (`whsec_...`): the job's, or for a team event the team's alert secret.
    pub secret: Option<String>,
}

/// Claims up to `limit` due deliveries for one attempt each: their next attempt is pushed
/// `lease` ahead, so no other worker takes them while the attempt is in flight, and a worker
/// that dies mid-attempt only delays the delivery by the lease.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    limit: i64,
    lease: Duration,
) -> sqlx::Result<Vec<ClaimedDelivery>> {
    // `secret` is one of two scalar subqueries, either of which can find no row or a null.
    sqlx::query_as!(
        ClaimedDelivery,
        r#"with due as (
             select delivery_id from webhook_deliveries
             where status = 'pending' and next_attempt_at <= now()
             order by next_attempt_at
             limit $1
             for update skip locked)
         update webhook_deliveries d set next_attempt_at = now() + make_interval(secs => $2)
         from due
         where d.delivery_id = due.delivery_id
         returning d.delivery_id, d.url, d.payload, d.attempts, d.next_attempt_at as claimed_until,
                   case when d.job_id is null
                        then (select a.secret from team_alerts a where a.team_id = d.team_id)
                        else (select j.callback_secret from jobs j where j.job_id = d.job_id) end as "secret?""#,
        limit,
        lease.as_secs_f64()
    )
    .fetch_all(db)
    .await
}

/// What one attempt got.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// The receiver's status, if it answered.
    pub http_status: Option<u16>,
    /// Why the attempt did not succeed, in a few generic words (it is shown to the tenant, so
    /// never an OS error or a resolved address); `None` when it did.
    pub error: Option<String>,
    pub latency: Duration,
    /// No later attempt can succeed (the target is refused by the address policy): the delivery
    /// is `failed` now rather than retried for the whole window.
    pub is_final: bool,
}

impl AttemptResult {
    /// A 2xx answer: the delivery is done.
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.http_status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Where a delivery stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

stored_names!(DeliveryStatus {
    Pending => "pending",
    Delivered => "delivered",
    Failed => "failed",
});

/// Records an attempt and moves the delivery on: `delivered` on success; otherwise the next
/// attempt `retry_delay` from now, but no later than the end of the retry window (so the last
/// attempt falls on it), and `failed` once an attempt fails at or after that end, or fails for
/// good (`AttemptResult::is_final`). Returns the new
/// status, or `None` when the claim no longer holds (another worker took the delivery over) and
/// nothing was written.
pub async fn record_attempt(
    db: &PgPool,
    claim: &ClaimedDelivery,
    result: &AttemptResult,
    retry_delay: Duration,
    retry_window: Duration,
) -> sqlx::Result<Option<DeliveryStatus>> {
    let mut tx = db.begin().await?;
    let status = sqlx::query_scalar!(
        r#"update webhook_deliveries set
             attempts = attempts + 1,
             last_http_status = $4,
             last_error = $5,
             status = case
                 when $6 then 'delivered'
                 when $9 then 'failed'
                 when now() >= created_at + make_interval(secs => $8) then 'failed'
                 else 'pending' end,
             delivered_at = case when $6 then now() end,
             next_attempt_at = case
                 when $6 then next_attempt_at
                 else least(now() + make_interval(secs => $7), created_at + make_interval(secs => $8)) end
         where delivery_id = $1 and status = 'pending' and attempts = $2 and next_attempt_at = $3
         returning status as "status: DeliveryStatus""#,
        claim.delivery_id,
        claim.attempts,
        claim.claimed_until,
        result.http_status.map(i32::from),
        result.error.as_deref(),
        result.succeeded(),
        retry_delay.as_secs_f64(),
        retry_window.as_secs_f64(),
        result.is_final && !result.succeeded()
    )
    .fetch_optional(&mut *tx)
    .await?;
    if status.is_some() {
        sqlx::query!(
            "insert into webhook_delivery_attempts
                 (delivery_id, attempt_number, http_status, error, latency_ms)
             values ($1, $2, $3, $4, $5)",
            claim.delivery_id,
            claim.attempts + 1,
            result.http_status.map(i32::from),
            result.error.as_deref(),
            i64::try_from(result.latency.as_millis()).unwrap_or(i64::MAX)
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(status)
}

/// A stored delivery.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub delivery_id: Uuid,
    /// `None` for a team event (`team.*`).
    pub job_id: Option<Uuid>,
    pub team_id: String,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_http_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub delivery_id: Uuid,
    pub attempt_number: i32,
    pub attempted_at: DateTime<Utc>,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub latency_ms: i64,
}

/// A job's deliveries, oldest first, each with its attempts in order.
pub async fn list_for_job(
    db: &PgPool,
    job_id: Uuid,
) -> sqlx::Result<Vec<(DeliveryRow, Vec<AttemptRow>)>> {
    let deliveries = sqlx::query_as!(
        DeliveryRow,
        r#"select delivery_id, job_id, team_id, event_type, payload, url,
                status as "status: DeliveryStatus", attempts, next_attempt_at, last_http_status,
                last_error, created_at, delivered_at
         from webhook_deliveries where job_id = $1 order by created_at, delivery_id"#,
        job_id
    )
    .fetch_all(db)
    .await?;
    let mut attempts = sqlx::query_as!(
        AttemptRow,
        "select a.delivery_id, a.attempt_number, a.attempted_at, a.http_status, a.error, a.latency_ms
         from webhook_delivery_attempts a join webhook_deliveries d using (delivery_id)
         where d.job_id = $1 order by a.delivery_id, a.attempt_number",
        job_id
    )
    .fetch_all(db)
    .await?;
    Ok(deliveries
        .into_iter()
        .map(|delivery| {
            let (own, rest): (Vec<_>, Vec<_>) = attempts
                .drain(..)
                .partition(|a| a.delivery_id == delivery.delivery_id);
            attempts = rest;
            (delivery, own)
        })
        .collect())
}
