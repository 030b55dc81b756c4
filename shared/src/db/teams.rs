//! Teams and their model-group grants.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::limits::TeamLimits;
use crate::domain::status::TeamStatus;

/// A stored team.
#[derive(Debug, Clone)]
pub struct TeamRow {
    pub team_id: String,
    pub organization_id: String,
    pub team_alias: Option<String>,
    pub status: TeamStatus,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub limits: TeamLimits,
}

/// A team as its columns read, before its limits are grouped into [`TeamLimits`].
struct TeamColumns {
    team_id: String,
    organization_id: String,
    team_alias: Option<String>,
    status: TeamStatus,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    max_concurrent_calls: Option<i32>,
    requests_per_minute: Option<i32>,
    tokens_per_minute: Option<i32>,
}

impl From<TeamColumns> for TeamRow {
    fn from(c: TeamColumns) -> Self {
        TeamRow {
            team_id: c.team_id,
            organization_id: c.organization_id,
            team_alias: c.team_alias,
            status: c.status,
            metadata: c.metadata,
            created_at: c.created_at,
            updated_at: c.updated_at,
            limits: TeamLimits {
                max_concurrent_calls: c.max_concurrent_calls,
                requests_per_minute: c.requests_per_minute,
                tokens_per_minute: c.tokens_per_minute,
            },
        }
    }
}

/// `sqlx::query_as!` into [`TeamColumns`], with the team's column list between `$head` and
/// `$tail` (sqlx's macros take only string literals, so the list cannot be a constant).
macro_rules! query_team {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            TeamColumns,
            $head
                + r#"team_id, organization_id, team_alias, status as "status: TeamStatus", metadata,
                     created_at, updated_at, max_concurrent_calls, requests_per_minute,
                     tokens_per_minute"#
                + $tail
            $(, $arg)*
        )
    };
}

/// Inserts a team; violates `teams_pkey` on a duplicate id and `teams_organization_fkey` for an
/// unknown organization.
pub async fn insert(
    conn: &mut PgConnection,
    team_id: &str,
    organization_id: &str,
    team_alias: Option<&str>,
    metadata: &serde_json::Value,
) -> sqlx::Result<TeamRow> {
    query_team!(
        "insert into teams (team_id, organization_id, team_alias, metadata) values ($1, $2, $3, $4)
         returning ",
        "",
        team_id,
        organization_id,
        team_alias,
        metadata
    )
    .fetch_one(conn)
    .await
    .map(TeamRow::from)
}

/// One team by id.
pub async fn find(db: impl PgExecutor<'_>, team_id: &str) -> sqlx::Result<Option<TeamRow>> {
    let found = query_team!("select ", " from teams where team_id = $1", team_id)
        .fetch_optional(db)
        .await?;
    Ok(found.map(TeamRow::from))
}

/// Locks the team row for the rest of the transaction (so that, for example, two key rotations
/// run one after the other). Returns whether the team exists.
pub async fn lock(conn: &mut PgConnection, team_id: &str) -> sqlx::Result<bool> {
    let found = sqlx::query_scalar!(
        "select team_id from teams where team_id = $1 for no key update",
        team_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// The teams of an organization, by id.
pub async fn list_by_organization(
    db: impl PgExecutor<'_>,
    organization_id: &str,
) -> sqlx::Result<Vec<TeamRow>> {
    let rows = query_team!(
        "select ",
        " from teams where organization_id = $1 order by team_id",
        organization_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(TeamRow::from).collect())
}

/// Sets the status; `None` when the team does not exist.
pub async fn set_status(
    db: impl PgExecutor<'_>,
    team_id: &str,
    status: TeamStatus,
) -> sqlx::Result<Option<TeamRow>> {
    let changed = query_team!(
        "update teams set status = $2, updated_at = now() where team_id = $1 returning ",
        "",
        team_id,
        status as TeamStatus
    )
    .fetch_optional(db)
    .await?;
    Ok(changed.map(TeamRow::from))
}

/// Replaces the team's grants with `group_ids`, in that order.
pub async fn replace_model_groups(
    conn: &mut PgConnection,
    team_id: &str,
    group_ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query!("delete from team_model_groups where team_id = $1", team_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "insert into team_model_groups (team_id, model_group_id, position)
         select $1, id, (ord - 1)::int from unnest($2::uuid[]) with ordinality as t(id, ord)",
        team_id,
        group_ids
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update teams set updated_at = now() where team_id = $1",
        team_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The names of the team's groups, in grant order.
pub async fn model_group_names(
    db: impl PgExecutor<'_>,
    team_id: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "select g.group_name from team_model_groups t join model_groups g using (model_group_id)
         where t.team_id = $1 order by t.position",
        team_id
    )
    .fetch_all(db)
    .await
}

/// The models the team may call directly: the union of its groups' models, first occurrence
/// first (grant order, then priority), without duplicates.
pub async fn allowed_models(db: impl PgExecutor<'_>, team_id: &str) -> sqlx::Result<Vec<String>> {
    // `model_name!`: a column of the subquery, not null in `model_group_models`.
    sqlx::query_scalar!(
        r#"select model_name as "model_name!" from (
             select m.model_name, min(array[t.position, m.priority]) as first_seen
             from team_model_groups t join model_group_models m using (model_group_id)
             where t.team_id = $1 group by m.model_name
         ) models order by first_seen, model_name"#,
        team_id
    )
    .fetch_all(db)
    .await
}

/// The team's limits; `None` when the team does not exist.
pub async fn limits(db: impl PgExecutor<'_>, team_id: &str) -> sqlx::Result<Option<TeamLimits>> {
    sqlx::query_as!(
        TeamLimits,
        "select max_concurrent_calls, requests_per_minute, tokens_per_minute from teams where team_id = $1",
        team_id
    )
    .fetch_optional(db)
    .await
}

/// Replaces the team's limits; `None` when the team does not exist.
pub async fn set_limits(
    db: impl PgExecutor<'_>,
    team_id: &str,
    limits: &TeamLimits,
) -> sqlx::Result<Option<TeamLimits>> {
    sqlx::query_as!(
        TeamLimits,
        "update teams set max_concurrent_calls = $2, requests_per_minute = $3, tokens_per_minute = $4,
             updated_at = now()
         where team_id = $1
         returning max_concurrent_calls, requests_per_minute, tokens_per_minute",
        team_id,
        limits.max_concurrent_calls,
        limits.requests_per_minute,
        limits.tokens_per_minute
    )
    .fetch_optional(db)
    .await
}

/// Every team's limits, for the reconciler to copy into Redis.
pub async fn all_limits(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(String, TeamLimits)>> {
    let rows = sqlx::query!(
        "select team_id, max_concurrent_calls, requests_per_minute, tokens_per_minute from teams"
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let limits = TeamLimits {
                max_concurrent_calls: r.max_concurrent_calls,
                requests_per_minute: r.requests_per_minute,
                tokens_per_minute: r.tokens_per_minute,
            };
            (r.team_id, limits)
        })
        .collect())
}
