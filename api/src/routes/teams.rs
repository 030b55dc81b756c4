//! Teams: create (with a virtual key shown once), get, grant model groups. Limits are in
//! `team_limits`; suspend, resume and key rotation in `team_lifecycle`.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::credits::TransactionType;
use saasllm_shared::db::teams::TeamRow;
use saasllm_shared::domain::keys;
use saasllm_shared::domain::limits::TeamLimits;
use saasllm_shared::domain::status::TeamStatus;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audited::{commit_created, commit_recorded};
use crate::auth::{AdminAuth, Caller};
use crate::credits_view::{BALANCE_WRITE_WAIT, CreditsView, MAX_CREDITS_PER_REQUEST};
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::lookup;
use crate::model_group_input::resolve_group_names;
use crate::routes::team_settings::{self, AlertsView, RefillsView};
use crate::state::AppState;
use crate::validate;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show))
        .routes(routes!(assign_model_groups))
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

/// Inserts the team; an existing team is a 409, a missing organization a 404.
async fn insert_team(
    conn: &mut PgConnection,
    team_id: &str,
    organization_id: &str,
    team_alias: Option<&str>,
    metadata: &serde_json::Value,
) -> Result<TeamRow, ApiError> {
    db::teams::insert(conn, team_id, organization_id, team_alias, metadata)
        .await
        .map_err(|e| {
            ApiError::from_db(e, |constraint| match constraint {
                "teams_pkey" => Some(ApiError::Conflict(format!(
                    "Team '{team_id}' already exists"
                ))),
                "teams_organization_fkey" => Some(lookup::organization_not_found(organization_id)),
                _ => None,
            })
        })
}

/// Allocates a new team's first credits, if any; the credits remaining afterwards.
async fn allocate_initial_credits(
    conn: &mut PgConnection,
    team_id: &str,
    credits: i64,
) -> Result<i64, ApiError> {
    if credits == 0 {
        return Ok(0);
    }
    let (balance, _) = db::credits::allocate(
        conn,
        team_id,
        credits,
        TransactionType::Allocation,
        Some("Initial allocation"),
        &json!({}),
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("balance row missing right after insert"))?;
    Ok(balance.remaining())
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
    lookup::organization(&mut *tx, &body.organization_id).await?;
    let (group_names, group_ids) = resolve_group_names(&mut tx, body.model_groups).await?;
    let team = insert_team(
        &mut tx,
        &body.team_id,
        &body.organization_id,
        body.team_alias.as_deref(),
        &metadata,
    )
    .await?;
    db::teams::replace_model_groups(&mut tx, &team.team_id, &group_ids).await?;
    db::credits::create_balance(&mut tx, &team.team_id).await?;
    let credits_remaining =
        allocate_initial_credits(&mut tx, &team.team_id, body.credits_allocated).await?;
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
    commit_created(
        &admin,
        tx,
        "team.create",
        ("team", &team.team_id),
        &snapshot,
    )
    .await?;
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
    state.budgets.written(BALANCE_WRITE_WAIT).await;
    let team = lookup::team(&state.db, &team_id).await?;
    let balance = lookup::balance(&state.db, &team_id).await?;
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
    lookup::lock_team(&mut tx, &team_id).await?;
    let before = db::teams::model_group_names(&mut *tx, &team_id).await?;
    let (group_names, group_ids) = resolve_group_names(&mut tx, names).await?;
    db::teams::replace_model_groups(&mut tx, &team_id, &group_ids).await?;
    let allowed_models = db::teams::allowed_models(&mut *tx, &team_id).await?;
    commit_recorded(
        &admin,
        tx,
        "team.set_model_groups",
        ("team", &team_id),
        Some(json!({"model_groups": before})),
        Some(json!({"model_groups": group_names})),
    )
    .await?;
    Ok(JsonResponse(json!({
        "team_id": team_id,
        "model_groups": group_names,
        "allowed_models": allowed_models,
        "message": "Model groups assigned successfully",
    })))
}
