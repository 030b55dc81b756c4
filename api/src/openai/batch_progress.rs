//! How many lines of a batch have succeeded and failed, as `GET /v1/batches` shows them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use saasllm_shared::db;
use saasllm_shared::db::batches::BatchRow;
use sqlx::PgPool;
use uuid::Uuid;

/// How long a batch's counted progress is shown again without counting.
const PROGRESS_REUSE: Duration = Duration::from_secs(1);
/// Entries kept before expired ones are dropped.
const PROGRESS_ENTRIES: usize = 10_000;

/// Lines succeeded and failed: counted from the job's calls while the batch runs (at most once
/// a second per batch in this process, so polling clients cannot make PostgreSQL count a
/// 50,000-line job at their pace), as stored once it has ended.
pub(crate) async fn progress(db: &PgPool, row: &BatchRow) -> sqlx::Result<(i64, i64)> {
    let Some(job_id) = row.job_id.filter(|_| !row.status.is_ended()) else {
        return Ok((i64::from(row.completed_lines), i64::from(row.failed_lines)));
    };
    let now = Instant::now();
    if let Some(&(at, counts)) = recent_progress().get(&job_id)
        && now.duration_since(at) < PROGRESS_REUSE
    {
        return Ok(counts);
    }
    let counts = db::batches::live_counts(db, job_id).await?;
    let mut recent = recent_progress();
    if recent.len() >= PROGRESS_ENTRIES {
        recent.retain(|_, (at, _)| now.duration_since(*at) < PROGRESS_REUSE);
    }
    recent.insert(job_id, (now, counts));
    Ok(counts)
}

/// Progress counted lately: when, and (succeeded, failed), by the batch's job.
type RecentProgress = HashMap<Uuid, (Instant, (i64, i64))>;

fn recent_progress() -> MutexGuard<'static, RecentProgress> {
    static RECENT: LazyLock<Mutex<RecentProgress>> = LazyLock::new(Mutex::default);
    RECENT.lock().unwrap_or_else(|p| p.into_inner())
}
