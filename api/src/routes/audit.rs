//! `GET /api/audit`: the audit log of admin changes, newest first, filtered and paged by cursor.
//! Rows are written by the changes themselves (`AdminAuth::record`); no route edits or deletes
//! one, and the database refuses to.

use axum::extract::State;
use axum::response::Json as JsonResponse;
use chrono::{DateTime, Utc};
use saasllm_shared::db;
use saasllm_shared::db::audit::{AuditRow, Cursor, Filter};
use saasllm_shared::domain::admin;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::extract::Query;
use crate::paging;
use crate::state::AppState;
use crate::validate::{self, CursorScope};

/// Longest `action` or `target_type` filter (the values written are far shorter).
const MAX_NAME_LEN: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// An admin key id, or `bootstrap`.
    actor: Option<String>,
    /// e.g. `team.suspend`.
    #[param(max_length = 64, pattern = "^[a-z_]+\\.[a-z_]+$")]
    action: Option<String>,
    /// e.g. `team`, `organization`, `model_group`, `admin_key`.
    #[param(max_length = 64, pattern = "^[a-z_]+$")]
    target_type: Option<String>,
    #[param(min_length = 1, max_length = 200)]
    target_id: Option<String>,
    /// RFC 3339; rows at or after it.
    since: Option<String>,
    /// RFC 3339; rows before it.
    until: Option<String>,
    /// 1..=500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct AuditEntry {
    audit_id: i64,
    created_at: DateTime<Utc>,
    actor: AuditActor,
    action: String,
    target_type: String,
    target_id: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    request_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct AuditActor {
    /// The admin key id, or `bootstrap`.
    id: String,
    name: String,
    role: String,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            audit_id: row.audit_id,
            created_at: row.created_at,
            actor: AuditActor {
                id: row.actor_id,
                name: row.actor_name,
                role: row.actor_role,
            },
            action: row.action,
            target_type: row.target_type,
            target_id: row.target_id,
            before: row.before,
            after: row.after,
            request_id: row.request_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<String>,
}

/// The audit log of admin changes, newest first (any admin key).
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "admin",
    params(AuditQuery),
    responses((status = 200, description = "A page of the audit log", body = AuditPage)),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn audit_log(
    _admin: AdminAuth,
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<JsonResponse<AuditPage>, ApiError> {
    let limit = validate::page_limit(query.limit)?;
    // A cursor is sealed to these filters, as the other admin lists' are: one made up, edited
    // or taken from another filter is a 400, not a page of something else.
    let sent = [
        query.actor.clone(),
        query.action.clone(),
        query.target_type.clone(),
        query.target_id.clone(),
        query.since.clone(),
        query.until.clone(),
    ];
    let scope = CursorScope::new("audit", sent.iter().map(Option::as_deref).collect());
    let position = paging::opened(&scope, query.cursor.as_deref())?;
    let filter = filter(query, position.as_deref())?;
    let rows = db::audit::list(&state.db, &filter, limit + 1).await?;
    let (rows, next_cursor) = paging::page(rows, limit, &scope, |row| Cursor::after(row).encode());
    Ok(JsonResponse(AuditPage {
        entries: rows.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
    }))
}

/// Checks each filter (a 400 naming it) and builds the database filter, starting after the
/// position of an opened cursor.
fn filter(query: AuditQuery, position: Option<&str>) -> Result<Filter, ApiError> {
    if let Some(actor) = &query.actor
        && actor != admin::BOOTSTRAP
        && Uuid::parse_str(actor).is_err()
    {
        return Err(ApiError::BadRequest(format!(
            "actor must be an admin key id or '{}' (got '{actor}')",
            admin::BOOTSTRAP
        )));
    }
    for (field, value) in [
        ("action", &query.action),
        ("target_type", &query.target_type),
    ] {
        if let Some(value) = value
            && (value.is_empty()
                || value.len() > MAX_NAME_LEN
                || !value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || matches!(c, '_' | '.')))
        {
            return Err(ApiError::BadRequest(format!(
                "{field} must be 1 to {MAX_NAME_LEN} of a-z _ . (got '{value}')"
            )));
        }
    }
    if let Some(target_id) = &query.target_id {
        validate::identifier("target_id", target_id)?;
    }
    let since = query
        .since
        .as_deref()
        .map(|v| time("since", v))
        .transpose()?;
    let until = query
        .until
        .as_deref()
        .map(|v| time("until", v))
        .transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(ApiError::BadRequest(
            "since must not be later than until".into(),
        ));
    }
    let before = position
        .map(|text| {
            Cursor::decode(text).ok_or_else(|| {
                ApiError::BadRequest(
                    "cursor is not valid: pass the next_cursor of a previous page".into(),
                )
            })
        })
        .transpose()?;
    Ok(Filter {
        actor_id: query.actor,
        action: query.action,
        target_type: query.target_type,
        target_id: query.target_id,
        since,
        until,
        before,
    })
}

/// An RFC 3339 time, e.g. `2026-12-04T09:00:00Z`.
fn time(field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{field} must be an RFC 3339 time such as 2026-12-04T09:00:00Z (got '{value}')"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> AuditQuery {
        AuditQuery {
            actor: None,
            action: None,
            target_type: None,
            target_id: None,
            since: None,
            until: None,
            limit: None,
            cursor: None,
        }
    }

    #[test]
    fn bad_filters_are_refused() {
        let bad = [
            AuditQuery {
                actor: Some("alice".into()),
                ..query()
            },
            AuditQuery {
                action: Some("Team.Suspend".into()),
                ..query()
            },
            AuditQuery {
                target_id: Some("a b".into()),
                ..query()
            },
            AuditQuery {
                since: Some("yesterday".into()),
                ..query()
            },
            AuditQuery {
                since: Some("2026-12-05T00:00:00Z".into()),
                until: Some("2026-12-04T00:00:00Z".into()),
                ..query()
            },
        ];
        for q in bad {
            assert!(filter(q, None).is_err());
        }
        // An opened cursor's position that is not one this service writes.
        assert!(filter(query(), Some("nope")).is_err());
        // Cursors are sealed to their filters.
        let all = CursorScope::new("audit", vec![None; 6]);
        let suspends = CursorScope::new(
            "audit",
            vec![None, Some("team.suspend"), None, None, None, None],
        );
        let cursor = all.seal("position");
        assert_eq!(all.open(&cursor).expect("own cursor"), "position");
        assert!(suspends.open(&cursor).is_err());
        let good = AuditQuery {
            actor: Some("bootstrap".into()),
            action: Some("team.suspend".into()),
            since: Some("2026-12-04T09:00:00+01:00".into()),
            ..query()
        };
        let built = filter(good, None).expect("valid filters");
        assert_eq!(built.actor_id.as_deref(), Some("bootstrap"));
        assert_eq!(
            built.since.map(|t| t.to_rfc3339()),
            Some("2026-12-04T08:00:00+00:00".into())
        );
    }
}
