//! Budget slices of the OpenAI-compatible path (see the migration that creates `budget_slices`):
//! an API process reserves part of a team's remaining USD budget in one update, admits requests
//! against it in memory, and later moves what they cost from reserved to spent in batches. The
//! team's `budget_reserved_micro_usd` counts every live slice, so `spend + reserved <= budget`
//! holds at every commit and admitted estimates can never overshoot it.
//!
//! Lock order, everywhere: slice rows (by slice id) before balance rows (by team id).

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::status::CallEndpoint;

/// What a request for budget got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The slice now holds `added` more micro-dollars (and is renewed).
    Granted { added: i64 },
    /// Less than the request needed is free. `parked` is what all slices and open reservations
    /// of the team hold, some of which other processes may give back.
    Refused { parked: i64 },
    /// The slice was returned by the reconciler (its lease lapsed); start a new one.
    SliceGone,
}

/// Adds between `need` and `want` micro-dollars (as much of `want` as is free) to the slice,
/// creating it when `create` is set, and renews its lease. Nothing changes when less than `need`
/// is free.
#[allow(clippy::too_many_arguments)]
pub async fn take(
    db: &PgPool,
    slice_id: Uuid,
    create: bool,
    team_id: &str,
    holder: &str,
    need: i64,
    want: i64,
    usd_per_credit_micro: i64,
    lease_secs: f64,
) -> sqlx::Result<Taken> {
    let mut tx = db.begin().await?;
    if !create {
        // Locks the slice first (the lock order) and checks it still exists.
        let renewed = renew_in(&mut tx, &[slice_id], lease_secs).await?;
        if renewed.is_empty() {
            return Ok(Taken::SliceGone);
        }
    }
    let Some(Room { free, parked }) = lock_room(&mut tx, team_id, usd_per_credit_micro).await?
    else {
        return Ok(Taken::Refused { parked: 0 });
    };
    if free < need {
        return Ok(Taken::Refused { parked });
    }
    // At most a quarter of what is free, so other processes find budget too; at least `need`.
    let added = want.min(free / 4).max(need).min(free);
    sqlx::query!(
        "update credit_balances set budget_reserved_micro_usd = budget_reserved_micro_usd + $2, updated_at = now()
         where team_id = $1",
        team_id,
        added
    )
    .execute(&mut *tx)
    .await?;
    if create {
        sqlx::query!(
            "insert into budget_slices (slice_id, team_id, holder, reserved_micro_usd, expires_at)
             values ($1, $2, $3, $4, now() + make_interval(secs => $5))",
            slice_id,
            team_id,
            holder,
            added,
            lease_secs
        )
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query!(
            "update budget_slices set reserved_micro_usd = reserved_micro_usd + $2 where slice_id = $1",
            slice_id,
            added
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Taken::Granted { added })
}

/// What is free of a team's USD budget, and what its slices and reservations hold.
pub(crate) struct Room {
    pub free: i64,
    pub parked: i64,
}

/// The team's [`Room`], with its balance row locked until commit (`None` when the team has no
/// balance row). FOR NO KEY UPDATE waits for concurrent changes and reads the latest committed
/// row, so the free amount computed here stays true until commit. 9223372036854775807 is
/// `i64::MAX`: a budget above it counts as it, so a reservation always fits the column.
pub(crate) async fn lock_room(
    conn: &mut PgConnection,
    team_id: &str,
    usd_per_credit_micro: i64,
) -> sqlx::Result<Option<Room>> {
    sqlx::query_as!(
        Room,
        r#"select greatest(least(least(credits_allocated::numeric * $2::int8, 9223372036854775807)
                                 - spend_micro_usd - budget_reserved_micro_usd, 9223372036854775807), 0)::int8
                  as "free!",
                budget_reserved_micro_usd as parked
         from credit_balances where team_id = $1 for no key update"#,
        team_id,
        usd_per_credit_micro
    )
    .fetch_optional(conn)
    .await
}

/// Extends the leases of the given slices; returns those that still exist (the others were
/// returned by the reconciler).
pub async fn renew(db: &PgPool, slice_ids: &[Uuid], lease_secs: f64) -> sqlx::Result<Vec<Uuid>> {
    let mut conn = db.acquire().await?;
    renew_in(&mut conn, slice_ids, lease_secs).await
}

async fn renew_in(
    conn: &mut PgConnection,
    slice_ids: &[Uuid],
    lease_secs: f64,
) -> sqlx::Result<Vec<Uuid>> {
    if slice_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar!(
        "with locked as materialized (
             select slice_id from budget_slices where slice_id = any($1) order by slice_id for update)
         update budget_slices set expires_at = now() + make_interval(secs => $2)
         where slice_id in (select slice_id from locked)
         returning slice_id",
        slice_ids,
        lease_secs
    )
    .fetch_all(conn)
    .await
}

/// One finished request, as its spend record.
#[derive(Debug, Clone)]
pub struct SpendEntry {
    pub request_id: Uuid,
    pub team_id: String,
    pub model: String,
    pub stream: bool,
    /// The upstream endpoint the request went to.
    pub endpoint: CallEndpoint,
    /// The estimate it was admitted with.
    pub reserved_micro_usd: i64,
    pub usage: crate::db::spend::Usage,
}

/// How a flush changes one slice: `spent` moves from reserved to the team's spend (it is the
/// part of the flushed costs the slice covers), `returned` goes back to the team's free budget,
/// and `delete` ends the slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceChange {
    pub slice_id: Uuid,
    pub spent: i64,
    pub returned: i64,
    pub delete: bool,
}

/// Records a batch in one transaction: the spend records, the slices' changes, and per team one
/// balance update (spend up by the batch's costs, reserved down by what live slices gave up).
/// A slice the reconciler already returned gives up nothing: its reservation was released then.
pub async fn record(
    db: &PgPool,
    entries: &[SpendEntry],
    changes: &[(String, SliceChange)],
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    let mut changes: Vec<&(String, SliceChange)> = changes.iter().collect();
    changes.sort_by_key(|(_, change)| change.slice_id);
    let ids: Vec<Uuid> = changes.iter().map(|(_, c)| c.slice_id).collect();
    let released: Vec<i64> = changes.iter().map(|(_, c)| c.spent + c.returned).collect();
    let deletes: Vec<bool> = changes.iter().map(|(_, c)| c.delete).collect();
    let live: Vec<Uuid> = if ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar!(
            "with locked as materialized (
                 select slice_id from budget_slices where slice_id = any($1) order by slice_id for update)
             update budget_slices s set reserved_micro_usd = s.reserved_micro_usd - c.released
             from unnest($1::uuid[], $2::int8[]) as c(slice_id, released)
             where s.slice_id = c.slice_id and s.slice_id in (select slice_id from locked)
             returning s.slice_id",
            &ids,
            &released
        )
        .fetch_all(&mut *tx)
        .await?
    };
    let ended: Vec<Uuid> = ids
        .iter()
        .zip(&deletes)
        .filter(|(id, delete)| **delete && live.contains(id))
        .map(|(id, _)| *id)
        .collect();
    if !ended.is_empty() {
        sqlx::query!("delete from budget_slices where slice_id = any($1)", &ended)
            .execute(&mut *tx)
            .await?;
    }
    // Per team: what the batch cost, and what its live slices gave up.
    let mut teams: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for entry in entries {
        let team = teams.entry(entry.team_id.as_str()).or_default();
        team.0 = team.0.saturating_add(entry.usage.cost_micro_usd);
    }
    for (team_id, change) in &changes {
        let team = teams.entry(team_id.as_str()).or_default();
        if live.contains(&change.slice_id) {
            team.1 += change.spent + change.returned;
        }
    }
    update_balances(&mut tx, teams).await?;
    insert_records(&mut tx, entries).await?;
    tx.commit().await
}

/// Per team (locked in team order): spend up by `cost` (saturating at `i64::MAX`), reserved
/// down by `released`.
async fn update_balances(
    conn: &mut PgConnection,
    teams: BTreeMap<&str, (i64, i64)>,
) -> sqlx::Result<()> {
    let (team_ids, (costs, releases)): (Vec<&str>, (Vec<i64>, Vec<i64>)) =
        teams.into_iter().unzip();
    // 9223372036854775807: `i64::MAX` (see `lock_room`). `as &[&str]`: sqlx checks a text[]
    // parameter only as `&[String]`.
    sqlx::query!(
        "with locked as materialized (
             select team_id from credit_balances where team_id = any($1) order by team_id for no key update)
         update credit_balances b
         set spend_micro_usd = least(b.spend_micro_usd::numeric + t.cost, 9223372036854775807)::int8,
             budget_reserved_micro_usd = b.budget_reserved_micro_usd - t.released, updated_at = now()
         from unnest($1::text[], $2::int8[], $3::int8[]) as t(team_id, cost, released)
         where b.team_id = t.team_id and b.team_id in (select team_id from locked)",
        &team_ids as &[&str],
        &costs,
        &releases
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The spend records of a batch, each `recorded` (it cost something or succeeded) or `released`.
async fn insert_records(conn: &mut PgConnection, entries: &[SpendEntry]) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(entries.len());
    let (mut teams, mut models, mut streams, mut reserved) = (vec![], vec![], vec![], vec![]);
    let (mut statuses, mut prompt, mut completion, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut costs, mut sources, mut http, mut errors) = (vec![], vec![], vec![], vec![]);
    let mut endpoints = Vec::with_capacity(entries.len());
    for e in entries {
        ids.push(e.request_id);
        teams.push(e.team_id.as_str());
        models.push(e.model.as_str());
        streams.push(e.stream);
        reserved.push(e.reserved_micro_usd);
        statuses.push(e.usage.status().as_str());
        prompt.push(e.usage.prompt_tokens);
        completion.push(e.usage.completion_tokens);
        total.push(e.usage.total_tokens);
        costs.push(e.usage.cost_micro_usd);
        sources.push(e.usage.cost_source.as_str());
        http.push(e.usage.http_status);
        errors.push(e.usage.error.as_deref());
        endpoints.push(e.endpoint.as_str());
    }
    // Typed overrides on the arrays: sqlx checks an array parameter only as a slice of owned,
    // non-null values (`&[String]`, `&[i64]`), and these hold borrowed or nullable ones.
    sqlx::query!(
        "insert into spend_records (request_id, team_id, model, stream, reserved_micro_usd, status,
             prompt_tokens, completion_tokens, total_tokens, cost_micro_usd, cost_source, http_status,
             error, endpoint, finished_at)
         select r.*, now() from unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::int8[],
             $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::int4[],
             $13::text[], $14::text[]) as r
         on conflict (request_id) do nothing",
        &ids,
        &teams as &[&str],
        &models as &[&str],
        &streams,
        &reserved,
        &statuses as &[&str],
        &prompt as &[Option<i64>],
        &completion as &[Option<i64>],
        &total as &[Option<i64>],
        &costs,
        &sources as &[&str],
        &http as &[Option<i32>],
        &errors as &[Option<&str>],
        &endpoints as &[&str]
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Returns up to `limit` slices whose lease lapsed (their process died or lost the database):
/// deletes them and gives what they held back to their teams. Returns how many.
pub async fn reclaim_expired(db: &PgPool, limit: i64) -> sqlx::Result<u64> {
    let mut tx = db.begin().await?;
    let reclaimed = sqlx::query!(
        "delete from budget_slices where slice_id in (
             select slice_id from budget_slices where expires_at < now()
             order by slice_id limit $1 for update skip locked)
         returning team_id, reserved_micro_usd",
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    // Nothing was spent: what the slices held only stops being reserved.
    let mut teams: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for slice in &reclaimed {
        teams.entry(slice.team_id.as_str()).or_default().1 += slice.reserved_micro_usd;
    }
    update_balances(&mut tx, teams).await?;
    tx.commit().await?;
    Ok(reclaimed.len() as u64)
}
