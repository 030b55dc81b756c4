//! Team settings the reconciler acts on (admin): alerts, signed webhooks sent once per crossing
//! when credits run low or the /v1 budget is mostly spent, and refills, a periodic credit grant
//! and a budget that resets every period. Each PUT replaces the settings it names.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::Utc;
use saasllm_shared::db;
use saasllm_shared::db::refills::{RefillRow, Schedule};
use saasllm_shared::db::team_alerts::AlertSettings;
use saasllm_shared::domain::webhook;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audited::commit_recorded;
use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::extract::{Path, RawBody, parse_json_object};
use crate::lookup;
use crate::state::AppState;

mod bodies;
mod views;

use bodies::{AlertsAsked, AlertsBody, RefillsBody};
pub use views::{AlertsView, RefillsView, views};
use views::{alerts_snapshot, refills_snapshot};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_alerts))
        .routes(routes!(set_refills))
}

#[derive(Serialize, ToSchema)]
struct TeamSettingsResponse {
    team_id: String,
    alerts: AlertsView,
    refills: RefillsView,
    /// The signing secret, only in the answer of the request that set it (given, generated for
    /// the first alerts, or rotated).
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_secret: Option<String>,
}

/// Sets the team's alerts (admin). Each threshold fires one signed webhook (Standard Webhooks,
/// like job callbacks) when crossed, and is armed again when the value is back: credits
/// available at or above `credits_below`, spend below `budget_spend_pct`. Evaluated by the
/// reconciler every `RECONCILE_INTERVAL_SECS`.
#[utoipa::path(
    put,
    path = "/api/teams/{team_id}/alerts",
    tag = "teams",
    params(("team_id" = String, Path)),
    request_body(content = AlertsBody, example = json!({"url": "https://hooks.example.com/saasllm", "credits_below": 10, "budget_spend_pct": 80})),
    responses((status = 200, description = "The team's settings now in force", body = TeamSettingsResponse)),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %team_id))]
async fn set_alerts(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    RawBody(body): RawBody,
) -> Result<JsonResponse<TeamSettingsResponse>, ApiError> {
    let body: AlertsBody = parse_json_object(&body)?;
    let AlertsAsked {
        on,
        url,
        credits_below,
        budget_spend_pct,
        given_secret,
        rotate_secret,
    } = body.check(&state)?;
    let mut tx = state.db.begin().await?;
    lookup::team(&mut *tx, &team_id).await?;
    let current = db::team_alerts::find_for_update(&mut tx, &team_id).await?;
    let before = alerts_snapshot(current.as_ref())?;
    // A secret is set by this request when given, rotated, or needed for the first alerts.
    let new_secret = given_secret
        .or_else(|| (rotate_secret || (on && current.is_none())).then(webhook::generate_secret));
    let row = match (&current, on) {
        // Nothing stored and nothing asked for: nothing to write.
        (None, false) => None,
        _ => Some(
            db::team_alerts::upsert(
                &mut tx,
                &team_id,
                &AlertSettings {
                    url,
                    credits_below,
                    budget_spend_pct,
                    usd_per_credit_micro: state.settings.usd_per_credit.0,
                },
                new_secret.as_deref(),
            )
            .await
            .map_err(|e| lookup::team_gone(e, &team_id))?,
        ),
    };
    let refills = db::refills::find(&mut *tx, &team_id).await?;
    let mut after = alerts_snapshot(row.as_ref())?;
    // The secret itself never enters the audit log, but that it was set or rotated does.
    if let (Some(Value::Object(view)), true) = (after.as_mut(), new_secret.is_some()) {
        view.insert("secret_set".into(), Value::Bool(true));
    }
    let changed = before != after;
    commit_recorded(
        &admin,
        tx,
        "team.set_alerts",
        ("team", &team_id),
        before,
        after,
    )
    .await?;
    tracing::info!(
        changed,
        secret_set = new_secret.is_some(),
        "team alerts set"
    );
    Ok(JsonResponse(TeamSettingsResponse {
        alerts: AlertsView::new(row.as_ref(), false),
        refills: RefillsView::new(refills.as_ref()),
        signing_secret: new_secret,
        team_id,
    }))
}

/// Sets the team's scheduled credit grant and budget period (admin). A schedule counts from the
/// moment it is set and is first due one period later; setting the same period again keeps its
/// boundaries. Applied by the reconciler exactly once per boundary; after downtime, one grant
/// (and one reset) is applied and the schedule moves to the next future boundary.
#[utoipa::path(
    put,
    path = "/api/teams/{team_id}/refills",
    tag = "teams",
    params(("team_id" = String, Path)),
    request_body(content = RefillsBody, example = json!({"credit_grant": {"credits": 100, "period": "1mo"}, "budget_duration": "30d"})),
    responses((status = 200, description = "The team's settings now in force", body = TeamSettingsResponse)),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %team_id))]
async fn set_refills(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    RawBody(body): RawBody,
) -> Result<JsonResponse<TeamSettingsResponse>, ApiError> {
    let body: RefillsBody = parse_json_object(&body)?;
    let (grant, budget) = body.check()?;
    let mut tx = state.db.begin().await?;
    lookup::team(&mut *tx, &team_id).await?;
    let current = db::refills::find_for_update(&mut tx, &team_id).await?;
    let before = refills_snapshot(current.as_ref())?;
    let now = Utc::now();
    let grant = grant.map(|(credits, period)| {
        let current = current.as_ref().and_then(RefillRow::grant_schedule);
        (credits, Schedule::keep_or_start(period, current, now))
    });
    let budget = budget.map(|period| {
        let current = current.as_ref().and_then(RefillRow::budget_schedule);
        Schedule::keep_or_start(period, current, now)
    });
    let row = match (&current, grant.is_some() || budget.is_some()) {
        (None, false) => None,
        _ => Some(
            db::refills::upsert(&mut tx, &team_id, grant, budget)
                .await
                .map_err(|e| lookup::team_gone(e, &team_id))?,
        ),
    };
    let alerts = db::team_alerts::find(&mut *tx, &team_id).await?;
    let after = refills_snapshot(row.as_ref())?;
    let changed = before != after;
    commit_recorded(
        &admin,
        tx,
        "team.set_refills",
        ("team", &team_id),
        before,
        after,
    )
    .await?;
    tracing::info!(changed, "team refills set");
    Ok(JsonResponse(TeamSettingsResponse {
        alerts: AlertsView::new(alerts.as_ref(), false),
        refills: RefillsView::new(row.as_ref()),
        signing_secret: None,
        team_id,
    }))
}
