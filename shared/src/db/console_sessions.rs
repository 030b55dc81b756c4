//! Web console sessions: the hash of a session's cookie token, the hash of the key it was
//! opened with, its CSRF token and its expiry.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// The signed-in key's hash and the CSRF token of an unexpired session.
pub async fn find(
    db: impl PgExecutor<'_>,
    session_hash: &[u8],
) -> sqlx::Result<Option<(Vec<u8>, String)>> {
    let session = sqlx::query!(
        "select key_hash, csrf_token from console_sessions where session_hash = $1 and expires_at > now()",
        session_hash
    )
    .fetch_optional(db)
    .await?;
    Ok(session.map(|r| (r.key_hash, r.csrf_token)))
}

/// Stores a new session.
pub async fn insert(
    db: impl PgExecutor<'_>,
    session_hash: &[u8],
    key_hash: &[u8],
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into console_sessions (session_hash, key_hash, csrf_token, expires_at) values ($1, $2, $3, $4)",
        session_hash,
        key_hash,
        csrf_token,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Ends a session.
pub async fn delete(db: impl PgExecutor<'_>, session_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query!(
        "delete from console_sessions where session_hash = $1",
        session_hash
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets sessions past their expiry.
pub async fn delete_expired(db: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query!("delete from console_sessions where expires_at < now()")
        .execute(db)
        .await?;
    Ok(())
}
