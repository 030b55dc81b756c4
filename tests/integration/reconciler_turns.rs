//! Every worker process runs the reconciler loop, but the fleet runs one pass at a time and one
//! per interval: a pass scans every unfinished call, so N workers must not cost N passes.

use std::time::Duration;

use saasllm_shared::db;
use saasllm_shared::queue::CallQueue;
use saasllm_worker::{ReconcilerSettings, ReconcilerTurn, reconcile_unless_done};
use sqlx::PgPool;

use crate::helpers::stack::spawn_stack_without_workers;

async fn last_started(db: &PgPool) -> chrono::DateTime<chrono::Utc> {
    sqlx::query_scalar("select last_started_at from reconciler_passes")
        .fetch_one(db)
        .await
        .expect("last pass")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_fleet_runs_one_reconciler_pass_at_a_time_and_one_per_interval(db: PgPool) {
    let stack = spawn_stack_without_workers(db.clone()).await;
    let queue = stack.queue();
    let settings = ReconcilerSettings {
        interval: Duration::from_secs(60),
        grace: Duration::from_secs(3),
    };

    let turn = |db: PgPool, queue: CallQueue| async move {
        reconcile_unless_done(&db, &queue, settings)
            .await
            .expect("reconciler turn")
    };
    assert_eq!(turn(db.clone(), queue.clone()).await, ReconcilerTurn::Ran);
    let first = last_started(&db).await;
    // Another process within the interval: nothing to do.
    assert_eq!(
        turn(db.clone(), queue.clone()).await,
        ReconcilerTurn::Skipped
    );
    assert_eq!(last_started(&db).await, first);

    // A pass running in another process (its turn's transaction still open): skipped at once,
    // without waiting for it, even once the interval has passed.
    sqlx::query("update reconciler_passes set last_started_at = '-infinity'")
        .execute(&db)
        .await
        .expect("forget the last pass");
    let mut running = db.begin().await.expect("begin");
    assert!(
        db::claims::start_reconciler_pass(&mut running, 0.0)
            .await
            .expect("take the turn")
    );
    assert_eq!(
        turn(db.clone(), queue.clone()).await,
        ReconcilerTurn::Skipped
    );
    running.rollback().await.expect("end the other pass");

    // That process died mid-pass (its transaction rolled back): the next turn runs the pass.
    assert_eq!(turn(db.clone(), queue.clone()).await, ReconcilerTurn::Ran);
    assert!(last_started(&db).await > first);
}
