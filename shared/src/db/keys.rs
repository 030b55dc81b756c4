//! Virtual keys: hashes only, one active key per team.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::keys::NewVirtualKey;
use crate::domain::limits::TeamLimits;
use crate::domain::status::TeamStatus;

/// Who a presented key belongs to.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub team_id: String,
    pub organization_id: String,
    pub status: TeamStatus,
    pub limits: TeamLimits,
}

/// Stores a new key for the team.
pub async fn insert(
    conn: &mut PgConnection,
    team_id: &str,
    key: &NewVirtualKey,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into virtual_keys (key_id, team_id, key_hash, key_prefix) values ($1, $2, $3, $4)",
        Uuid::now_v7(),
        team_id,
        &key.hash,
        &key.display_prefix
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes the team's active key, if any.
pub async fn revoke_active(conn: &mut PgConnection, team_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "update virtual_keys set revoked_at = now() where team_id = $1 and revoked_at is null",
        team_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The owner of an active key with this hash.
pub async fn find_owner(
    db: impl PgExecutor<'_>,
    key_hash: &[u8],
) -> sqlx::Result<Option<KeyOwner>> {
    let owner = sqlx::query!(
        r#"select t.team_id, t.organization_id, t.status as "status: TeamStatus",
                t.max_concurrent_calls, t.requests_per_minute, t.tokens_per_minute
         from virtual_keys k join teams t using (team_id)
         where k.key_hash = $1 and k.revoked_at is null"#,
        key_hash
    )
    .fetch_optional(db)
    .await?;
    Ok(owner.map(|r| KeyOwner {
        team_id: r.team_id,
        organization_id: r.organization_id,
        status: r.status,
        limits: TeamLimits {
            max_concurrent_calls: r.max_concurrent_calls,
            requests_per_minute: r.requests_per_minute,
            tokens_per_minute: r.tokens_per_minute,
        },
    }))
}

/// The display prefix of the team's active key.
pub async fn active_prefix(db: impl PgExecutor<'_>, team_id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "select key_prefix from virtual_keys where team_id = $1 and revoked_at is null",
        team_id
    )
    .fetch_optional(db)
    .await
}
