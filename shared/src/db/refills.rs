//! Scheduled credit grants and budget periods (see the migration that creates `team_refills`).
//! The reconciler applies a due boundary with a guarded update of `next_*_at` from the value it
//! read to the next boundary, in the transaction of the balance change (and its ledger row), so
//! two reconcilers racing apply it once. After an outage only one grant or reset is applied, and
//! the schedule moves to the first boundary in the future.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::db::credits::{self, BalanceRow, TransactionRow, TransactionType};
use crate::domain::periods::Period;

/// A team's schedules.
#[derive(Debug, Clone)]
pub struct RefillRow {
    pub team_id: String,
    pub grant_credits: Option<i64>,
    pub grant_period: Option<Period>,
    pub grant_anchor: Option<DateTime<Utc>>,
    pub next_grant_at: Option<DateTime<Utc>>,
    /// The boundary of the last grant applied.
    pub last_grant_at: Option<DateTime<Utc>>,
    pub budget_duration: Option<Period>,
    pub budget_anchor: Option<DateTime<Utc>>,
    pub next_budget_reset_at: Option<DateTime<Utc>>,
    /// The boundary of the last budget reset applied.
    pub last_budget_reset_at: Option<DateTime<Utc>>,
}

/// `sqlx::query_as!` into [`RefillRow`], with the schedule's column list between `$head` and
/// `$tail` (sqlx's macros take only string literals, so the list cannot be a constant).
macro_rules! query_refill {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            RefillRow,
            $head
                + r#"team_id, grant_credits, grant_period as "grant_period: Period", grant_anchor,
                     next_grant_at, last_grant_at, budget_duration as "budget_duration: Period",
                     budget_anchor, next_budget_reset_at, last_budget_reset_at"#
                + $tail
            $(, $arg)*
        )
    };
}

/// One schedule: its period, the moment it counts from, and its next boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub period: Period,
    pub anchor: DateTime<Utc>,
    pub next_at: DateTime<Utc>,
}

impl Schedule {
    /// The schedule for `period` set at `now`: the one in force when its period is the same (so
    /// resending a setting neither moves nor repeats a boundary), else a new one counting from
    /// `now`, first due one period later.
    pub fn keep_or_start(
        period: Period,
        current: Option<Schedule>,
        now: DateTime<Utc>,
    ) -> Schedule {
        match current {
            Some(current) if current.period == period => current,
            _ => Schedule {
                period,
                anchor: now,
                next_at: period.next_after(now, now),
            },
        }
    }
}

impl RefillRow {
    /// The grant schedule in force.
    pub fn grant_schedule(&self) -> Option<Schedule> {
        Some(Schedule {
            period: self.grant_period?,
            anchor: self.grant_anchor?,
            next_at: self.next_grant_at?,
        })
    }

    /// The budget schedule in force.
    pub fn budget_schedule(&self) -> Option<Schedule> {
        Some(Schedule {
            period: self.budget_duration?,
            anchor: self.budget_anchor?,
            next_at: self.next_budget_reset_at?,
        })
    }
}

/// The team's schedules, if they were ever set.
pub async fn find(db: impl PgExecutor<'_>, team_id: &str) -> sqlx::Result<Option<RefillRow>> {
    query_refill!("select ", " from team_refills where team_id = $1", team_id)
        .fetch_optional(db)
        .await
}

/// As `find`, locking the row until the end of the transaction.
pub async fn find_for_update(
    conn: &mut PgConnection,
    team_id: &str,
) -> sqlx::Result<Option<RefillRow>> {
    query_refill!(
        "select ",
        " from team_refills where team_id = $1 for update",
        team_id
    )
    .fetch_optional(conn)
    .await
}

/// Writes the team's schedules (`None` turns one off); the `last_*` history is kept. Violates
/// `team_refills_team_fkey` for an unknown team.
pub async fn upsert(
    conn: &mut PgConnection,
    team_id: &str,
    grant: Option<(i64, Schedule)>,
    budget: Option<Schedule>,
) -> sqlx::Result<RefillRow> {
    let grant_schedule = grant.map(|(_, s)| s);
    query_refill!(
        "insert into team_refills (team_id, grant_credits, grant_period, grant_anchor, next_grant_at,
                                   budget_duration, budget_anchor, next_budget_reset_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (team_id) do update set
             grant_credits = excluded.grant_credits, grant_period = excluded.grant_period,
             grant_anchor = excluded.grant_anchor, next_grant_at = excluded.next_grant_at,
             budget_duration = excluded.budget_duration, budget_anchor = excluded.budget_anchor,
             next_budget_reset_at = excluded.next_budget_reset_at, updated_at = now()
         returning ",
        "",
        team_id,
        grant.map(|(credits, _)| credits),
        grant_schedule.map(|s| s.period) as Option<Period>,
        grant_schedule.map(|s| s.anchor),
        grant_schedule.map(|s| s.next_at),
        budget.map(|s| s.period) as Option<Period>,
        budget.map(|s| s.anchor),
        budget.map(|s| s.next_at)
    )
    .fetch_one(conn)
    .await
}

/// A schedule boundary that has come: a credit grant's or a budget period's end.
#[derive(Debug, Clone)]
pub struct Due {
    pub team_id: String,
    pub period: Period,
    pub anchor: DateTime<Utc>,
    /// The boundary that came (the value the guarded update expects).
    pub due_at: DateTime<Utc>,
}

impl Due {
    /// The schedule's first boundary after `now`, where applying this one moves it.
    pub fn next_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.period.next_after(self.anchor, now)
    }
}

/// A grant whose boundary has come, with the credits it adds.
#[derive(Debug, Clone)]
pub struct DueGrant {
    pub due: Due,
    pub credits: i64,
}

/// Grants due at `now`, earliest first.
pub async fn due_grants(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<DueGrant>> {
    // `!`: a row with `next_grant_at` set has its whole grant schedule (`team_refills_grant_complete`).
    let rows = sqlx::query!(
        r#"select team_id, grant_credits as "credits!", grant_period as "period!: Period",
                  grant_anchor as "anchor!", next_grant_at as "due_at!"
           from team_refills where next_grant_at <= $1 order by next_grant_at limit $2"#,
        now,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| DueGrant {
            credits: row.credits,
            due: Due {
                team_id: row.team_id,
                period: row.period,
                anchor: row.anchor,
                due_at: row.due_at,
            },
        })
        .collect())
}

/// Applies one due grant: moves the schedule from `due.due_at` to `next_at` (guarded: only if
/// it still stands there with the same amount and period) and adds the credits with a `refill`
/// ledger row, in one transaction. `None` when the guard failed: another reconciler applied it,
/// or the schedule was changed since it was read.
pub async fn apply_grant(
    db: &PgPool,
    grant: &DueGrant,
    next_at: DateTime<Utc>,
) -> sqlx::Result<Option<(BalanceRow, TransactionRow)>> {
    let (due, amount) = (&grant.due, grant.credits);
    let mut tx = db.begin().await?;
    if !advance(&mut tx, due, Boundary::Grant { credits: amount }, next_at).await? {
        return Ok(None);
    }
    let metadata = json!({
        "period": due.period.as_str(),
        "due_at": due.due_at,
        "next_grant_at": next_at,
    });
    let reason = format!("Scheduled refill ({})", due.period.as_str());
    let Some(applied) = credits::allocate(
        &mut tx,
        &due.team_id,
        amount,
        TransactionType::Refill,
        Some(&reason),
        &metadata,
    )
    .await?
    else {
        return Ok(None);
    };
    tx.commit().await?;
    Ok(Some(applied))
}

/// Budget resets due at `now`, earliest first.
pub async fn due_resets(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<Due>> {
    // `!`: a row with `next_budget_reset_at` set has its whole budget schedule
    // (`team_refills_budget_complete`).
    sqlx::query_as!(
        Due,
        r#"select team_id, budget_duration as "period!: Period", budget_anchor as "anchor!",
                  next_budget_reset_at as "due_at!"
           from team_refills where next_budget_reset_at <= $1 order by next_budget_reset_at limit $2"#,
        now,
        limit
    )
    .fetch_all(db)
    .await
}

/// Applies one due budget reset: moves the schedule (guarded, as `apply_grant`), sets the team's
/// /v1 spend to 0 and records what it cleared in `budget_resets`, in one transaction. Only the
/// spend changes: budget held by slices and open reservations (`budget_reserved_micro_usd`)
/// stays reserved and is settled into the new period's spend. Returns the spend cleared, or
/// `None` when the guard failed.
pub async fn apply_reset(
    db: &PgPool,
    due: &Due,
    next_at: DateTime<Utc>,
) -> sqlx::Result<Option<i64>> {
    let mut tx = db.begin().await?;
    if !advance(&mut tx, due, Boundary::BudgetReset, next_at).await? {
        return Ok(None);
    }
    // The old value comes from the locked row, so spend written concurrently is either cleared
    // here (and counted in the reset) or added after it.
    // `spend_micro_usd!`: the CTE's copy of a not-null column.
    let cleared = sqlx::query_scalar!(
        r#"with old as (
             select team_id, spend_micro_usd from credit_balances where team_id = $1 for no key update)
         update credit_balances b set spend_micro_usd = 0, updated_at = now()
         from old where b.team_id = old.team_id
         returning old.spend_micro_usd as "spend_micro_usd!""#,
        due.team_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(cleared) = cleared else {
        return Ok(None);
    };
    sqlx::query!(
        "insert into budget_resets (reset_id, team_id, due_at, spend_cleared_micro_usd)
         values ($1, $2, $3, $4)",
        Uuid::now_v7(),
        due.team_id,
        due.due_at,
        cleared
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(cleared))
}

/// Which schedule a due boundary belongs to.
enum Boundary {
    /// A credit grant of this amount.
    Grant {
        credits: i64,
    },
    BudgetReset,
}

/// Moves the schedule's next boundary from `due.due_at` to `next_at` and records `due.due_at` as
/// the last one applied, only if it still stands there with the same period (and, for a grant,
/// the same amount). False when it does not: another reconciler applied the boundary, or the
/// schedule was changed since it was read.
async fn advance(
    conn: &mut PgConnection,
    due: &Due,
    boundary: Boundary,
    next_at: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let done = match boundary {
        Boundary::Grant { credits } => {
            sqlx::query!(
                "update team_refills set next_grant_at = $5, last_grant_at = $2
         where team_id = $1 and next_grant_at = $2 and grant_credits = $3 and grant_period = $4",
                due.team_id,
                due.due_at,
                credits,
                due.period as Period,
                next_at
            )
            .execute(conn)
            .await?
        }
        Boundary::BudgetReset => {
            sqlx::query!(
                "update team_refills set next_budget_reset_at = $4, last_budget_reset_at = $2
         where team_id = $1 and next_budget_reset_at = $2 and budget_duration = $3",
                due.team_id,
                due.due_at,
                due.period as Period,
                next_at
            )
            .execute(conn)
            .await?
        }
    };
    Ok(done.rows_affected() == 1)
}
