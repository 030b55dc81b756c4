//! Admin keys: hashes only, looked up on every admin request (no cache, so a revocation holds
//! everywhere from its commit on).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::admin::AdminRole;
use crate::domain::keys::NewVirtualKey;

/// A stored admin key, without its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminKeyRow {
    pub admin_key_id: Uuid,
    pub name: String,
    pub role: AdminRole,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "admin_key_id, name, role, key_prefix, created_at, created_by, revoked_at";

/// Stores a new key; a name in use by a key in force violates `admin_keys_active_name_key`.
pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    role: AdminRole,
    key: &NewVirtualKey,
    created_by: &str,
) -> sqlx::Result<AdminKeyRow> {
    sqlx::query_as(&format!(
        "insert into admin_keys (admin_key_id, name, role, key_hash, key_prefix, created_by)
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(role)
    .bind(&key.hash)
    .bind(&key.display_prefix)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

/// The key in force with this hash.
pub async fn find_active(
    db: impl PgExecutor<'_>,
    key_hash: &[u8],
) -> sqlx::Result<Option<AdminKeyRow>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from admin_keys where key_hash = $1 and revoked_at is null"
    ))
    .bind(key_hash)
    .fetch_optional(db)
    .await
}

/// Every key, revoked ones included, oldest first.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<AdminKeyRow>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from admin_keys order by created_at, admin_key_id"
    ))
    .fetch_all(db)
    .await
}

/// The key, locked for the rest of the transaction.
pub async fn lock(
    conn: &mut PgConnection,
    admin_key_id: Uuid,
) -> sqlx::Result<Option<AdminKeyRow>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from admin_keys where admin_key_id = $1 for update"
    ))
    .bind(admin_key_id)
    .fetch_optional(conn)
    .await
}

/// Revokes the key if it is in force; `None` when it is not (unknown or already revoked).
pub async fn revoke(
    conn: &mut PgConnection,
    admin_key_id: Uuid,
) -> sqlx::Result<Option<AdminKeyRow>> {
    sqlx::query_as(&format!(
        "update admin_keys set revoked_at = now() where admin_key_id = $1 and revoked_at is null
         returning {COLUMNS}"
    ))
    .bind(admin_key_id)
    .fetch_optional(conn)
    .await
}
