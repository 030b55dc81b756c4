//! A team's lifecycle (admin): suspend, resume, rotate its virtual key. Each change is audited;
//! asking for the status a team already has changes nothing.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use saasllm_shared::db;
use saasllm_shared::domain::keys;
use saasllm_shared::domain::status::TeamStatus;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audited::commit_recorded;
use crate::auth::{AdminAuth, team_not_found};
use crate::error::ApiError;
use crate::extract::Path;
use crate::lookup;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(suspend))
        .routes(routes!(resume))
        .routes(routes!(rotate_key))
}

/// Sets the team's status; setting the status it has changes nothing (and is not audited).
async fn set_status(
    admin: &AdminAuth,
    state: &AppState,
    team_id: &str,
    status: TeamStatus,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let (verb, action) = match status {
        TeamStatus::Active => ("resumed", "team.resume"),
        TeamStatus::Suspended => ("suspended", "team.suspend"),
    };
    let mut tx = state.db.begin().await?;
    lookup::lock_team(&mut tx, team_id).await?;
    let mut team = lookup::team(&mut *tx, team_id).await?;
    if team.status != status {
        let before = json!({"status": team.status});
        team = db::teams::set_status(&mut *tx, team_id, status)
            .await?
            .ok_or_else(|| team_not_found(team_id))?;
        admin
            .record(
                &mut tx,
                action,
                ("team", team_id),
                Some(before),
                Some(json!({"status": team.status})),
            )
            .await?;
        tracing::info!(team_id, ?status, "team status changed");
    }
    tx.commit().await?;
    Ok(JsonResponse(json!({
        "team_id": team.team_id,
        "status": team.status,
        "message": format!("Team '{}' {verb}", team.team_id),
    })))
}

/// Suspends the team: its key is refused until resumed (admin).
#[utoipa::path(
    post,
    path = "/api/teams/{team_id}/suspend",
    tag = "teams",
    params(("team_id" = String, Path)),
    responses((status = 200, description = "Suspended", body = serde_json::Value,
        example = json!({"team_id": "team_engineering", "status": "suspended", "message": "Team 'team_engineering' suspended"}))),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn suspend(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    set_status(&admin, &state, &team_id, TeamStatus::Suspended).await
}

/// Resumes a suspended team (admin).
#[utoipa::path(
    post,
    path = "/api/teams/{team_id}/resume",
    tag = "teams",
    params(("team_id" = String, Path)),
    responses((status = 200, description = "Active again", body = serde_json::Value,
        example = json!({"team_id": "team_engineering", "status": "active", "message": "Team 'team_engineering' resumed"}))),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn resume(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    set_status(&admin, &state, &team_id, TeamStatus::Active).await
}

/// Issues a new virtual key; the previous one stops working at once (admin).
#[utoipa::path(
    post,
    path = "/api/teams/{team_id}/rotate-key",
    tag = "teams",
    params(("team_id" = String, Path)),
    responses((status = 200, description = "The new key, shown only this once", body = serde_json::Value,
        example = json!({"team_id": "team_engineering", "virtual_key": "sk-...", "key_prefix": "sk-1a2b3c4", "message": "Virtual key rotated; the previous key no longer works"}))),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(team_id = %team_id))]
async fn rotate_key(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
) -> Result<JsonResponse<serde_json::Value>, ApiError> {
    let mut tx = state.db.begin().await?;
    lookup::lock_team(&mut tx, &team_id).await?;
    let before = db::keys::active_prefix(&mut *tx, &team_id).await?;
    db::keys::revoke_active(&mut tx, &team_id).await?;
    let key = keys::generate();
    db::keys::insert(&mut tx, &team_id, &key).await?;
    commit_recorded(
        &admin,
        tx,
        "team.rotate_key",
        ("team", &team_id),
        Some(json!({"key_prefix": before})),
        // Names the revoked key too: a new key's prefix may, rarely, equal the old one's.
        Some(json!({"key_prefix": key.display_prefix, "revoked_key_prefix": before})),
    )
    .await?;
    tracing::info!(key_prefix = %key.display_prefix, "virtual key rotated");
    Ok(JsonResponse(json!({
        "team_id": team_id,
        "virtual_key": key.plain,
        "key_prefix": key.display_prefix,
        "message": "Virtual key rotated; the previous key no longer works",
    })))
}
