//! Model groups: named, priority-ordered model lists with fallback. Admin manages them; a team key
//! sees only the groups granted to its team.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use saasllm_shared::db;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audited::{commit_created, commit_recorded, conflict_on};
use crate::auth::{AdminAuth, Caller};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::lookup::{self, group_not_found};
use crate::model_group_input::validate_models;
use crate::state::AppState;
use crate::validate;

mod bodies;

use bodies::{
    CreateModelGroup, GroupDeleted, GroupModels, ModelGroupResponse, ModelList, ReplaceModels,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(show, delete))
        .routes(routes!(models, replace_models))
        .routes(routes!(resolve))
}

/// Creates a model group (admin).
#[utoipa::path(
    post,
    path = "/api/model-groups/create",
    tag = "model-groups",
    request_body = CreateModelGroup,
    responses(
        (status = 200, description = "Created", body = ModelGroupResponse),
        (status = 409, description = "A group with this name exists", body = crate::openapi::ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(group_name = %body.group_name))]
async fn create(
    admin: AdminAuth,
    State(state): State<AppState>,
    Json(body): Json<CreateModelGroup>,
) -> Result<JsonResponse<ModelGroupResponse>, ApiError> {
    validate::identifier("group_name", &body.group_name)?;
    let metadata = validate::metadata(body.metadata)?;
    let models = validate_models(body.models)?;
    let display_name = body.display_name.unwrap_or_else(|| body.group_name.clone());
    let mut tx = state.db.begin().await?;
    let group = db::model_groups::insert(
        &mut tx,
        &body.group_name,
        Some(&display_name),
        body.description.as_deref(),
        &metadata,
    )
    .await
    .map_err(conflict_on("model_groups_group_name_key", || {
        format!("Model group '{}' already exists", body.group_name)
    }))?;
    let models = db::model_groups::replace_models(&mut tx, group.model_group_id, &models).await?;
    let response = ModelGroupResponse::new(group, models);
    let target = ("model_group", response.group_name.as_str());
    commit_created(&admin, tx, "model_group.create", target, &response).await?;
    Ok(JsonResponse(response))
}

/// Every model group (admin), or the groups granted to the key's team.
#[utoipa::path(
    get,
    path = "/api/model-groups",
    tag = "model-groups",
    responses((status = 200, description = "The visible groups", body = Vec<ModelGroupResponse>)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<JsonResponse<Vec<ModelGroupResponse>>, ApiError> {
    let groups = match caller.team_id() {
        None => db::model_groups::list_all(&state.db).await?,
        Some(team_id) => db::model_groups::list_for_team(&state.db, team_id).await?,
    };
    let ids: Vec<_> = groups.iter().map(|g| g.model_group_id).collect();
    let models = db::model_groups::models_of(&state.db, &ids).await?;
    Ok(JsonResponse(
        groups
            .into_iter()
            .map(|group| {
                let own = models
                    .iter()
                    .filter(|m| m.model_group_id == group.model_group_id)
                    .cloned()
                    .collect();
                ModelGroupResponse::new(group, own)
            })
            .collect(),
    ))
}

/// A model group (a team sees only the groups granted to it).
#[utoipa::path(
    get,
    path = "/api/model-groups/{group_name}",
    tag = "model-groups",
    params(("group_name" = String, Path)),
    responses((status = 200, description = "The group", body = ModelGroupResponse)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(group_name): Path<String>,
) -> Result<JsonResponse<ModelGroupResponse>, ApiError> {
    let group = lookup::visible_model_group(&state.db, &caller, &group_name).await?;
    let models = db::model_groups::models_of(&state.db, &[group.model_group_id]).await?;
    Ok(JsonResponse(ModelGroupResponse::new(group, models)))
}

/// A model group's models in priority order.
#[utoipa::path(
    get,
    path = "/api/model-groups/{group_name}/models",
    tag = "model-groups",
    params(("group_name" = String, Path)),
    responses((status = 200, description = "The models, first tried first", body = GroupModels)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn models(
    caller: Caller,
    State(state): State<AppState>,
    Path(group_name): Path<String>,
) -> Result<JsonResponse<GroupModels>, ApiError> {
    let group = lookup::visible_model_group(&state.db, &caller, &group_name).await?;
    let models = db::model_groups::models_of(&state.db, &[group.model_group_id]).await?;
    let response = ModelGroupResponse::new(group, models);
    Ok(JsonResponse(GroupModels {
        group_name: response.group_name,
        models: response.models,
    }))
}

/// Replaces a group's models (admin): clients keep using the group name.
#[utoipa::path(
    put,
    path = "/api/model-groups/{group_name}/models",
    tag = "model-groups",
    params(("group_name" = String, Path)),
    request_body(content = ReplaceModels, description = "The new list, bare or as `{\"models\": [...]}`"),
    responses((status = 200, description = "The updated group", body = ModelGroupResponse)),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(group_name = %group_name))]
async fn replace_models(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(group_name): Path<String>,
    Json(body): Json<ReplaceModels>,
) -> Result<JsonResponse<ModelGroupResponse>, ApiError> {
    let models = match body {
        ReplaceModels::List(ModelList(models)) | ReplaceModels::Object { models } => {
            validate_models(models)?
        }
    };
    let mut tx = state.db.begin().await?;
    let group = lookup::lock_model_group(&mut tx, &group_name).await?;
    let before = db::model_groups::models_of(&mut *tx, &[group.model_group_id]).await?;
    let before = ModelGroupResponse::new(group.clone(), before).models;
    let models = db::model_groups::replace_models(&mut tx, group.model_group_id, &models).await?;
    let group = lookup::model_group(&mut *tx, &group_name).await?;
    let response = ModelGroupResponse::new(group, models);
    commit_recorded(
        &admin,
        tx,
        "model_group.replace_models",
        ("model_group", &group_name),
        Some(serde_json::json!({"models": before})),
        Some(serde_json::json!({"models": response.models})),
    )
    .await?;
    Ok(JsonResponse(response))
}

/// Deletes a model group no team is granted (admin).
#[utoipa::path(
    delete,
    path = "/api/model-groups/{group_name}",
    tag = "model-groups",
    params(("group_name" = String, Path)),
    responses(
        (status = 200, description = "Deleted", body = GroupDeleted),
        (status = 409, description = "Teams are still granted the group", body = crate::openapi::ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(group_name = %group_name))]
async fn delete(
    admin: AdminAuth,
    State(state): State<AppState>,
    Path(group_name): Path<String>,
) -> Result<JsonResponse<GroupDeleted>, ApiError> {
    let mut tx = state.db.begin().await?;
    // Locked: a grant made now waits for this delete (and then finds no group).
    let group = lookup::lock_model_group(&mut tx, &group_name).await?;
    let in_use = |teams: Vec<String>| {
        ApiError::Conflict(format!(
            "Model group '{group_name}' is assigned to team(s) {}; remove it from them first",
            teams.join(", ")
        ))
    };
    let teams = db::model_groups::teams_using(&mut *tx, group.model_group_id).await?;
    if !teams.is_empty() {
        return Err(in_use(teams));
    }
    let models = db::model_groups::models_of(&mut *tx, &[group.model_group_id]).await?;
    let snapshot = serde_json::json!(ModelGroupResponse::new(group.clone(), models));
    match db::model_groups::delete(&mut *tx, group.model_group_id).await {
        Ok(true) => {}
        Ok(false) => return Err(group_not_found(&group_name)),
        // A grant committed between the check and the delete (the transaction is now aborted).
        Err(e) if db::is_constraint_violation(&e, "team_model_groups_group_fkey") => {
            drop(tx);
            let teams = db::model_groups::teams_using(&state.db, group.model_group_id).await?;
            return Err(in_use(teams));
        }
        Err(e) => return Err(e.into()),
    }
    commit_recorded(
        &admin,
        tx,
        "model_group.delete",
        ("model_group", &group_name),
        Some(snapshot),
        None,
    )
    .await?;
    Ok(JsonResponse(GroupDeleted {
        message: format!("Model group '{group_name}' deleted successfully"),
        group_name,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ResolveQuery {
    /// Required with the admin key; defaults to the key's own team.
    #[param(min_length = 1, max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    team_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ResolveResponse {
    group_name: String,
    primary_model: Option<String>,
    fallback_models: Vec<String>,
    team_has_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Which model the team should call for a group. A team without access gets
/// `team_has_access: false` and no model names.
#[utoipa::path(
    get,
    path = "/api/model-groups/{group_name}/resolve",
    tag = "model-groups",
    params(("group_name" = String, Path), ResolveQuery),
    responses((status = 200, description = "The primary and fallback models, if the team has access", body = ResolveResponse)),
    security(("bearer" = []), ("admin_key" = []))
)]
async fn resolve(
    caller: Caller,
    State(state): State<AppState>,
    Path(group_name): Path<String>,
    Query(query): Query<ResolveQuery>,
) -> Result<JsonResponse<ResolveResponse>, ApiError> {
    let team_id = match (query.team_id, caller.team_id()) {
        (Some(team_id), _) => team_id,
        (None, Some(own)) => own.to_owned(),
        (None, None) => {
            return Err(ApiError::BadRequest(
                "team_id query parameter is required".into(),
            ));
        }
    };
    caller.ensure_acts_for_team(&team_id)?;
    if matches!(caller, Caller::Admin(_)) {
        lookup::team(&state.db, &team_id).await?;
    }
    let group = lookup::model_group(&state.db, &group_name).await?;
    if !db::model_groups::team_has_access(&state.db, &team_id, group.model_group_id).await? {
        return Ok(JsonResponse(ResolveResponse {
            group_name,
            primary_model: None,
            fallback_models: Vec::new(),
            team_has_access: false,
            error: Some(format!(
                "Team '{team_id}' does not have access to model group '{}'",
                group.group_name
            )),
        }));
    }
    let mut models = db::model_groups::models_of(&state.db, &[group.model_group_id])
        .await?
        .into_iter()
        .map(|m| m.model_name);
    Ok(JsonResponse(ResolveResponse {
        group_name,
        primary_model: models.next(),
        fallback_models: models.collect(),
        team_has_access: true,
        error: None,
    }))
}
