//! Team settings the reconciler acts on (admin): alerts, signed webhooks sent once per crossing
//! when credits run low or the /v1 budget is mostly spent, and refills, a periodic credit grant
//! and a budget that resets every period. Each PUT replaces the settings it names.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::Utc;
use saasllm_shared::db;
use saasllm_shared::db::refills::{RefillRow, Schedule};
use saasllm_shared::db::team_alerts::AlertSettings;
use saasllm_shared::domain::periods::Period;
use saasllm_shared::domain::webhook;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AdminAuth, team_not_found};
use crate::error::ApiError;
use crate::extract::{Path, RawBody, parse_json_object};
use crate::state::AppState;
use crate::validate::MAX_CALLBACK_URL_LEN;

mod views;

pub use views::{AlertsView, RefillsView, views};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_alerts))
        .routes(routes!(set_refills))
}

/// Largest scheduled grant, per period.
const MAX_GRANT_CREDITS: i64 = 1_000_000;
/// Largest `credits_below`.
const MAX_CREDITS_BELOW: i64 = 1_000_000_000;

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

/// A body that must be a JSON object: serde would also read a struct from an array.
fn object_body<T: DeserializeOwned>(field: &str, value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::BadRequest(format!(
            "{field} must be a JSON object"
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("Invalid request body: {e}")))
}

async fn existing_team(conn: &mut PgConnection, team_id: &str) -> Result<(), ApiError> {
    match db::teams::find(&mut *conn, team_id).await? {
        Some(_) => Ok(()),
        None => Err(team_not_found(team_id)),
    }
}

/// The team disappeared between the check and the write.
fn unknown_team(error: sqlx::Error, team_id: &str) -> ApiError {
    ApiError::from_db(error, |constraint| {
        constraint
            .ends_with("_team_fkey")
            .then(|| team_not_found(team_id))
    })
}

/// The body of `PUT /api/teams/{team_id}/alerts`. Alerts are on while a threshold is set; a
/// field left out is the same as null.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AlertsBody {
    /// `false` turns alerts off (the thresholds and `url` must then be left out or null).
    enabled: Option<bool>,
    /// http(s) URL the events are POSTed to; required with a threshold. Checked like a job's
    /// `callback_url`.
    #[schema(max_length = 2048)]
    url: Option<String>,
    /// Fires `team.credits_low` when available credits go below this (1..=1,000,000,000).
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    credits_below: Option<i64>,
    /// Fires `team.budget_threshold` when /v1 spend reaches this percent of the budget (1..=100).
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 100)]
    budget_spend_pct: Option<i64>,
    /// Signing secret, `whsec_` + base64 of 16 to 64 bytes; generated for a team's first alerts
    /// when left out, kept afterwards.
    secret: Option<String>,
    /// Replace the secret with a new generated one.
    #[serde(default)]
    rotate_secret: bool,
}

/// A checked alert URL: the job callback rules (absolute http(s), at most 2048 characters, no
/// credentials, no non-public address literal or internal host name under the deployment's
/// webhook target policy).
fn alert_url<'a>(value: &'a str, state: &AppState) -> Result<&'a str, ApiError> {
    if value.len() > MAX_CALLBACK_URL_LEN {
        return Err(ApiError::BadRequest(format!(
            "url must be at most {MAX_CALLBACK_URL_LEN} characters"
        )));
    }
    let parsed = url::Url::parse(value)
        .map_err(|_| ApiError::BadRequest("url must be an absolute http or https URL".into()))?;
    state
        .settings
        .webhook_targets
        .check_url(&parsed)
        .map_err(|refusal| ApiError::BadRequest(format!("url {refusal}")))?;
    Ok(value)
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
    let credits_below = body
        .credits_below
        .map(|n| match (1..=MAX_CREDITS_BELOW).contains(&n) {
            true => Ok(n),
            false => Err(ApiError::BadRequest(format!(
                "credits_below must be between 1 and {MAX_CREDITS_BELOW}, or null"
            ))),
        })
        .transpose()?;
    let budget_spend_pct = body
        .budget_spend_pct
        .map(|n| match i16::try_from(n) {
            Ok(pct) if (1..=100).contains(&pct) => Ok(pct),
            _ => Err(ApiError::BadRequest(
                "budget_spend_pct must be between 1 and 100, or null".into(),
            )),
        })
        .transpose()?;
    let on = credits_below.is_some() || budget_spend_pct.is_some();
    match (body.enabled, on) {
        (Some(false), true) => {
            return Err(ApiError::BadRequest(
                "enabled is false: leave out credits_below and budget_spend_pct".into(),
            ));
        }
        (Some(true), false) => {
            return Err(ApiError::BadRequest(
                "enabled is true but no threshold is set: give credits_below and/or budget_spend_pct".into(),
            ));
        }
        _ => {}
    }
    if !on && (body.url.is_some() || body.secret.is_some() || body.rotate_secret) {
        return Err(ApiError::BadRequest(
            "alerts are off (no threshold set): leave out url, secret and rotate_secret".into(),
        ));
    }
    let url = match (&body.url, on) {
        (Some(url), _) => Some(alert_url(url, &state)?),
        (None, true) => {
            return Err(ApiError::BadRequest(
                "url is required when a threshold is set".into(),
            ));
        }
        (None, false) => None,
    };
    let given_secret = match (&body.secret, body.rotate_secret) {
        (Some(_), true) => {
            return Err(ApiError::BadRequest(
                "give either secret or rotate_secret, not both".into(),
            ));
        }
        (Some(secret), false) => {
            webhook::parse_secret(secret).map_err(|e| {
                ApiError::BadRequest(e.to_string().replace("callback_secret", "secret"))
            })?;
            Some(secret.clone())
        }
        (None, _) => None,
    };

    let mut tx = state.db.begin().await?;
    existing_team(&mut tx, &team_id).await?;
    let current = db::team_alerts::find_for_update(&mut tx, &team_id).await?;
    let before = current
        .as_ref()
        .map(|row| serde_json::to_value(AlertsView::new(Some(row), false)))
        .transpose()
        .map_err(anyhow::Error::from)?;
    // A secret is set by this request when given, rotated, or needed for the first alerts.
    let new_secret = given_secret.or_else(|| {
        (body.rotate_secret || (on && current.is_none())).then(webhook::generate_secret)
    });
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
            .map_err(|e| unknown_team(e, &team_id))?,
        ),
    };
    let refills = db::refills::find(&mut *tx, &team_id).await?;
    let mut after = row
        .as_ref()
        .map(|row| serde_json::to_value(AlertsView::new(Some(row), false)))
        .transpose()
        .map_err(anyhow::Error::from)?;
    // The secret itself never enters the audit log, but that it was set or rotated does.
    if let (Some(Value::Object(view)), true) = (after.as_mut(), new_secret.is_some()) {
        view.insert("secret_set".into(), Value::Bool(true));
    }
    let changed = before != after;
    admin
        .record(
            &mut tx,
            "team.set_alerts",
            ("team", &team_id),
            before,
            after,
        )
        .await?;
    tx.commit().await?;
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

/// The body of `PUT /api/teams/{team_id}/refills`; a field left out is the same as null (off).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefillsBody {
    /// `{"credits": 1..=1000000, "period": "1d" | "7d" | "30d" | "1mo"}`: credits added at every
    /// period boundary (ledger rows of type `refill`); null for none.
    #[schema(value_type = Option<Object>, example = json!({"credits": 100, "period": "1mo"}))]
    credit_grant: Option<Value>,
    /// `1d`, `7d`, `30d` or `1mo`: the team's /v1 spend goes back to 0 every period; null for a
    /// budget that never resets.
    #[schema(example = "30d")]
    budget_duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditGrantBody {
    #[serde(deserialize_with = "crate::extract::whole_number::required")]
    credits: i64,
    period: String,
}

fn period(field: &str, text: &str) -> Result<Period, ApiError> {
    Period::parse(text).map_err(|e| {
        let shown: String = text.chars().take(40).collect();
        ApiError::BadRequest(format!("{field} {e} (got '{shown}')"))
    })
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
    let grant = match body.credit_grant {
        None | Some(Value::Null) => None,
        Some(value) => {
            let grant: CreditGrantBody = object_body("credit_grant", value)?;
            if !(1..=MAX_GRANT_CREDITS).contains(&grant.credits) {
                return Err(ApiError::BadRequest(format!(
                    "credit_grant.credits must be between 1 and {MAX_GRANT_CREDITS}"
                )));
            }
            Some((grant.credits, period("credit_grant.period", &grant.period)?))
        }
    };
    let budget = body
        .budget_duration
        .as_deref()
        .map(|text| period("budget_duration", text))
        .transpose()?;

    let mut tx = state.db.begin().await?;
    existing_team(&mut tx, &team_id).await?;
    let current = db::refills::find_for_update(&mut tx, &team_id).await?;
    let before = current
        .as_ref()
        .map(|row| serde_json::to_value(RefillsView::new(Some(row))))
        .transpose()
        .map_err(anyhow::Error::from)?;
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
                .map_err(|e| unknown_team(e, &team_id))?,
        ),
    };
    let alerts = db::team_alerts::find(&mut *tx, &team_id).await?;
    let after = row
        .as_ref()
        .map(|row| serde_json::to_value(RefillsView::new(Some(row))))
        .transpose()
        .map_err(anyhow::Error::from)?;
    let changed = before != after;
    admin
        .record(
            &mut tx,
            "team.set_refills",
            ("team", &team_id),
            before,
            after,
        )
        .await?;
    tx.commit().await?;
    tracing::info!(changed, "team refills set");
    Ok(JsonResponse(TeamSettingsResponse {
        alerts: AlertsView::new(alerts.as_ref(), false),
        refills: RefillsView::new(row.as_ref()),
        signing_secret: None,
        team_id,
    }))
}
