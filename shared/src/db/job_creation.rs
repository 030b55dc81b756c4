//! Creating a team's jobs in groups: one statement holds a credit for as many of them as the
//! team can pay for and inserts those jobs, first come first served.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db::jobs::{JobRow, NewJob, query_job};
use crate::domain::status::JobStatus;

/// A job to create, with its id chosen before the first try: a try whose commit went unanswered
/// (a broken connection) can then be told apart from one that never committed, and the primary
/// key refuses the same job twice.
#[derive(Debug, Clone)]
pub struct JobToCreate {
    pub job_id: Uuid,
    pub team_id: String,
    pub user_id: Option<String>,
    pub job_type: String,
    pub metadata: serde_json::Value,
    pub ttl_secs: i64,
    /// Callback URL and its `whsec_` secret, both or neither.
    pub callback: Option<(String, String)>,
}

impl JobToCreate {
    /// The job with a new id.
    pub fn new(job: &NewJob<'_>) -> Self {
        Self {
            job_id: Uuid::now_v7(),
            team_id: job.team_id.to_owned(),
            user_id: job.user_id.map(str::to_owned),
            job_type: job.job_type.to_owned(),
            metadata: job.metadata.clone(),
            ttl_secs: job.ttl_secs,
            callback: job
                .callback
                .map(|(url, secret)| (url.to_owned(), secret.to_owned())),
        }
    }
}

/// Holds one credit for each of the first `least(n, available)` of `jobs` (all of `team_id`) and
/// inserts those jobs, in one statement: the balance row is locked first (`balance`), the hold is
/// taken only while the available credit still covers it (the CHECK constraints stay as a
/// backstop), and the jobs commit with it. Answers each job in order: its row, or `None` when
/// the team has no credit left for it (or does not exist).
///
/// The lock in `balance` matters under READ COMMITTED: a concurrent change committed while this
/// statement waited is read from the locked row, so `granted` is computed from the balance the
/// update then changes. A team found with no credit left is not locked: its refusals do not wait
/// behind the creates that took the credit.
pub async fn insert_holding_credits(
    db: impl PgExecutor<'_>,
    team_id: &str,
    jobs: &[&JobToCreate],
) -> sqlx::Result<Vec<Option<JobRow>>> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.job_id).collect();
    let user_ids: Vec<Option<&str>> = jobs.iter().map(|j| j.user_id.as_deref()).collect();
    let job_types: Vec<&str> = jobs.iter().map(|j| j.job_type.as_str()).collect();
    let metadata: Vec<&serde_json::Value> = jobs.iter().map(|j| &j.metadata).collect();
    let ttls: Vec<f64> = jobs.iter().map(|j| j.ttl_secs as f64).collect();
    let callback_urls = callback_parts(jobs, |(url, _)| url);
    let callback_secrets = callback_parts(jobs, |(_, secret)| secret);
    // The arrays of borrowed or optional elements are typed by their casts: sqlx's check
    // expects arrays of owned, non-null elements (`Vec<String>`, `Vec<JsonValue>`).
    let rows: Vec<JobRow> = query_job!(
        "with balance as (
             select team_id,
                    least(cardinality($2::uuid[]), credits_allocated - credits_used - credits_reserved) as granted
             from credit_balances
             where team_id = $1 and credits_allocated - credits_used - credits_reserved >= 1
             for no key update
         ), held as (
             update credit_balances b
             set credits_reserved = b.credits_reserved + balance.granted, updated_at = now()
             from balance
             where b.team_id = balance.team_id and balance.granted >= 1
               and b.credits_allocated - b.credits_used - b.credits_reserved >= balance.granted
             returning b.team_id, balance.granted
         )
         insert into jobs (job_id, team_id, user_id, job_type, metadata, expires_at, callback_url, callback_secret)
         select r.job_id, held.team_id, r.user_id, r.job_type, r.metadata,
                now() + make_interval(secs => r.ttl_secs), r.callback_url, r.callback_secret
         from held,
              unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::float8[], $7::text[], $8::text[])
                  with ordinality as r(job_id, user_id, job_type, metadata, ttl_secs, callback_url, callback_secret, position)
         where r.position <= held.granted
         order by r.position
         returning ",
        "",
        team_id,
        &ids,
        &user_ids as &[Option<&str>],
        &job_types as &[&str],
        &metadata as &[&serde_json::Value],
        &ttls,
        &callback_urls as &[Option<&str>],
        &callback_secrets as &[Option<&str>]
    )
    .fetch_all(db)
    .await?;
    Ok(in_order_of(&ids, rows))
}

/// Answers the jobs as a try that may have committed left them: each job's row if it exists.
/// `None` when no job of the group exists, i.e. the try did not commit (or held nothing), so
/// running the group again changes the balance once.
pub async fn created_earlier(
    db: impl PgExecutor<'_>,
    jobs: &[&JobToCreate],
) -> sqlx::Result<Option<Vec<Option<JobRow>>>> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.job_id).collect();
    let rows: Vec<JobRow> = query_job!("select ", " from jobs where job_id = any($1)", &ids)
        .fetch_all(db)
        .await?;
    Ok((!rows.is_empty()).then(|| in_order_of(&ids, rows)))
}

fn callback_parts<'a>(
    jobs: &[&'a JobToCreate],
    part: impl Fn(&'a (String, String)) -> &'a String,
) -> Vec<Option<&'a str>> {
    jobs.iter()
        .map(|j| j.callback.as_ref().map(|c| part(c).as_str()))
        .collect()
}

fn in_order_of(ids: &[Uuid], rows: Vec<JobRow>) -> Vec<Option<JobRow>> {
    let mut rows: std::collections::HashMap<Uuid, JobRow> =
        rows.into_iter().map(|row| (row.job_id, row)).collect();
    ids.iter().map(|id| rows.remove(id)).collect()
}
