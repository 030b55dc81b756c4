//! The audit log of admin changes: appended in the transaction of the change it describes, read
//! newest first in keyset pages. The table refuses UPDATE, DELETE and TRUNCATE (a trigger), and
//! no function here changes a row.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

/// Who made a change: an admin key id (or `bootstrap`), with its name and role at the time.
#[derive(Debug, Clone)]
pub struct Actor<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub role: &'a str,
}

/// A row to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub actor: Actor<'a>,
    /// `<object>.<verb>`, e.g. `team.suspend`.
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: &'a str,
    pub before: Option<&'a serde_json::Value>,
    pub after: Option<&'a serde_json::Value>,
    pub request_id: Option<&'a str>,
}

/// A stored row.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub audit_id: i64,
    pub created_at: DateTime<Utc>,
    pub actor_id: String,
    pub actor_name: String,
    pub actor_role: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
}

/// Appends `entry` in the caller's transaction.
pub async fn insert(conn: &mut PgConnection, entry: &NewEntry<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "insert into audit_log
             (actor_id, actor_name, actor_role, action, target_type, target_id, before, after, request_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning audit_id",
        entry.actor.id,
        entry.actor.name,
        entry.actor.role,
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.before,
        entry.after,
        entry.request_id
    )
    .fetch_one(conn)
    .await
}

/// What a page of the log is narrowed to; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Rows at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Rows before this time.
    pub until: Option<DateTime<Utc>>,
    /// Rows older than the last row of the previous page.
    pub before: Option<Cursor>,
}

/// Rows matching `filter`, newest first, `limit` of them.
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as!(
        AuditRow,
        "select audit_id, created_at, actor_id, actor_name, actor_role, action, target_type,
                target_id, before, after, request_id
         from audit_log
         where ($1::text is null or actor_id = $1) and ($2::text is null or action = $2)
           and ($3::text is null or target_type = $3) and ($4::text is null or target_id = $4)
           and ($5::timestamptz is null or created_at >= $5)
           and ($6::timestamptz is null or created_at < $6)
           and ($7::int8 is null or audit_id < $7)
         order by audit_id desc limit $8",
        filter.actor_id.as_deref(),
        filter.action.as_deref(),
        filter.target_type.as_deref(),
        filter.target_id.as_deref(),
        filter.since,
        filter.until,
        filter.before.map(|c| c.0),
        limit
    )
    .fetch_all(db)
    .await
}

/// A position in the log (the last row of a page), opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(i64);

/// Marks a cursor's text, so that another list's cursor is not taken for one of the log's.
const CURSOR_TAG: &str = "audit:";

impl Cursor {
    /// The position just after `row` in newest-first order.
    pub fn after(row: &AuditRow) -> Self {
        Self(row.audit_id)
    }

    /// The text clients send back.
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_TAG}{}", self.0))
    }

    /// Reads a cursor made by `encode`; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let id: i64 = text.strip_prefix(CURSOR_TAG)?.parse().ok()?;
        (id > 0).then_some(Self(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_refuse_anything_else() {
        let cursor = Cursor(42);
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        for bad in ["", "42", "not base64!", &URL_SAFE_NO_PAD.encode("jobs:42")] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("audit:-1")), None);
    }
}
