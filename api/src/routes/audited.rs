//! What the admin handlers that change something share: an insert that finds the thing already
//! there is a 409, and each change is recorded in the audit log by the transaction that commits
//! it (so the log holds exactly the changes that happened).

use serde::Serialize;
use sqlx::{Postgres, Transaction};

use crate::auth::AdminAuth;
use crate::error::ApiError;

/// Maps an insert's error: a violated `unique` constraint means the thing exists (409 with
/// `message`); anything else as `ApiError::from_db` maps it.
pub(super) fn conflict_on(
    unique: &'static str,
    message: impl FnOnce() -> String,
) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |error| {
        ApiError::from_db(error, |constraint| {
            (constraint == unique).then(|| ApiError::Conflict(message()))
        })
    }
}

/// Records the change of `target` from `before` to `after` (`None`: absent), then commits.
pub(super) async fn commit_recorded(
    admin: &AdminAuth,
    mut tx: Transaction<'_, Postgres>,
    action: &str,
    target: (&str, &str),
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    admin.record(&mut tx, action, target, before, after).await?;
    tx.commit().await?;
    Ok(())
}

/// Records the creation of `target`, `snapshot` being what now exists, then commits.
pub(super) async fn commit_created(
    admin: &AdminAuth,
    tx: Transaction<'_, Postgres>,
    action: &str,
    target: (&str, &str),
    snapshot: &impl Serialize,
) -> Result<(), ApiError> {
    let snapshot = serde_json::json!(snapshot);
    commit_recorded(admin, tx, action, target, None, Some(snapshot)).await
}
