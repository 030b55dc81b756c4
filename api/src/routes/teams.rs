//! Teams: create (with a virtual key shown once), get, grant model groups, set limits. Suspend,
//! resume and key rotation are in `team_lifecycle`.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::credits::{BalanceRow, TransactionType};
use saasllm_shared::domain::keys;
use saasllm_shared::domain::limits::TeamLimits;
use saasllm_shared::domain::status::TeamStatus;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{AdminAuth, Caller, team_not_found};
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::routes::team_settings::{self, AlertsView, RefillsView};
use crate::state::AppState;
use crate::validate;

/// Largest credit amount accepted in one request.
pub const MAX_CREDITS_PER_REQUEST: i64 = 1_000_000_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show))
        .routes(routes!(assign_model_groups))
        .routes(routes!(set_limits))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTeam {
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    organization_id: String,
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    team_id: String,
    team_alias: Option<String>,
    /// Names of existing model groups.
    #[serde(default)]
    model_groups: Vec<String>,
    #[serde(default, deserialize_with = "crate::extract::whole_number::required")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    credits_allocated: i64,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

/// The credit counters as the guide nests them under `credits`, plus the hold figures.
#[derive(Serialize, ToSchema)]
pub struct CreditsView {
    pub credits_allocated: i64,
    pub credits_used: i64,
    pub credits_remaining: i64,
    pub credits_reserved: i64,
    pub credits_available: i64,
    pub credit_limit: Option<i64>,
    pub auto_refill: bool,
}

impl From<&BalanceRow> for CreditsView {
    fn from(b: &BalanceRow) -> Self {
        Self {
            credits_allocated: b.credits_allocated,
            credits_used: b.credits_used,
            credits_remaining: b.remaining(),
            credits_reserved: b.credits_reserved,
            credits_available: b.available(),
            credit_limit: b.credit_limit,
            auto_refill: b.auto_refill,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct CreatedTeam {
    team_id: String,
    organization_id: String,
    team_alias: Option<String>,
    status: TeamStatus,
    model_groups: Vec<String>,
    allowed_models: Vec<String>,
    credits_allocated: i64,
    credits_remaining: i64,
    virtual_key: String,
    key_prefix: String,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
    message: &'static str,
}

/// Deduplicates group names (first occurrence wins) and resolves them to ids in that order;
/// the first unknown name is a 404.
async fn resolve_group_names(
    conn: &mut PgConnection,
    names: Vec<String>,
) -> Result<(Vec<String>, Vec<Uuid>), ApiError> {
    let mut unique: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    let found = db::model_groups::find_ids_by_names(&mut *conn, &unique).await?;
    let mut ids = Vec::with_capacity(unique.len());
    for name in &unique {
        let id = found
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
            .ok_or_else(|| ApiError::NotFound(format!("Model group '{name}' not found")))?;
        ids.push(id);
    }
    Ok((unique, ids))
}

/// Creates a team with credits and model-group grants (admin). The answer holds the team's
/// virtual key, shown only this once.
#[utoipa::path(
    post,
    path = "/api/teams/create",
    tag = "teams",
    request_body = CreateTeam,
    responses(
        (status = 200, description = "Created", body = CreatedTeam),
        (status = 404, description = "The organization or a model group does not exist", body = crate::openapi::ErrorBody),
        (status = 409, description = "The team exists", body = crate::openapi::ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %body.team_id))]
async fn create(
    admin: AdminAuth,
    State(state): State<AppState>,
    Json(body): Json<CreateTeam>,
) -> Result<JsonResponse<CreatedTeam>, ApiError> {
    validate::identifier("team_id", &body.team_id)?;
    validate::identifier("organization_id", &body.organization_id)?;
    let metadata = validate::metadata(body.metadata)?;
    if !(0..=MAX_CREDITS_PER_REQUEST).contains(&body.credits_allocated) {
        return Err(ApiError::BadRequest(format!(
            "credits_allocated must be between 0 and {MAX_CREDITS_PER_REQUEST}"
        )));
    }
    let mut tx = state.db.begin().await?;
    if db::organizations::find(&mut *tx, &body.organization_id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "Organization '{}' not found",
            body.organization_id
        )));
    }
    let (group_names, group_ids) = resolve_group_names(&mut tx, body.model_groups).await?;
    let team = db::teams::insert(
        &mut tx,
        &body.team_id,
        &body.organization_id,
        body.team_alias.as_deref(),
        &metadata,
    )
    .await
    .map_err(|e| {
        ApiError::from_db(e, |constraint| match constraint {
            "teams_pkey" => Some(ApiError::Conflict(format!(
                "Team '{}' already exists",
                body.team_id
            ))),
            "teams_organization_fkey" => Some(ApiError::NotFound(format!(
                "Organization '{}' not found",
                body.organization_id
            ))),
            _ => None,
        })
    })?;
    db::teams::replace_model_groups(&mut tx, &team.team_id, &group_ids).await?;
    db::credits::create_balance(&mut tx, &team.team_id).await?;
    let mut credits_remaining = 0;
    if body.credits_allocated > 0 {
        let (balance, _) = db::credits::allocate(
            &mut tx,
            &team.team_id,
            body.credits_allocated,
            TransactionType::Allocation,
            Some("Initial allocation"),
            &json!({}),
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("balance row missing right after insert"))?;
        credits_remaining = balance.remaining();
    }
    let key = keys::generate();
    db::keys::insert(&mut tx, &team.team_id, &key).await?;
    let allowed_models = db::teams::allowed_models(&mut *tx, &team.team_id).await?;
    let snapshot = json!({
        "team_id": team.team_id,
        "organization_id": team.organization_id,
        "team_alias": team.team_alias,
        "status": team.status,
        "model_groups": group_names,
        "credits_allocated": body.credits_allocated,
        "key_prefix": key.display_prefix,
        "metadata": team.metadata,
    });
    admin
        .record(
            &mut tx,
            "team.create",
            ("team", &team.team_id),
            None,
            Some(snapshot),
        )
        .await?;
    tx.commit().await?;
    tracing::info!(key_prefix = %key.display_prefix, "team created");
    Ok(JsonResponse(CreatedTeam {
        team_id: team.team_id,
        organization_id: team.organization_id,
        team_alias: team.team_alias,
        status: team.status,
        model_groups: group_names,
        allowed_models,
        credits_allocated: body.credits_allocated,
        credits_remaining,
        virtual_key: key.plain,
        key_prefix: key.display_prefix,
        metadata: team.metadata,
        created_at: team.created_at,
        message: "Team created with a virtual key; the key is shown only in this response",
    }))
}

#[derive(Serialize, ToSchema)]
struct TeamResponse {
    team_id: String,
    organization_id: String,
    team_alias: Option<String>,
    status: TeamStatus,
    credits: CreditsView,
    model_groups: Vec<String>,
    allowed_models: Vec<String>,
    key_prefix: Option<String>,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Per-team limits (null: unlimited); set with `PUT /api/teams/{team_id}/limits`.
    limits: TeamLimits,
    /// Alert thresholds and their state; set with `PUT /api/teams/{team_id}/alerts`.
    alerts: AlertsView,
    /// Scheduled credit grant and budget period; set with `PUT /api/teams/{team_id}/refills`.
    refills: RefillsView,
}

/// A team with its credits, model groups and allowed models.
#[utoipa::path(
    get,
    path = "/api/teams/{team_id}",
    tag = "teams",
    params(("team_id" = String, Path)),
    responses((status = 200, description = "The team", body = TeamResponse)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
) -> Result<JsonResponse<TeamResponse>, ApiError> {
    caller.ensure_can_see_team(&team_id)?;
    state
        .budgets
        .written(std::time::Duration::from_secs(2))
        .await;
    let team = db::teams::find(&state.db, &team_id)
        .await?
        .ok_or_else(|| team_not_found(&team_id))?;
    let balance = db::credits::find_balance(&state.db, &team_id)
        .await?
        .ok_or_else(|| team_not_found(&team_id))?;
    let (model_groups, allowed_models, key_prefix) = tokio::try_join!(
        db::teams::model_group_names(&state.db, &team_id),
        db::teams::allowed_models(&state.db, &team_id),
        db::keys::active_prefix(&state.db, &team_id),
    )?;
    // A team key sees the alert URL's origin only: its path or query may hold a token.
    let (alerts, refills) =
        team_settings::views(&state.db, &team_id, caller.team_id().is_some()).await?;
    Ok(JsonResponse(TeamResponse {
        team_id: team.team_id,
        organization_id: team.organization_id,
        team_alias: team.team_alias,
        status: team.status,
        credits: CreditsView::from(&balance),
        model_groups,
        allowed_models,
        key_prefix,
        metadata: team.metadata,
        created_at: team.created_at,
        updated_at: team.updated_at,
        limits: team.limits,
        alerts,
        refills,
    }))
}

/// Sets the team's limits (admin): calls running at once, upstream requests per minute and tokens
/// per minute, each 1 to 1,000,000,000 or null for unlimited. Queued calls over a limit wait for
/// the dispatcher; synchronous requests over it get 429 with `Retry-After`.
#[utoipa::path(
    put,
    path = "/api/teams/{team_id}/limits",
    tag = "teams",
    params(("team_id" = String, Path)),
    request_body(content = LimitsBody, example = json!({"max_concurrent_calls": 8, "requests_per_minute": 600, "tokens_per_minute": null})),
    responses((status = 200, description = "The limits now in force", body = serde_json::Value,
        example = json!({"team_id": "team_engineering", "limits": {"max_concurrent_calls": 8, "requests_per_minute": 600, "tokens_per_minute": null}}))),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %team_id))]
async fn set_limits(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Json(body): Json<LimitsBody>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let check = |name: &str, value: Option<i64>| -> Result<Option<i32>, ApiError> {
        match value {
            None => Ok(None),
            Some(n) if (1..=1_000_000_000).contains(&n) => Ok(Some(n as i32)),
            Some(_) => Err(ApiError::BadRequest(format!(
                "{name} must be between 1 and 1000000000, or null for unlimited"
            ))),
        }
    };
    let limits = TeamLimits {
        max_concurrent_calls: check("max_concurrent_calls", body.max_concurrent_calls)?,
        requests_per_minute: check("requests_per_minute", body.requests_per_minute)?,
        tokens_per_minute: check("tokens_per_minute", body.tokens_per_minute)?,
    };
    let mut tx = state.db.begin().await?;
    if !db::teams::lock(&mut tx, &team_id).await? {
        return Err(team_not_found(&team_id));
    }
    let before = db::teams::limits(&mut *tx, &team_id)
        .await?
        .ok_or_else(|| team_not_found(&team_id))?;
    let limits = db::teams::set_limits(&mut *tx, &team_id, &limits)
        .await?
        .ok_or_else(|| team_not_found(&team_id))?;
    admin
        .record(
            &mut tx,
            "team.set_limits",
            ("team", &team_id),
            Some(json!(before)),
            Some(json!(limits)),
        )
        .await?;
    tx.commit().await?;
    // The dispatcher reads limits from Redis; the reconciler copies them there too, so a Redis
    // error here only delays the change by one reconciler interval.
    if let Err(e) = state.queue.set_limits(&[(team_id.clone(), limits)]).await {
        tracing::warn!(error = %e, "could not copy the new limits to Redis; the reconciler will");
    }
    Ok(JsonResponse(json!({"team_id": team_id, "limits": limits})))
}

/// The body of `PUT /api/teams/{team_id}/limits`; a field left out or null is unlimited.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_concurrent_calls: Option<i64>,
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    requests_per_minute: Option<i64>,
    #[serde(default, deserialize_with = "crate::extract::whole_number::optional")]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    tokens_per_minute: Option<i64>,
}

/// Replaces the team's model-group grants (admin).
#[utoipa::path(
    put,
    path = "/api/teams/{team_id}/model-groups",
    tag = "teams",
    params(("team_id" = String, Path)),
    request_body(content = Vec<String>, description = "Group names"),
    responses((status = 200, description = "The grants and the models they allow", body = serde_json::Value,
        example = json!({"team_id": "team_engineering", "model_groups": ["ChatAgent"], "allowed_models": ["gpt-3.5-turbo"], "message": "Model groups assigned successfully"}))),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %team_id))]
async fn assign_model_groups(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Json(names): Json<Vec<String>>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let mut tx = state.db.begin().await?;
    if !db::teams::lock(&mut tx, &team_id).await? {
        return Err(team_not_found(&team_id));
    }
    let before = db::teams::model_group_names(&mut *tx, &team_id).await?;
    let (group_names, group_ids) = resolve_group_names(&mut tx, names).await?;
    db::teams::replace_model_groups(&mut tx, &team_id, &group_ids).await?;
    let allowed_models = db::teams::allowed_models(&mut *tx, &team_id).await?;
    admin
        .record(
            &mut tx,
            "team.set_model_groups",
            ("team", &team_id),
            Some(json!({"model_groups": before})),
            Some(json!({"model_groups": group_names})),
        )
        .await?;
    tx.commit().await?;
    Ok(JsonResponse(json!({
        "team_id": team_id,
        "model_groups": group_names,
        "allowed_models": allowed_models,
        "message": "Model groups assigned successfully",
    })))
}
