//! Team alerts (see the migration that creates `team_alerts`): settings, and the reconciler's
//! evaluation. A threshold fires once per crossing: its armed -> fired update is guarded and
//! commits with the webhook delivery it queues, rows locked by another evaluation are skipped
//! (never waited for), and it is armed again once the value is back on the safe side.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::money::MicroUsd;

/// Sent when a team's available credits go below its `credits_below`.
pub const TEAM_CREDITS_LOW: &str = "team.credits_low";
/// Sent when a team's /v1 spend reaches its `budget_spend_pct` of the budget.
pub const TEAM_BUDGET_THRESHOLD: &str = "team.budget_threshold";

/// A team's alert settings and state (never the secret).
#[derive(Debug, Clone)]
pub struct AlertRow {
    pub team_id: String,
    pub url: Option<String>,
    pub credits_below: Option<i64>,
    pub budget_spend_pct: Option<i16>,
    pub usd_per_credit_micro: i64,
    /// When the credits threshold fired; `None` while it is armed.
    pub credits_fired_at: Option<DateTime<Utc>>,
    /// When the budget threshold fired; `None` while it is armed.
    pub budget_fired_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl AlertRow {
    /// Whether any threshold is set.
    pub fn enabled(&self) -> bool {
        self.credits_below.is_some() || self.budget_spend_pct.is_some()
    }
}

/// `sqlx::query_as!` into [`AlertRow`], with the alert's column list between `$head` and `$tail`
/// (sqlx's macros take only string literals, so the list cannot be a constant).
macro_rules! query_alert {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            AlertRow,
            $head
                + "team_id, url, credits_below, budget_spend_pct, usd_per_credit_micro,
                   credits_fired_at, budget_fired_at, updated_at"
                + $tail
            $(, $arg)*
        )
    };
}

/// The team's alerts, if they were ever set.
pub async fn find(db: impl PgExecutor<'_>, team_id: &str) -> sqlx::Result<Option<AlertRow>> {
    query_alert!("select ", " from team_alerts where team_id = $1", team_id)
        .fetch_optional(db)
        .await
}

/// As `find`, locking the row until the end of the transaction (a change reads what it replaces).
pub async fn find_for_update(
    conn: &mut PgConnection,
    team_id: &str,
) -> sqlx::Result<Option<AlertRow>> {
    query_alert!(
        "select ",
        " from team_alerts where team_id = $1 for update",
        team_id
    )
    .fetch_optional(conn)
    .await
}

/// New alert settings. Both thresholds `None` turns alerts off (the URL must then be `None`).
#[derive(Debug, Clone, Copy)]
pub struct AlertSettings<'a> {
    pub url: Option<&'a str>,
    pub credits_below: Option<i64>,
    pub budget_spend_pct: Option<i16>,
    pub usd_per_credit_micro: i64,
}

/// Writes the team's settings. `secret` replaces the signing secret; `None` keeps the stored one
/// (a team without a row must be given one). A threshold whose value changes is armed again;
/// one left as it was keeps its state, so resending the same settings sends nothing twice.
/// Violates `team_alerts_team_fkey` for an unknown team.
pub async fn upsert(
    conn: &mut PgConnection,
    team_id: &str,
    settings: &AlertSettings<'_>,
    secret: Option<&str>,
) -> sqlx::Result<AlertRow> {
    query_alert!(
        "insert into team_alerts (team_id, url, secret, credits_below, budget_spend_pct, usd_per_credit_micro)
         values ($1, $2, coalesce($3, (select secret from team_alerts where team_id = $1)), $4, $5, $6)
         on conflict (team_id) do update set
             url = excluded.url,
             secret = coalesce($3, team_alerts.secret),
             credits_below = excluded.credits_below,
             budget_spend_pct = excluded.budget_spend_pct,
             usd_per_credit_micro = excluded.usd_per_credit_micro,
             credits_fired_at = case when team_alerts.credits_below is not distinct from excluded.credits_below
                                     then team_alerts.credits_fired_at end,
             budget_fired_at = case when team_alerts.budget_spend_pct is not distinct from excluded.budget_spend_pct
                                    then team_alerts.budget_fired_at end,
             updated_at = now()
         returning ",
        "",
        team_id,
        settings.url,
        secret,
        settings.credits_below,
        settings.budget_spend_pct,
        settings.usd_per_credit_micro
    )
    .fetch_one(conn)
    .await
}

/// A threshold that fired, with the delivery queued for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredAlert {
    pub team_id: String,
    pub event_type: &'static str,
    pub delivery_id: Uuid,
}

struct CreditsCrossing {
    team_id: String,
    organization_id: String,
    url: String,
    credits_below: i64,
    available: i64,
}

struct BudgetCrossing {
    team_id: String,
    organization_id: String,
    url: String,
    budget_spend_pct: i16,
    spend_micro_usd: i64,
    budget_micro_usd: i64,
}

/// `sqlx::query_as!` into `$row` setting the `$fired_at` column to `$2` (a time fires the
/// threshold, null arms it again) on up to `$1` alerts, in team order, where `$chosen` holds (`a`
/// the alert, `b` its team's balance) and the value changes, returning the team and
/// `$returning` (`t` the team). Rows another evaluation holds are skipped: it is firing or
/// re-arming them. sqlx's macros take only string literals, so every threshold is fired and
/// re-armed by the statement spelled here.
macro_rules! set_fired_where {
    ($row:ident, $chosen:literal, $fired_at:literal, $returning:literal, $limit:expr, $value:expr) => {
        sqlx::query_as!(
            $row,
            "with chosen as (
             select a.team_id from team_alerts a join credit_balances b using (team_id)
             where "
                + $chosen
                + "
             order by a.team_id limit $1
             for update of a skip locked)
         update team_alerts a set "
                + $fired_at
                + " = $2
         from chosen, credit_balances b, teams t
         where a.team_id = chosen.team_id and b.team_id = a.team_id and t.team_id = a.team_id
           and a."
                + $fired_at
                + " is distinct from $2
         returning a.team_id"
                + $returning,
            $limit,
            $value
        )
    };
}

/// Fires every armed threshold whose value has crossed it (at most `limit` of each kind) and
/// queues its event, in one transaction: the guarded armed -> fired updates and the deliveries
/// commit together. Rows another evaluation holds are skipped; it is firing or re-arming them.
pub async fn fire_crossed(
    db: &PgPool,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<FiredAlert>> {
    let mut tx = db.begin().await?;
    // `url!`, `credits_below!`: the rows selected have a threshold set, and with it a URL
    // (`team_alerts_url_when_on`); `available!`: a difference of not-null columns.
    let credits = set_fired_where!(
        CreditsCrossing,
        "a.credits_below is not null and a.credits_fired_at is null
               and b.credits_allocated - b.credits_used - b.credits_reserved < a.credits_below",
        "credits_fired_at",
        r#", t.organization_id, a.url as "url!", a.credits_below as "credits_below!",
                   b.credits_allocated - b.credits_used - b.credits_reserved as "available!""#,
        limit,
        now
    )
    .fetch_all(&mut *tx)
    .await?;
    // A team without a budget (no credits, or a deployment rate of 0) has nothing to spend a
    // percentage of. The budget, credits x the rate capped to bigint, is written out where it is
    // used (here and in `rearm`): sqlx's macros take only string literals.
    // `url!`, `budget_spend_pct!`: the rows selected have a threshold set, and with it a URL;
    // `budget_micro_usd!`: `least` of not-null values.
    let budget = set_fired_where!(
        BudgetCrossing,
        "a.budget_spend_pct is not null and a.budget_fired_at is null
               and least(b.credits_allocated::numeric * a.usd_per_credit_micro, 9223372036854775807) > 0
               and b.spend_micro_usd::numeric * 100
                   >= a.budget_spend_pct * least(b.credits_allocated::numeric * a.usd_per_credit_micro, 9223372036854775807)",
        "budget_fired_at",
        r#", t.organization_id, a.url as "url!", a.budget_spend_pct as "budget_spend_pct!",
                   b.spend_micro_usd,
                   least(b.credits_allocated::numeric * a.usd_per_credit_micro, 9223372036854775807)::int8
                       as "budget_micro_usd!""#,
        limit,
        now
    )
    .fetch_all(&mut *tx)
    .await?;
    let deliveries: Vec<Delivery> = credits
        .into_iter()
        .map(|c| c.delivery(now))
        .chain(budget.into_iter().map(|b| b.delivery(now)))
        .collect();
    queue_deliveries(&mut tx, &deliveries).await?;
    tx.commit().await?;
    Ok(deliveries
        .into_iter()
        .map(|d| FiredAlert {
            team_id: d.team_id,
            event_type: d.event_type,
            delivery_id: d.delivery_id,
        })
        .collect())
}

/// The webhook delivery of a threshold that fired.
struct Delivery {
    delivery_id: Uuid,
    team_id: String,
    event_type: &'static str,
    payload: serde_json::Value,
    url: String,
}

impl CreditsCrossing {
    fn delivery(self, now: DateTime<Utc>) -> Delivery {
        let payload = json!({
            "type": TEAM_CREDITS_LOW,
            "timestamp": now,
            "data": {
                "team_id": self.team_id,
                "organization_id": self.organization_id,
                "metric": "credits_available",
                "threshold": self.credits_below,
                "value": self.available,
            },
        });
        Delivery {
            delivery_id: Uuid::now_v7(),
            team_id: self.team_id,
            event_type: TEAM_CREDITS_LOW,
            payload,
            url: self.url,
        }
    }
}

impl BudgetCrossing {
    fn delivery(self, now: DateTime<Utc>) -> Delivery {
        // Basis points, so the percentage is exact to two decimals without a float in the maths.
        let basis_points =
            i128::from(self.spend_micro_usd) * 10_000 / i128::from(self.budget_micro_usd.max(1));
        let payload = json!({
            "type": TEAM_BUDGET_THRESHOLD,
            "timestamp": now,
            "data": {
                "team_id": self.team_id,
                "organization_id": self.organization_id,
                "metric": "budget_spent_pct",
                "threshold": self.budget_spend_pct,
                "value": basis_points as f64 / 100.0,
                "spend_usd": MicroUsd(self.spend_micro_usd).usd(),
                "budget_usd": MicroUsd(self.budget_micro_usd).usd(),
            },
        });
        Delivery {
            delivery_id: Uuid::now_v7(),
            team_id: self.team_id,
            event_type: TEAM_BUDGET_THRESHOLD,
            payload,
            url: self.url,
        }
    }
}

/// Queues the deliveries in one statement.
async fn queue_deliveries(conn: &mut PgConnection, deliveries: &[Delivery]) -> sqlx::Result<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.delivery_id).collect();
    let teams: Vec<String> = deliveries.iter().map(|d| d.team_id.clone()).collect();
    let events: Vec<String> = deliveries.iter().map(|d| d.event_type.to_owned()).collect();
    let payloads: Vec<serde_json::Value> = deliveries.iter().map(|d| d.payload.clone()).collect();
    let urls: Vec<String> = deliveries.iter().map(|d| d.url.clone()).collect();
    sqlx::query!(
        "insert into webhook_deliveries (delivery_id, job_id, team_id, event_type, payload, url)
             select d.id, null, d.team_id, d.event_type, d.payload, d.url
             from unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[])
                 as d(id, team_id, event_type, payload, url)",
        &ids,
        &teams,
        &events,
        &payloads,
        &urls
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A team whose threshold was armed again.
struct Rearmed {
    team_id: String,
}

/// Logs the teams whose `threshold` was armed again and counts them.
fn rearmed(rows: Vec<Rearmed>, threshold: &str) -> u64 {
    for row in &rows {
        tracing::debug!(team_id = %row.team_id, threshold, "alert threshold armed again");
    }
    rows.len() as u64
}

/// Arms again every fired threshold whose value is back on the safe side: credits available at
/// or above `credits_below` (credits were added, holds released), spend below the percentage
/// (a budget reset, a larger budget). Returns how many thresholds were re-armed.
pub async fn rearm(db: &PgPool, limit: i64) -> sqlx::Result<u64> {
    let credits = set_fired_where!(
        Rearmed,
        "a.credits_fired_at is not null
               and b.credits_allocated - b.credits_used - b.credits_reserved >= a.credits_below",
        "credits_fired_at",
        "",
        limit,
        None::<DateTime<Utc>>
    )
    .fetch_all(db)
    .await?;
    let budget = set_fired_where!(
        Rearmed,
        "a.budget_fired_at is not null
               and least(b.credits_allocated::numeric * a.usd_per_credit_micro, 9223372036854775807) > 0
               and b.spend_micro_usd::numeric * 100
                   < a.budget_spend_pct * least(b.credits_allocated::numeric * a.usd_per_credit_micro, 9223372036854775807)",
        "budget_fired_at",
        "",
        limit,
        None::<DateTime<Utc>>
    )
    .fetch_all(db)
    .await?;
    Ok(rearmed(credits, "credits") + rearmed(budget, "budget"))
}
