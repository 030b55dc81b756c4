//! How a team's alerts and refills are shown: in the answers of their PUTs, in the audit
//! snapshots, and in the team's info (where a team key sees the alert URL's origin only).

use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::refills::RefillRow;
use saasllm_shared::db::team_alerts::AlertRow;
use saasllm_shared::domain::periods::Period;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A team's alerts. A threshold's state is `armed` (it fires when crossed) or `fired` (it has
/// sent its event and is armed again once the value is back on the safe side); null when the
/// threshold is not set.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsView {
    enabled: bool,
    /// Where events are POSTed. A team key sees only its origin (`scheme://host[:port]`): the
    /// path or query may hold the receiver's token.
    url: Option<String>,
    credits_below: Option<i64>,
    budget_spend_pct: Option<i16>,
    #[schema(value_type = Option<String>, example = "armed")]
    credits_below_state: Option<&'static str>,
    credits_below_fired_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<String>, example = "fired")]
    budget_spend_pct_state: Option<&'static str>,
    budget_spend_pct_fired_at: Option<DateTime<Utc>>,
}

fn state_of(threshold_set: bool, fired_at: Option<DateTime<Utc>>) -> Option<&'static str> {
    threshold_set.then_some(if fired_at.is_some() { "fired" } else { "armed" })
}

impl AlertsView {
    pub(super) fn new(row: Option<&AlertRow>, origin_only: bool) -> Self {
        let Some(row) = row else {
            return Self {
                enabled: false,
                url: None,
                credits_below: None,
                budget_spend_pct: None,
                credits_below_state: None,
                credits_below_fired_at: None,
                budget_spend_pct_state: None,
                budget_spend_pct_fired_at: None,
            };
        };
        let url = match origin_only {
            false => row.url.clone(),
            true => row.url.as_deref().map(|u| match url::Url::parse(u) {
                Ok(parsed) => parsed.origin().ascii_serialization(),
                Err(_) => String::new(),
            }),
        };
        Self {
            enabled: row.enabled(),
            url,
            credits_below: row.credits_below,
            budget_spend_pct: row.budget_spend_pct,
            credits_below_state: state_of(row.credits_below.is_some(), row.credits_fired_at),
            credits_below_fired_at: row.credits_fired_at,
            budget_spend_pct_state: state_of(row.budget_spend_pct.is_some(), row.budget_fired_at),
            budget_spend_pct_fired_at: row.budget_fired_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditGrantView {
    credits: i64,
    period: Period,
}

/// A team's scheduled grant and budget period; boundaries fall every period after the moment
/// each was set (`1mo`: the same day of the month, or the month's last day).
#[derive(Debug, Serialize, ToSchema)]
pub struct RefillsView {
    credit_grant: Option<CreditGrantView>,
    next_grant_at: Option<DateTime<Utc>>,
    last_grant_at: Option<DateTime<Utc>>,
    /// The team's /v1 spend goes back to 0 every period.
    budget_duration: Option<Period>,
    next_budget_reset_at: Option<DateTime<Utc>>,
    last_budget_reset_at: Option<DateTime<Utc>>,
}

impl RefillsView {
    pub(super) fn new(row: Option<&RefillRow>) -> Self {
        Self {
            credit_grant: row.and_then(|r| {
                Some(CreditGrantView {
                    credits: r.grant_credits?,
                    period: r.grant_period?,
                })
            }),
            next_grant_at: row.and_then(|r| r.next_grant_at),
            last_grant_at: row.and_then(|r| r.last_grant_at),
            budget_duration: row.and_then(|r| r.budget_duration),
            next_budget_reset_at: row.and_then(|r| r.next_budget_reset_at),
            last_budget_reset_at: row.and_then(|r| r.last_budget_reset_at),
        }
    }
}

/// The audit snapshot of a team's alerts (null when none are stored): the admin's view.
pub(super) fn alerts_snapshot(row: Option<&AlertRow>) -> Result<Option<Value>, ApiError> {
    snapshot(row.map(|row| AlertsView::new(Some(row), false)))
}

/// The audit snapshot of a team's refills (null when none are stored).
pub(super) fn refills_snapshot(row: Option<&RefillRow>) -> Result<Option<Value>, ApiError> {
    snapshot(row.map(|row| RefillsView::new(Some(row))))
}

fn snapshot(view: Option<impl Serialize>) -> Result<Option<Value>, ApiError> {
    view.map(serde_json::to_value)
        .transpose()
        .map_err(|e| anyhow::Error::from(e).into())
}

/// The alerts and refills shown in a team's info; `origin_only` for a team key.
pub async fn views(
    db: &sqlx::PgPool,
    team_id: &str,
    origin_only: bool,
) -> Result<(AlertsView, RefillsView), ApiError> {
    let (alerts, refills) = tokio::try_join!(
        db::team_alerts::find(db, team_id),
        db::refills::find(db, team_id),
    )?;
    Ok((
        AlertsView::new(alerts.as_ref(), origin_only),
        RefillsView::new(refills.as_ref()),
    ))
}
