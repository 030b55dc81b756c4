//! Admin keys (owner): create a named key with a role (the key is shown once), list, revoke. A
//! revoked key is refused from the revocation's commit on, by every API process.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Json as JsonResponse;
use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::admin_keys::AdminKeyRow;
use saasllm_shared::domain::admin::{self, AdminRole};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audited::{commit_created, commit_recorded, conflict_on};
use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::extract::{Path, RawBody, parse_json_object};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(revoke))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAdminKey {
    /// Unique among the keys in force (whatever the case); `bootstrap` is reserved.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.-]+$")]
    name: String,
    role: AdminRole,
}

/// An admin key as listed: never the key itself.
#[derive(Serialize, ToSchema)]
struct AdminKeyView {
    admin_key_id: Uuid,
    name: String,
    role: AdminRole,
    /// The key's first characters, to recognise it.
    key_prefix: String,
    created_at: DateTime<Utc>,
    /// The admin key id that created it, or `bootstrap`.
    created_by: String,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<AdminKeyRow> for AdminKeyView {
    fn from(row: AdminKeyRow) -> Self {
        Self {
            admin_key_id: row.admin_key_id,
            name: row.name,
            role: row.role,
            key_prefix: row.key_prefix,
            created_at: row.created_at,
            created_by: row.created_by,
            revoked_at: row.revoked_at,
        }
    }
}

impl AdminKeyView {
    /// What the audit log keeps of a key: everything listed (no secret is).
    fn snapshot(&self) -> serde_json::Value {
        json!(self)
    }
}

#[derive(Serialize, ToSchema)]
struct CreatedAdminKey {
    #[serde(flatten)]
    key: AdminKeyView,
    /// The key, shown only this once: send it as `X-Admin-Key` or a bearer token. Absent from
    /// an `Idempotency-Key` replay of the request, which never carries the key.
    #[schema(required = false)]
    admin_key: String,
    message: &'static str,
}

/// Creates an admin key with a role (owner). The answer holds the key, shown only this once; an
/// idempotent replay of the request does not.
#[utoipa::path(
    post,
    path = "/api/admin-keys/create",
    tag = "admin",
    params(crate::openapi::IdempotencyHeader),
    request_body(content = CreateAdminKey, example = json!({"name": "billing-bot", "role": "billing"})),
    responses(
        (status = 201, description = "Created; `admin_key` is shown only this once", body = CreatedAdminKey),
        (status = 409, description = "A key in force has this name", body = crate::openapi::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with a different body", body = crate::openapi::ErrorBody),
    ),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn create(
    admin_auth: AdminAuth,
    State(state): State<AppState>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, JsonResponse<CreatedAdminKey>), ApiError> {
    let body: CreateAdminKey = parse_json_object(&body)?;
    admin::check_name(&body.name).map_err(ApiError::BadRequest)?;
    let key = admin::generate();
    let mut tx = state.db.begin().await?;
    let row = db::admin_keys::insert(
        &mut tx,
        &body.name,
        body.role,
        &key,
        &admin_auth.admin.actor_id(),
    )
    .await
    .map_err(conflict_on("admin_keys_active_name_key", || {
        format!(
            "An admin key named '{}' is in force; revoke it first or choose another name",
            body.name
        )
    }))?;
    let view = AdminKeyView::from(row);
    let target_id = view.admin_key_id.to_string();
    let target = ("admin_key", target_id.as_str());
    commit_created(
        &admin_auth,
        tx,
        "admin_key.create",
        target,
        &view.snapshot(),
    )
    .await?;
    tracing::info!(key_prefix = %view.key_prefix, name = %view.name, role = %view.role, "admin key created");
    Ok((
        StatusCode::CREATED,
        JsonResponse(CreatedAdminKey {
            key: view,
            admin_key: key.plain,
            message: "Admin key created; it is shown only this once",
        }),
    ))
}

#[derive(Serialize, ToSchema)]
struct AdminKeyList {
    admin_keys: Vec<AdminKeyView>,
}

/// Every admin key, revoked ones included, oldest first (owner). The bootstrap `ADMIN_API_KEY`
/// is configured, not stored, and is not listed.
#[utoipa::path(
    get,
    path = "/api/admin-keys",
    tag = "admin",
    responses((status = 200, description = "The admin keys, without the keys themselves", body = AdminKeyList)),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn list(
    _admin: AdminAuth,
    State(state): State<AppState>,
) -> Result<JsonResponse<AdminKeyList>, ApiError> {
    let rows = db::admin_keys::list(&state.db).await?;
    Ok(JsonResponse(AdminKeyList {
        admin_keys: rows.into_iter().map(AdminKeyView::from).collect(),
    }))
}

/// Revokes an admin key (owner): every API process refuses it from now on. Revoking a revoked
/// key changes nothing and answers the key as it is.
#[utoipa::path(
    post,
    path = "/api/admin-keys/{admin_key_id}/revoke",
    tag = "admin",
    params(("admin_key_id" = Uuid, Path)),
    responses((status = 200, description = "The key, revoked", body = AdminKeyView)),
    security(("admin_key" = []), ("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(admin_key_id = %admin_key_id))]
async fn revoke(
    admin_auth: AdminAuth,
    State(state): State<AppState>,
    Path(admin_key_id): Path<Uuid>,
) -> Result<JsonResponse<AdminKeyView>, ApiError> {
    let mut tx = state.db.begin().await?;
    let before = db::admin_keys::lock(&mut tx, admin_key_id)
        .await?
        .map(AdminKeyView::from)
        .ok_or_else(|| ApiError::NotFound(format!("Admin key '{admin_key_id}' not found")))?;
    if before.revoked_at.is_some() {
        return Ok(JsonResponse(before));
    }
    let after = db::admin_keys::revoke(&mut tx, admin_key_id)
        .await?
        .map(AdminKeyView::from)
        .ok_or_else(|| anyhow::anyhow!("a locked key in force could not be revoked"))?;
    commit_recorded(
        &admin_auth,
        tx,
        "admin_key.revoke",
        ("admin_key", &admin_key_id.to_string()),
        Some(before.snapshot()),
        Some(after.snapshot()),
    )
    .await?;
    tracing::info!(key_prefix = %after.key_prefix, name = %after.name, "admin key revoked");
    Ok(JsonResponse(after))
}
