//! Admin keys: hashes only, looked up on every admin request (no cache, so a revocation holds
//! everywhere from its commit on).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::admin::AdminRole;
use crate::domain::keys::NewVirtualKey;

/// A stored admin key, without its hash.
#[derive(Debug, Clone)]
pub struct AdminKeyRow {
    pub admin_key_id: Uuid,
    pub name: String,
    pub role: AdminRole,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `sqlx::query_as!` into [`AdminKeyRow`], with the key's column list between `$head` and
/// `$tail` (sqlx's macros take only literals, so the list cannot be a constant).
macro_rules! query_admin_key {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            AdminKeyRow,
            $head
                + r#"admin_key_id, name, role as "role: AdminRole", key_prefix, created_at,
                     created_by, revoked_at"#
                + $tail
            $(, $arg)*
        )
    };
}

/// Stores a new key; a name in use by a key in force violates `admin_keys_active_name_key`.
pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    role: AdminRole,
    key: &NewVirtualKey,
    created_by: &str,
) -> sqlx::Result<AdminKeyRow> {
    query_admin_key!(
        "insert into admin_keys (admin_key_id, name, role, key_hash, key_prefix, created_by)
         values ($1, $2, $3, $4, $5, $6) returning ",
        "",
        Uuid::now_v7(),
        name,
        role as AdminRole,
        &key.hash,
        &key.display_prefix,
        created_by
    )
    .fetch_one(conn)
    .await
}

/// The key in force with this hash.
pub async fn find_active(
    db: impl PgExecutor<'_>,
    key_hash: &[u8],
) -> sqlx::Result<Option<AdminKeyRow>> {
    query_admin_key!(
        "select ",
        " from admin_keys where key_hash = $1 and revoked_at is null",
        key_hash
    )
    .fetch_optional(db)
    .await
}

/// Every key, revoked ones included, oldest first.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<AdminKeyRow>> {
    query_admin_key!(
        "select ",
        " from admin_keys order by created_at, admin_key_id"
    )
    .fetch_all(db)
    .await
}

/// The key, locked for the rest of the transaction.
pub async fn lock(
    conn: &mut PgConnection,
    admin_key_id: Uuid,
) -> sqlx::Result<Option<AdminKeyRow>> {
    query_admin_key!(
        "select ",
        " from admin_keys where admin_key_id = $1 for update",
        admin_key_id
    )
    .fetch_optional(conn)
    .await
}

/// Revokes the key if it is in force; `None` when it is not (unknown or already revoked).
pub async fn revoke(
    conn: &mut PgConnection,
    admin_key_id: Uuid,
) -> sqlx::Result<Option<AdminKeyRow>> {
    query_admin_key!(
        "update admin_keys set revoked_at = now() where admin_key_id = $1 and revoked_at is null
         returning ",
        "",
        admin_key_id
    )
    .fetch_optional(conn)
    .await
}
