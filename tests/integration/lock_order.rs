//! A worker's statements over many calls (claims, lease extensions, groups of results) lock the
//! calls in one order, so that two of them over the same calls never deadlock. A deadlock makes
//! PostgreSQL abort one statement; when that was a group of results, every call of the group ran
//! a second time after its lease lapsed.

use futures::future::join_all;
use saasllm_shared::db::calls::ClaimedCall;
use saasllm_shared::db::claims::{self, Finished};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::app::{job_holding_credit, team_with_chat_group};
use crate::helpers::call_rows::{chat_agent_call, hello_request, insert_call, succeeded_result};

const CALLS: usize = 64;
const ROUNDS: usize = 60;

/// `CALLS` queued calls of one job: the job and the calls.
async fn queued_calls(db: &PgPool) -> (Uuid, Vec<Uuid>) {
    let model_group_id = team_with_chat_group(db, "team_locks").await;
    let mut tx = db.begin().await.expect("begin");
    let job = job_holding_credit(&mut *tx, "team_locks", "locks").await;
    let request = hello_request();
    let mut ids = Vec::new();
    for _ in 0..CALLS {
        let call = chat_agent_call(job.job_id, "team_locks", model_group_id, &request, None);
        ids.push(insert_call(&mut *tx, &call).await);
    }
    tx.commit().await.expect("commit");
    (job.job_id, ids)
}

/// `CALLS` calls of one job, claimed by one worker.
async fn running_calls(db: &PgPool) -> Vec<ClaimedCall> {
    let (_, ids) = queued_calls(db).await;
    let claimed = claims::claim_many(db, &ids, "worker-locks", 600.0)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), CALLS);
    claimed
}

/// Extends the leases `ROUNDS` times, the calls listed in the given order.
async fn extend_in_order(db: &PgPool, leases: Vec<(Uuid, i64)>) -> Result<(), String> {
    for _ in 0..ROUNDS {
        let kept = claims::extend_leases(db, &leases, 600.0)
            .await
            .map_err(|e| e.to_string())?;
        if kept.len() != leases.len() {
            return Err(format!("{} of {} leases kept", kept.len(), leases.len()));
        }
    }
    Ok(())
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn lease_extensions_and_results_over_the_same_calls_in_any_order_never_deadlock(db: PgPool) {
    let claimed = running_calls(&db).await;
    let ascending: Vec<(Uuid, i64)> = claimed.iter().map(|c| (c.call_id, c.lease_token)).collect();
    let descending: Vec<(Uuid, i64)> = ascending.iter().rev().copied().collect();
    // Every other call, then the rest: a third order.
    let interleaved: Vec<(Uuid, i64)> = ascending
        .iter()
        .step_by(2)
        .chain(ascending.iter().skip(1).step_by(2))
        .copied()
        .collect();

    let extensions = join_all([
        extend_in_order(&db, ascending.clone()),
        extend_in_order(&db, descending.clone()),
        extend_in_order(&db, interleaved),
        extend_in_order(&db, descending),
    ])
    .await;
    for outcome in &extensions {
        assert_eq!(outcome, &Ok(()), "a lease extension failed");
    }

    // Results written in reverse order while leases are extended in call order.
    let result = succeeded_result(1, 1, 10);
    let finished: Vec<Finished<'_>> = claimed
        .iter()
        .rev()
        .map(|call| Finished {
            call,
            attempts: &[],
            result: &result,
        })
        .collect();
    let keep_extending = async {
        for _ in 0..ROUNDS {
            if let Err(e) = claims::extend_leases(&db, &ascending, 600.0).await {
                return Err(e.to_string());
            }
        }
        Ok(())
    };
    let write_in_halves = async {
        let (first, second) = finished.split_at(CALLS / 2);
        let mut written = claims::finish_many(&db, second)
            .await
            .map_err(|e| e.to_string())?;
        written.extend(
            claims::finish_many(&db, first)
                .await
                .map_err(|e| e.to_string())?,
        );
        Ok::<_, String>(written)
    };
    let (extending, written) = futures::join!(keep_extending, write_in_halves);
    assert_eq!(extending, Ok(()), "a lease extension failed");
    let written = written.expect("the results were written");
    assert_eq!(written.len(), CALLS, "every result written under its lease");

    let (succeeded, leased): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'succeeded' and finished_at is not null),
                count(*) filter (where lease_expires_at is not null)
         from llm_calls where team_id = 'team_locks'",
    )
    .fetch_one(&db)
    .await
    .expect("calls");
    assert_eq!((succeeded, leased), (CALLS as i64, 0));
}
