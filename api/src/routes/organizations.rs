//! Organizations (admin): create, get, list teams.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::organizations::OrganizationRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audited::{commit_created, conflict_on};
use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::lookup;
use crate::state::AppState;
use crate::validate;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show))
        .routes(routes!(teams))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateOrganization {
    #[schema(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    organization_id: String,
    /// Not blank.
    #[schema(pattern = "\\S")]
    name: String,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
struct OrganizationResponse {
    organization_id: String,
    name: String,
    status: String,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<OrganizationRow> for OrganizationResponse {
    fn from(row: OrganizationRow) -> Self {
        Self {
            organization_id: row.organization_id,
            name: row.name,
            status: row.status.as_str().to_owned(),
            metadata: row.metadata,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Creates an organization (admin).
#[utoipa::path(
    post,
    path = "/api/organizations/create",
    tag = "organizations",
    request_body = CreateOrganization,
    responses(
        (status = 200, description = "Created", body = OrganizationResponse),
        (status = 409, description = "The organization exists", body = crate::openapi::ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(organization_id = %body.organization_id))]
async fn create(
    admin: AdminAuth,
    State(state): State<AppState>,
    Json(body): Json<CreateOrganization>,
) -> Result<JsonResponse<OrganizationResponse>, ApiError> {
    validate::identifier("organization_id", &body.organization_id)?;
    validate::non_blank("name", &body.name)?;
    let metadata = validate::metadata(body.metadata)?;
    let mut tx = state.db.begin().await?;
    let row =
        db::organizations::insert(&mut *tx, &body.organization_id, body.name.trim(), &metadata)
            .await
            .map_err(conflict_on("organizations_pkey", || {
                format!("Organization '{}' already exists", body.organization_id)
            }))?;
    let response = OrganizationResponse::from(row);
    let target = ("organization", response.organization_id.as_str());
    commit_created(&admin, tx, "organization.create", target, &response).await?;
    Ok(JsonResponse(response))
}

/// An organization (admin).
#[utoipa::path(
    get,
    path = "/api/organizations/{organization_id}",
    tag = "organizations",
    params(("organization_id" = String, Path)),
    responses((status = 200, description = "The organization", body = OrganizationResponse)),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn show(
    _admin: AdminAuth,
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
) -> Result<JsonResponse<OrganizationResponse>, ApiError> {
    let row = lookup::organization(&state.db, &organization_id).await?;
    Ok(JsonResponse(row.into()))
}

#[derive(Serialize, ToSchema)]
struct OrganizationTeams {
    organization_id: String,
    team_count: usize,
    teams: Vec<OrganizationTeam>,
}

#[derive(Serialize, ToSchema)]
struct OrganizationTeam {
    team_id: String,
    team_alias: Option<String>,
    status: saasllm_shared::domain::status::TeamStatus,
    model_groups: Vec<String>,
    credits_allocated: i64,
    credits_remaining: i64,
    created_at: DateTime<Utc>,
}

/// An organization's teams with their balances and model groups (admin).
#[utoipa::path(
    get,
    path = "/api/organizations/{organization_id}/teams",
    tag = "organizations",
    params(("organization_id" = String, Path)),
    responses((status = 200, description = "The organization's teams", body = OrganizationTeams)),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn teams(
    _admin: AdminAuth,
    State(state): State<AppState>,
    Path(organization_id): Path<String>,
) -> Result<JsonResponse<OrganizationTeams>, ApiError> {
    lookup::organization(&state.db, &organization_id).await?;
    let rows = db::teams::list_by_organization(&state.db, &organization_id).await?;
    let mut teams = Vec::with_capacity(rows.len());
    for row in rows {
        let balance = db::credits::find_balance(&state.db, &row.team_id).await?;
        let model_groups = db::teams::model_group_names(&state.db, &row.team_id).await?;
        teams.push(OrganizationTeam {
            credits_allocated: balance.as_ref().map_or(0, |b| b.credits_allocated),
            credits_remaining: balance.as_ref().map_or(0, |b| b.remaining()),
            model_groups,
            team_id: row.team_id,
            team_alias: row.team_alias,
            status: row.status,
            created_at: row.created_at,
        });
    }
    Ok(JsonResponse(OrganizationTeams {
        organization_id,
        team_count: teams.len(),
        teams,
    }))
}
