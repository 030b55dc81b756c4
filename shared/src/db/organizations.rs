//! Organizations: the top of the tenancy tree.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::status::OrganizationStatus;

/// A stored organization.
#[derive(Debug, Clone)]
pub struct OrganizationRow {
    pub organization_id: String,
    pub name: String,
    pub status: OrganizationStatus,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Inserts an organization; a duplicate id violates `organizations_pkey`.
pub async fn insert(
    db: impl PgExecutor<'_>,
    organization_id: &str,
    name: &str,
    metadata: &serde_json::Value,
) -> sqlx::Result<OrganizationRow> {
    sqlx::query_as!(
        OrganizationRow,
        r#"insert into organizations (organization_id, name, metadata) values ($1, $2, $3)
         returning organization_id, name, status as "status: OrganizationStatus", metadata, created_at, updated_at"#,
        organization_id,
        name,
        metadata
    )
    .fetch_one(db)
    .await
}

/// One organization by id.
pub async fn find(
    db: impl PgExecutor<'_>,
    organization_id: &str,
) -> sqlx::Result<Option<OrganizationRow>> {
    sqlx::query_as!(
        OrganizationRow,
        r#"select organization_id, name, status as "status: OrganizationStatus", metadata, created_at, updated_at
         from organizations where organization_id = $1"#,
        organization_id
    )
    .fetch_optional(db)
    .await
}
