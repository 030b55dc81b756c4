//! Lists across tenants, for the web console and the admin lists of the API: keyset pages (no
//! `offset`, so page 1,000 costs what page 1 does). The fleet's per-minute counts are in
//! [`crate::db::activity`], re-exported here.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

pub use crate::db::activity::{
    MinuteActivity, QueueState, WorkerSeen, activity, queue_state, workers_seen,
};
use crate::db::credits::BalanceRow;
use crate::db::jobs::JobRow;
use crate::db::webhooks::DeliveryStatus;
use crate::domain::outcomes::AttemptOutcome;
use crate::domain::status::{JobStatus, OrganizationStatus, TeamStatus};

/// A row's place in a newest-first list, `<created_at RFC 3339>_<id>`: the console's `before`
/// parameter, and what the API's job cursors carry.
pub fn position_text(created_at: DateTime<Utc>, id: Uuid) -> String {
    format!(
        "{}_{id}",
        created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    )
}

/// Reads a position written by [`position_text`].
pub fn parse_position(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (at, id) = text.split_once('_')?;
    let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
    Some((at, id.parse().ok()?))
}

/// An organization with how many teams it has.
#[derive(Debug, Clone)]
pub struct OrganizationSummary {
    pub organization_id: String,
    pub name: String,
    pub status: OrganizationStatus,
    pub created_at: DateTime<Utc>,
    pub teams: i64,
}

/// What an organizations list is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct OrganizationFilter {
    /// Text the id or the name starts with, taken literally (`%` and `_` are no wildcards).
    pub name_prefix: Option<String>,
    /// The id of the last organization of the previous page.
    pub after: Option<String>,
}

/// Organizations in id order, after `after`.
pub async fn organizations(
    db: impl PgExecutor<'_>,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<OrganizationSummary>> {
    let filter = OrganizationFilter {
        name_prefix: None,
        after: after.map(str::to_owned),
    };
    organizations_matching(db, &filter, limit).await
}

/// Organizations matching `filter` in id order, `limit` of them. `starts_with`, not `like`: the
/// prefix is plain text, with no pattern characters to escape.
pub async fn organizations_matching(
    db: impl PgExecutor<'_>,
    filter: &OrganizationFilter,
    limit: i64,
) -> sqlx::Result<Vec<OrganizationSummary>> {
    sqlx::query_as!(
        OrganizationSummary,
        r#"select o.organization_id, o.name, o.status as "status: OrganizationStatus", o.created_at,
                (select count(*) from teams t where t.organization_id = o.organization_id) as "teams!"
         from organizations o
         where ($1::text is null or o.organization_id > $1)
           and ($2::text is null or starts_with(o.organization_id, $2) or starts_with(o.name, $2))
         order by o.organization_id limit $3"#,
        filter.after.as_deref(),
        filter.name_prefix.as_deref(),
        limit
    )
    .fetch_all(db)
    .await
}

/// A team with its balance figures and key prefix, for lists.
#[derive(Debug, Clone)]
pub struct TeamSummary {
    pub team_id: String,
    pub organization_id: String,
    pub team_alias: Option<String>,
    pub status: TeamStatus,
    pub created_at: DateTime<Utc>,
    pub credits_available: i64,
    pub credits_used: i64,
    pub spend_micro_usd: i64,
    pub key_prefix: Option<String>,
    /// All the team's counters, as `credits::find_balance` reads them (zero without a row).
    pub balance: BalanceRow,
}

/// What a teams list is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct TeamFilter {
    pub organization_id: Option<String>,
    pub status: Option<TeamStatus>,
    /// Text the id or the alias starts with, taken literally (`%` and `_` are no wildcards).
    pub name_prefix: Option<String>,
    /// The id of the last team of the previous page.
    pub after: Option<String>,
}

/// Teams in id order after `after`, optionally of one organization.
pub async fn teams(
    db: impl PgExecutor<'_>,
    organization_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<TeamSummary>> {
    let filter = TeamFilter {
        organization_id: organization_id.map(str::to_owned),
        after: after.map(str::to_owned),
        ..TeamFilter::default()
    };
    teams_matching(db, &filter, limit).await
}

/// Teams matching `filter` in id order, `limit` of them, each with its balance and active key
/// prefix in the same statement.
pub async fn teams_matching(
    db: impl PgExecutor<'_>,
    filter: &TeamFilter,
    limit: i64,
) -> sqlx::Result<Vec<TeamSummary>> {
    // `!` on each `coalesce` with a constant: never null.
    let rows = sqlx::query!(
        r#"select t.team_id, t.organization_id, t.team_alias, t.status as "status: TeamStatus", t.created_at,
                coalesce(b.credits_allocated - b.credits_used - b.credits_reserved, 0) as "credits_available!",
                coalesce(b.credits_allocated, 0) as "credits_allocated!",
                coalesce(b.credits_used, 0) as "credits_used!",
                coalesce(b.credits_reserved, 0) as "credits_reserved!",
                b.credit_limit as "credit_limit?", coalesce(b.auto_refill, false) as "auto_refill!",
                coalesce(b.spend_micro_usd, 0) as "spend_micro_usd!",
                coalesce(b.budget_reserved_micro_usd, 0) as "budget_reserved_micro_usd!",
                (select k.key_prefix from virtual_keys k where k.team_id = t.team_id and k.revoked_at is null) as "key_prefix?"
         from teams t left join credit_balances b using (team_id)
         where ($1::text is null or t.organization_id = $1) and ($2::text is null or t.team_id > $2)
           and ($3::text is null or t.status = $3)
           and ($4::text is null or starts_with(t.team_id, $4) or starts_with(t.team_alias, $4))
         order by t.team_id limit $5"#,
        filter.organization_id.as_deref(),
        filter.after.as_deref(),
        filter.status as Option<TeamStatus>,
        filter.name_prefix.as_deref(),
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TeamSummary {
            balance: BalanceRow {
                team_id: r.team_id.clone(),
                credits_allocated: r.credits_allocated,
                credits_used: r.credits_used,
                credits_reserved: r.credits_reserved,
                credit_limit: r.credit_limit,
                auto_refill: r.auto_refill,
                spend_micro_usd: r.spend_micro_usd,
                budget_reserved_micro_usd: r.budget_reserved_micro_usd,
            },
            team_id: r.team_id,
            organization_id: r.organization_id,
            team_alias: r.team_alias,
            status: r.status,
            created_at: r.created_at,
            credits_available: r.credits_available,
            credits_used: r.credits_used,
            spend_micro_usd: r.spend_micro_usd,
            key_prefix: r.key_prefix,
        })
        .collect())
}

/// What a jobs list is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub team_id: Option<String>,
    pub status: Option<JobStatus>,
    pub job_type: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    /// The last job of the previous page: (created_at, job_id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

/// A job with the number of its calls.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobListing {
    #[sqlx(flatten)]
    pub job: JobRow,
    pub calls: i64,
}

/// Jobs newest first matching `filter`, `limit` of them, in (created_at, job_id) order.
pub async fn jobs(db: &PgPool, filter: &JobFilter, limit: i64) -> sqlx::Result<Vec<JobListing>> {
    jobs_in(db, filter, None, limit).await
}

/// Jobs newest first matching `filter` and, if given, of one organization's teams. Read from
/// the team's index with a team, else from the index of all jobs, skipping rows of another
/// status or type (no index names `status`, so that a job's open steps stay HOT). An
/// organization's jobs are each of its teams' newest merged: filtering the all-jobs order by
/// organization would read every newer job of the other tenants to find a small tenant's page.
pub async fn jobs_in(
    db: &PgPool,
    filter: &JobFilter,
    organization_id: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<JobListing>> {
    // Dynamic SQL: only the filters given are written out, and with an organization the page is
    // read per team through a lateral join: one statement with every filter optional
    // (`$n is null or ...`) would let PostgreSQL settle on one generic plan for all combinations,
    // walking the index of all jobs past other tenants' rows for a team's or a filtered page.
    let mut sql = QueryBuilder::new(
        "select j.*, (select count(*) from llm_calls c where c.job_id = j.job_id) as calls from (",
    );
    match organization_id {
        Some(organization_id) => {
            sql.push("select j.* from teams t cross join lateral (");
            push_jobs_page(&mut sql, filter, true, limit);
            sql.push(") j where t.organization_id = ")
                .push_bind(organization_id.to_owned())
                .push(" order by j.created_at desc, j.job_id desc limit ")
                .push_bind(limit);
        }
        None => push_jobs_page(&mut sql, filter, false, limit),
    }
    sql.push(") j order by j.created_at desc, j.job_id desc");
    sql.build_query_as().fetch_all(db).await
}

/// The columns of [`JobRow`] for the one statement that cannot use `query_job!` (decoded by
/// name through `FromRow`, so a column missing here fails every list at once).
const LISTED_JOB_COLUMNS: &str = "job_id, team_id, user_id, job_type, status, requested_status, \
     credit_hold, metadata, completion_metadata, error_message, created_at, updated_at, \
     completed_at, expires_at, callback_url";

/// `select ... from jobs where <filter> order by ... limit`, only the filters given written
/// out (each combination is planned for what it has); `per_team` ties it to the row `t`.
fn push_jobs_page(
    sql: &mut QueryBuilder<'_, Postgres>,
    filter: &JobFilter,
    per_team: bool,
    limit: i64,
) {
    sql.push("select ")
        .push(LISTED_JOB_COLUMNS)
        .push(" from jobs where true");
    if per_team {
        sql.push(" and team_id = t.team_id");
    }
    if let Some(team_id) = &filter.team_id {
        sql.push(" and team_id = ").push_bind(team_id.clone());
    }
    if let Some(status) = filter.status {
        sql.push(" and status = ").push_bind(status);
    }
    if let Some(job_type) = &filter.job_type {
        sql.push(" and job_type = ").push_bind(job_type.clone());
    }
    if let Some(from) = filter.created_from {
        sql.push(" and created_at >= ").push_bind(from);
    }
    if let Some(to) = filter.created_to {
        sql.push(" and created_at < ").push_bind(to);
    }
    if let Some((at, id)) = filter.before {
        sql.push(" and (created_at, job_id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" order by created_at desc, job_id desc limit ")
        .push_bind(limit);
}

/// One attempt of a call at one model.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub call_id: Uuid,
    pub model_name: String,
    pub http_status: Option<i32>,
    pub outcome: AttemptOutcome,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The attempts of the given calls, in the order they were made.
pub async fn attempts(db: impl PgExecutor<'_>, call_ids: &[Uuid]) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as!(
        AttemptRow,
        r#"select call_id, model_name, http_status, outcome as "outcome: AttemptOutcome", latency_ms, error, created_at
         from llm_call_attempts where call_id = any($1) order by attempt_id"#,
        call_ids
    )
    .fetch_all(db)
    .await
}

/// A webhook delivery with its attempts as JSON (`[{attempt, at, http_status, error, latency_ms}]`).
#[derive(Debug, Clone)]
pub struct DeliveryListing {
    pub delivery_id: Uuid,
    /// `None` for a team event (`team.*`).
    pub job_id: Option<Uuid>,
    pub team_id: String,
    pub event_type: String,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_http_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub attempt_log: serde_json::Value,
}

/// Webhook deliveries newest first, optionally of one team, before `before` (created_at, id).
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    team_id: Option<&str>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryListing>> {
    let (before_at, before_id) = before.unzip();
    // `attempt_log!`: a `coalesce` with a constant.
    sqlx::query_as!(
        DeliveryListing,
        r#"select d.delivery_id, d.job_id, d.team_id, d.event_type, d.url, d.status as "status: DeliveryStatus", d.attempts,
                d.last_http_status, d.last_error, d.created_at, d.delivered_at,
                coalesce((select jsonb_agg(jsonb_build_object('attempt', a.attempt_number,
                          'at', a.attempted_at, 'http_status', a.http_status, 'error', a.error,
                          'latency_ms', a.latency_ms) order by a.attempt_number)
                          from webhook_delivery_attempts a where a.delivery_id = d.delivery_id), '[]') as "attempt_log!"
         from webhook_deliveries d
         where ($1::text is null or d.team_id = $1)
           and ($2::timestamptz is null or (d.created_at, d.delivery_id) < ($2, $3))
         order by d.created_at desc, d.delivery_id desc limit $4"#,
        team_id,
        before_at,
        before_id,
        limit
    )
    .fetch_all(db)
    .await
}

/// The teams granted each of the given model groups: (group id, team id), by team id.
pub async fn group_holders(
    db: impl PgExecutor<'_>,
    group_ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "select model_group_id, team_id from team_model_groups where model_group_id = any($1)
         order by team_id",
        group_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.model_group_id, r.team_id))
        .collect())
}

/// Every team's id.
pub async fn team_ids(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!("select team_id from teams")
        .fetch_all(db)
        .await
}
