//! Every SQL statement of the service. Functions take an executor or a connection so that the
//! caller owns the transaction; row structs stay here and are mapped to wire types by the API.

/// Declares `find(db, team_id, id)`: the row with that id if the team owns it, `None` otherwise,
/// so that another team's id reads as absent (a 404, never a 403). `$query` is the table's row
/// macro (`query_batch!`, `query_file!`: the select head, then the rest of the statement), and
/// `$from` names the table and binds the id as `$1` and the team as `$2`.
macro_rules! find_team_row {
    ($query:ident, $row:ty, $from:literal) => {
        /// The team's row with this id, if it exists; `None` for another team's.
        pub async fn find(
            db: impl sqlx::PgExecutor<'_>,
            team_id: &str,
            id: &str,
        ) -> sqlx::Result<Option<$row>> {
            $query!("select ", $from, id, team_id)
                .fetch_optional(db)
                .await
        }
    };
}

pub mod activity;
pub mod admin_keys;
pub mod audit;
pub mod batch_endings;
pub mod batch_runs;
pub mod batches;
pub mod budget_slices;
pub mod call_leases;
pub mod call_reads;
pub mod calls;
pub mod claims;
pub mod console_sessions;
pub mod credits;
pub mod files;
pub mod idempotency;
pub mod job_creation;
pub mod jobs;
pub mod keys;
pub mod listings;
pub mod model_groups;
pub mod organizations;
pub mod refills;
pub mod settlement;
pub mod spend;
pub mod team_alerts;
pub mod teams;
pub mod usage;
pub mod webhooks;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres};

use crate::config::DatabaseConfig;

/// The schema migrations, embedded in the binaries.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Creates the database if it is missing, opens a pool and applies pending migrations.
/// Several processes may start at once: creation tolerates a concurrent creator and the migrator
/// takes an advisory lock.
pub async fn connect_and_migrate(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let url = config.url.expose_secret();
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
    if !Postgres::database_exists(url)
        .await
        .map_err(describe_connect_error)?
    {
        if let Err(error) = Postgres::create_database(url).await {
            let already_exists = error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04");
            if !already_exists {
                return Err(describe_connect_error(error));
            }
        }
        tracing::info!(
            database = options.get_database().unwrap_or_default(),
            "created database"
        );
    }
    // No JIT: every statement here is a short lookup or update, or a report over at most a
    // period's rows, and JIT compilation alone cost a usage report's first runs on each
    // connection 200 to 400 ms (its row estimates cross the JIT threshold).
    let options = options
        .options([("jit", "off")])
        .log_statements(tracing::log::LevelFilter::Debug);
    let pool = pool_options(config)
        .connect_with(options)
        .await
        .map_err(describe_connect_error)?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies pending migrations on a connection that does not pass PostgreSQL's notices on (the
/// migrator's `create table if not exists` would log "relation already exists, skipping" at INFO
/// on every start); says so only when migrations were applied.
async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("client_min_messages", "warning")]);
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .map_err(describe_connect_error)?;
    let before = applied_migrations(&mut conn).await?;
    MIGRATOR.run(&mut conn).await?;
    let applied = applied_migrations(&mut conn).await? - before;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    let _closed = conn.close().await;
    Ok(())
}

async fn applied_migrations(conn: &mut sqlx::PgConnection) -> sqlx::Result<i64> {
    let exists =
        sqlx::query_scalar!(r#"select to_regclass('_sqlx_migrations') is not null as "exists!""#)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar!(r#"select count(*) as "count!" from _sqlx_migrations"#)
        .fetch_one(conn)
        .await
}

/// Pool settings shared by the binaries and the tests.
pub fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    sized_pool_options(config.max_connections).min_connections(1)
}

/// A worker's own few connections for its statements over many calls at once (claims, lease
/// extensions, groups of results), to the same database as `db`. Their plans are made once per
/// connection and kept (`plan_cache_mode = force_generic_plan`): PostgreSQL otherwise plans
/// each statement with its values every time, and planning these statements of a dozen arrays
/// took longer than running them (about 0.6 ms of the 1.4 ms a group of results took). The plan
/// is the same whatever the values: primary-key lookups of the calls listed. The API's own
/// statements keep the default, where plans made for the values matter (optional filters).
pub fn batch_pool(db: &PgPool, max_connections: u32) -> PgPool {
    let options = db
        .connect_options()
        .as_ref()
        .clone()
        .options([("plan_cache_mode", "force_generic_plan")]);
    sized_pool_options(max_connections).connect_lazy_with(options)
}

fn sized_pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection before handing it out (and again when it comes back):
        // with the first ping, every statement costs three round trips instead of two. A
        // connection used within the last moment is known to be alive, so only one that has sat
        // idle is pinged first (as HikariCP does); in the benchmark this raised synchronous calls
        // at concurrency 32 by 40 % and job lifecycles by 28 %. A hot connection that died with
        // its server fails its statement (503 on the API) and is then closed; the pool opens a
        // new one.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= ALIVE_WITHOUT_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// How long after its last use a pooled connection is handed out without a ping.
const ALIVE_WITHOUT_PING: Duration = Duration::from_millis(500);

fn describe_connect_error(error: sqlx::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot reach PostgreSQL (check DATABASE_URL): {error}")
}

/// Whether the error is a violation of the named constraint.
pub fn is_constraint_violation(error: &sqlx::Error, constraint: &str) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.constraint())
        .is_some_and(|name| name == constraint)
}
