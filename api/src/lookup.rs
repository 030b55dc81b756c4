//! Finding the organizations, teams, balances and model groups a request names, with the 404
//! the API answers when one does not exist.

use saasllm_shared::db;
use saasllm_shared::db::credits::BalanceRow;
use saasllm_shared::db::model_groups::ModelGroupRow;
use saasllm_shared::db::organizations::OrganizationRow;
use saasllm_shared::db::teams::TeamRow;
use sqlx::{PgConnection, PgExecutor};

use crate::auth::{Caller, team_not_found};
use crate::error::ApiError;

pub fn organization_not_found(organization_id: &str) -> ApiError {
    ApiError::NotFound(format!("Organization '{organization_id}' not found"))
}

pub fn group_not_found(group_name: &str) -> ApiError {
    ApiError::NotFound(format!("Model group '{group_name}' not found"))
}

/// The organization, or its 404.
pub async fn organization(
    db: impl PgExecutor<'_>,
    organization_id: &str,
) -> Result<OrganizationRow, ApiError> {
    db::organizations::find(db, organization_id)
        .await?
        .ok_or_else(|| organization_not_found(organization_id))
}

/// The team, or its 404.
pub async fn team(db: impl PgExecutor<'_>, team_id: &str) -> Result<TeamRow, ApiError> {
    db::teams::find(db, team_id)
        .await?
        .ok_or_else(|| team_not_found(team_id))
}

/// Locks the team's row for the rest of the transaction, or answers its 404.
pub async fn lock_team(conn: &mut PgConnection, team_id: &str) -> Result<(), ApiError> {
    match db::teams::lock(conn, team_id).await? {
        true => Ok(()),
        false => Err(team_not_found(team_id)),
    }
}

/// The team's credit balance, or the team's 404.
pub async fn balance(db: impl PgExecutor<'_>, team_id: &str) -> Result<BalanceRow, ApiError> {
    db::credits::find_balance(db, team_id)
        .await?
        .ok_or_else(|| team_not_found(team_id))
}

/// A write that names the team found it gone (deleted between the check and the write).
pub fn team_gone(error: sqlx::Error, team_id: &str) -> ApiError {
    ApiError::from_db(error, |constraint| {
        constraint
            .ends_with("_team_fkey")
            .then(|| team_not_found(team_id))
    })
}

/// The model group with this name, or its 404.
pub async fn model_group(
    db: impl PgExecutor<'_>,
    group_name: &str,
) -> Result<ModelGroupRow, ApiError> {
    db::model_groups::find_by_name(db, group_name)
        .await?
        .ok_or_else(|| group_not_found(group_name))
}

/// The model group with this name, locked for the rest of the transaction, or its 404.
pub async fn lock_model_group(
    conn: &mut PgConnection,
    group_name: &str,
) -> Result<ModelGroupRow, ApiError> {
    db::model_groups::lock_by_name(conn, group_name)
        .await?
        .ok_or_else(|| group_not_found(group_name))
}

/// The group with this name if the caller may see it (admin: any; a team: the groups granted
/// to it); a group the team was not granted is a 404 like a missing one.
pub async fn visible_model_group(
    db: &sqlx::PgPool,
    caller: &Caller,
    group_name: &str,
) -> Result<ModelGroupRow, ApiError> {
    let group = model_group(db, group_name).await?;
    if let Some(team_id) = caller.team_id()
        && !db::model_groups::team_has_access(db, team_id, group.model_group_id).await?
    {
        return Err(group_not_found(group_name));
    }
    Ok(group)
}
