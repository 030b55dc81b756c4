//! Model groups: a name mapped to a priority-ordered list of models.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::status::ModelGroupStatus;

/// A stored model group (without its models).
#[derive(Debug, Clone)]
pub struct ModelGroupRow {
    pub model_group_id: Uuid,
    pub group_name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub status: ModelGroupStatus,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One model of a group.
#[derive(Debug, Clone)]
pub struct ModelEntryRow {
    pub model_group_id: Uuid,
    pub priority: i32,
    pub model_name: String,
    pub config: serde_json::Value,
}

/// A model to store in a group.
#[derive(Debug, Clone)]
pub struct NewModelEntry {
    pub model_name: String,
    pub priority: i32,
    pub config: serde_json::Value,
}

/// `sqlx::query_as!` into [`ModelGroupRow`], with the group's column list between `$head` and
/// `$tail` (sqlx's macros take only string literals, so the list cannot be a constant).
macro_rules! query_group {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            ModelGroupRow,
            $head
                + r#"model_group_id, group_name, display_name, description,
                     status as "status: ModelGroupStatus", metadata, created_at, updated_at"#
                + $tail
            $(, $arg)*
        )
    };
}

/// Inserts a group; a duplicate name violates `model_groups_group_name_key`.
pub async fn insert(
    conn: &mut PgConnection,
    group_name: &str,
    display_name: Option<&str>,
    description: Option<&str>,
    metadata: &serde_json::Value,
) -> sqlx::Result<ModelGroupRow> {
    query_group!(
        "insert into model_groups (model_group_id, group_name, display_name, description, metadata)
         values ($1, $2, $3, $4, $5) returning ",
        "",
        Uuid::now_v7(),
        group_name,
        display_name,
        description,
        metadata
    )
    .fetch_one(conn)
    .await
}

/// Replaces the whole model list of a group (in the caller's transaction).
pub async fn replace_models(
    conn: &mut PgConnection,
    model_group_id: Uuid,
    models: &[NewModelEntry],
) -> sqlx::Result<Vec<ModelEntryRow>> {
    sqlx::query!(
        "delete from model_group_models where model_group_id = $1",
        model_group_id
    )
    .execute(&mut *conn)
    .await?;
    let names: Vec<String> = models.iter().map(|m| m.model_name.clone()).collect();
    let priorities: Vec<i32> = models.iter().map(|m| m.priority).collect();
    let configs: Vec<serde_json::Value> = models.iter().map(|m| m.config.clone()).collect();
    sqlx::query!(
        "update model_groups set updated_at = now() where model_group_id = $1",
        model_group_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as!(
        ModelEntryRow,
        "insert into model_group_models (model_group_id, model_name, priority, config)
         select $1, name, priority, config
         from unnest($2::text[], $3::int4[], $4::jsonb[]) as t(name, priority, config)
         returning model_group_id, priority, model_name, config",
        model_group_id,
        &names,
        &priorities,
        &configs
    )
    .fetch_all(conn)
    .await
    .map(|mut rows| {
        rows.sort_by_key(|m| m.priority);
        rows
    })
}

/// Every group, by name.
pub async fn list_all(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ModelGroupRow>> {
    query_group!("select ", " from model_groups order by group_name")
        .fetch_all(db)
        .await
}

/// The groups granted to one team, by name.
pub async fn list_for_team(
    db: impl PgExecutor<'_>,
    team_id: &str,
) -> sqlx::Result<Vec<ModelGroupRow>> {
    query_group!(
        "select ",
        " from model_groups
         where model_group_id in (select model_group_id from team_model_groups where team_id = $1)
         order by group_name",
        team_id
    )
    .fetch_all(db)
    .await
}

/// One group by its name.
pub async fn find_by_name(
    db: impl PgExecutor<'_>,
    group_name: &str,
) -> sqlx::Result<Option<ModelGroupRow>> {
    query_group!(
        "select ",
        " from model_groups where group_name = $1",
        group_name
    )
    .fetch_optional(db)
    .await
}

/// One group by its name, locked for the rest of the transaction (so that what an admin change
/// reads before changing it is what it changes).
pub async fn lock_by_name(
    conn: &mut PgConnection,
    group_name: &str,
) -> sqlx::Result<Option<ModelGroupRow>> {
    query_group!(
        "select ",
        " from model_groups where group_name = $1 for update",
        group_name
    )
    .fetch_optional(conn)
    .await
}

/// A group by name with whether `team_id` is granted it, in one round trip (the call path).
pub async fn find_with_access(
    db: impl PgExecutor<'_>,
    group_name: &str,
    team_id: &str,
) -> sqlx::Result<Option<(ModelGroupRow, bool)>> {
    // The group's columns are written out: `query_group!` reads into `ModelGroupRow` alone.
    let found = sqlx::query!(
        r#"select model_group_id, group_name, display_name, description,
                  status as "status: ModelGroupStatus", metadata, created_at, updated_at,
                  exists (select 1 from team_model_groups t
                          where t.team_id = $2 and t.model_group_id = g.model_group_id) as "granted!"
           from model_groups g where group_name = $1"#,
        group_name,
        team_id
    )
    .fetch_optional(db)
    .await?;
    Ok(found.map(|f| {
        let group = ModelGroupRow {
            model_group_id: f.model_group_id,
            group_name: f.group_name,
            display_name: f.display_name,
            description: f.description,
            status: f.status,
            metadata: f.metadata,
            created_at: f.created_at,
            updated_at: f.updated_at,
        };
        (group, f.granted)
    }))
}

/// Groups among `names` that exist, as (id, name).
pub async fn find_ids_by_names(
    db: impl PgExecutor<'_>,
    names: &[String],
) -> sqlx::Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "select model_group_id, group_name from model_groups where group_name = any($1)",
        names
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.model_group_id, r.group_name))
        .collect())
}

/// The models of the given groups, ordered by group then priority.
pub async fn models_of(
    db: impl PgExecutor<'_>,
    group_ids: &[Uuid],
) -> sqlx::Result<Vec<ModelEntryRow>> {
    sqlx::query_as!(
        ModelEntryRow,
        "select model_group_id, priority, model_name, config from model_group_models
         where model_group_id = any($1) order by model_group_id, priority",
        group_ids
    )
    .fetch_all(db)
    .await
}

/// Deletes a group; a group still granted to a team violates `team_model_groups_group_fkey`.
/// Returns whether a group was deleted.
pub async fn delete(db: impl PgExecutor<'_>, model_group_id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        "delete from model_groups where model_group_id = $1",
        model_group_id
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Whether the team holds a grant to the group.
pub async fn team_has_access(
    db: impl PgExecutor<'_>,
    team_id: &str,
    model_group_id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from team_model_groups where team_id = $1 and model_group_id = $2)
               as "exists!""#,
        team_id,
        model_group_id
    )
    .fetch_one(db)
    .await
}

/// The teams holding a grant to the group, for the 409 message on delete.
pub async fn teams_using(
    db: impl PgExecutor<'_>,
    model_group_id: Uuid,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "select team_id from team_model_groups where model_group_id = $1 order by team_id limit 10",
        model_group_id
    )
    .fetch_all(db)
    .await
}

/// The groups granted to a team in grant order, each with its models in priority order: what
/// an API process caches per team.
pub async fn granted_to(
    conn: &mut PgConnection,
    team_id: &str,
) -> sqlx::Result<Vec<(ModelGroupRow, Vec<ModelEntryRow>)>> {
    // The columns are written out qualified: `created_at` is also a column of the grants.
    let groups = sqlx::query_as!(
        ModelGroupRow,
        r#"select g.model_group_id, g.group_name, g.display_name, g.description,
                g.status as "status: ModelGroupStatus", g.metadata, g.created_at, g.updated_at
         from team_model_groups t join model_groups g using (model_group_id)
         where t.team_id = $1 order by t.position"#,
        team_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = groups.iter().map(|g| g.model_group_id).collect();
    let mut models = models_of(&mut *conn, &ids).await?;
    Ok(groups
        .into_iter()
        .map(|group| {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut models)
                .into_iter()
                .partition(|m| m.model_group_id == group.model_group_id);
            models = rest;
            (group, mine)
        })
        .collect())
}
