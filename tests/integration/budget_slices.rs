//! The /v1 budget across API processes: each admits against its own slice of the team's budget,
//! so bursts through two processes never pass the budget; budget parked in one process's slice
//! is given back when another needs it, when idle, at shutdown, and by the reconciler when the
//! process died.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use saasllm_api::budget::SliceSettings;
use serde_json::json;
use sqlx::PgPool;

use crate::budget_bounds::team_with_config;
use crate::helpers::app::TestApp;
use crate::helpers::peer::PeerApi;
use crate::helpers::stack::{Stack, eventually, spawn_stack};

/// Every request to this model is estimated at exactly $0.05 and reported to cost that.
const PRICED_MODEL: &str = "cost-50000";
const PRICE: i64 = 50_000;

/// A team with `credits` whose one group holds the priced model.
async fn priced_team(stack: &Stack, team_id: &str, credits: i64) -> String {
    let price = json!({"input_cost_per_million": 0, "output_cost_per_million": 50});
    team_with_config(stack, team_id, credits, &[PRICED_MODEL], price).await
}

/// A request estimated at `max_tokens` x $50 per 1M output tokens; the upstream reports $0.05.
async fn chat_with_max_tokens(app: &TestApp, key: &str, max_tokens: u32) -> StatusCode {
    app.with_key(key, Method::POST, "/v1/chat/completions")
        .json(&json!({"model": PRICED_MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "spend"}]}))
        .send()
        .await
        .expect("request")
        .status()
}

/// A request estimated at exactly $0.05.
async fn chat(app: &TestApp, key: &str) -> StatusCode {
    chat_with_max_tokens(app, key, 1_000).await
}

/// (spend, reserved, held by slices, sum of recorded costs) of a team.
async fn money(db: &PgPool, team_id: &str) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "select b.spend_micro_usd, b.budget_reserved_micro_usd,
                coalesce((select sum(reserved_micro_usd) from budget_slices s where s.team_id = b.team_id), 0)::int8,
                coalesce((select sum(cost_micro_usd) from spend_records r where r.team_id = b.team_id), 0)::int8
         from credit_balances b where b.team_id = $1",
    )
    .bind(team_id)
    .fetch_one(db)
    .await
    .expect("balance")
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn bursts_through_two_processes_never_pass_the_budget_and_strand_none_of_it(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let peer = PeerApi::start(&db, stack.llm.base_url(), SliceSettings::default()).await;
    // 10 credits x $0.10 = $1.00: room for exactly 20 requests of $0.05.
    let key = priced_team(&stack, "team_burst", 10).await;

    let burst = (0..60).map(|i| {
        let app = if i % 2 == 0 { &stack.app } else { &peer.app };
        chat(app, &key)
    });
    let statuses = join_all(burst).await;
    let mut admitted = 0;
    for status in &statuses {
        match *status {
            StatusCode::OK => admitted += 1,
            StatusCode::PAYMENT_REQUIRED => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        admitted <= 20,
        "{admitted} requests of $0.05 fit a $1.00 budget"
    );

    // Budget another process parks is asked back: one request at a time, alternating
    // processes, until refused; all 20 fit in the end.
    let mut turn = 0;
    while chat(if turn % 2 == 0 { &peer.app } else { &stack.app }, &key).await == StatusCode::OK {
        admitted += 1;
        turn += 1;
        assert!(admitted <= 20, "more than the budget was admitted");
    }
    assert_eq!(admitted, 20, "budget was left stranded in a slice");
    assert_eq!(
        stack.llm.total_requests(),
        20,
        "refused requests reached no upstream"
    );

    stack.app.spend_written().await;
    peer.app.spend_written().await;
    let (spend, reserved, in_slices, recorded) = money(&db, "team_burst").await;
    assert_eq!(spend, 20 * PRICE);
    assert_eq!(recorded, spend, "spend records add up to the spend");
    assert_eq!(reserved, in_slices, "nothing reserved beyond the slices");
    assert!(spend + reserved <= 1_000_000);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_request_larger_than_the_free_budget_gets_the_budget_parked_elsewhere(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let peer = PeerApi::start(&db, stack.llm.base_url(), SliceSettings::default()).await;
    // $1.00 of budget.
    let key = priced_team(&stack, "team_park", 10).await;
    // One $0.05 request through the first process leaves it a slice: a quarter of the budget,
    // less what the request cost.
    assert_eq!(chat(&stack.app, &key).await, StatusCode::OK);
    stack.app.spend_written().await;
    let (spend, reserved, in_slices, _) = money(&db, "team_park").await;
    assert_eq!(spend, PRICE);
    assert_eq!((reserved, in_slices), (250_000 - PRICE, 250_000 - PRICE));

    // A request estimated at $0.80 (16,000 output tokens at $50 per 1M) fits the budget only
    // with what the first process parks: the other process asks for it and gets it.
    let status = chat_with_max_tokens(&peer.app, &key, 16_000).await;
    assert_eq!(status, StatusCode::OK);
    stack.app.spend_written().await;
    peer.app.spend_written().await;
    let (spend, reserved, in_slices, recorded) = money(&db, "team_park").await;
    // The large request was admitted at $0.80 and cost the $0.05 the upstream reported.
    assert_eq!((spend, recorded), (2 * PRICE, 2 * PRICE));
    assert_eq!(reserved, in_slices);
    assert!(spend + reserved <= 1_000_000);
    // $0.95 does not fit what is left ($0.90), whichever process asks.
    for app in [&peer.app, &stack.app] {
        assert_eq!(
            chat_with_max_tokens(app, &key, 19_000).await,
            StatusCode::PAYMENT_REQUIRED
        );
    }
    // $0.90 does.
    assert_eq!(
        chat_with_max_tokens(&stack.app, &key, 18_000).await,
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_killed_process_slice_is_returned_by_the_reconciler(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let lease = SliceSettings {
        lease: Duration::from_secs(2),
        idle_return: Duration::from_secs(3_600),
        ..SliceSettings::default()
    };
    let peer = PeerApi::start(&db, stack.llm.base_url(), lease).await;
    let key = priced_team(&stack, "team_dead", 10).await;
    assert_eq!(chat(&peer.app, &key).await, StatusCode::OK);
    peer.app.spend_written().await;
    let (spend, reserved, in_slices, _) = money(&db, "team_dead").await;
    assert_eq!(spend, PRICE);
    assert!(in_slices > 0, "the process holds a slice");
    assert_eq!(reserved, in_slices);

    peer.kill();

    // The stack's worker runs the reconciler every second; the slice's lease lapses in 2 s.
    let returned = eventually(Duration::from_secs(15), || async {
        let (_, reserved, in_slices, _) = money(&db, "team_dead").await;
        reserved == 0 && in_slices == 0
    })
    .await;
    assert!(returned, "the dead process's slice still holds budget");
    let (spend, _, _, recorded) = money(&db, "team_dead").await;
    assert_eq!((spend, recorded), (PRICE, PRICE));
    // The whole rest of the budget is usable again.
    let mut admitted = 0;
    while chat(&stack.app, &key).await == StatusCode::OK {
        admitted += 1;
        assert!(admitted <= 19);
    }
    assert_eq!(admitted, 19);
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn an_idle_slice_goes_back_to_the_team(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let key = priced_team(&stack, "team_idle", 10).await;
    assert_eq!(chat(&stack.app, &key).await, StatusCode::OK);
    stack.app.spend_written().await;
    assert!(money(&db, "team_idle").await.2 > 0, "a slice is held");
    let returned = eventually(Duration::from_secs(15), || async {
        let (_, reserved, in_slices, _) = money(&db, "team_idle").await;
        reserved == 0 && in_slices == 0
    })
    .await;
    assert!(returned, "the idle slice was never given back");
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn a_stopping_process_gives_its_slice_back(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let keep = SliceSettings {
        idle_return: Duration::from_secs(3_600),
        ..SliceSettings::default()
    };
    let peer = PeerApi::start(&db, stack.llm.base_url(), keep).await;
    let key = priced_team(&stack, "team_stop", 10).await;
    assert_eq!(chat(&peer.app, &key).await, StatusCode::OK);
    peer.app.spend_written().await;
    assert!(money(&db, "team_stop").await.2 > 0, "a slice is held");

    peer.stop().await;

    let (spend, reserved, in_slices, recorded) = money(&db, "team_stop").await;
    assert_eq!(
        (reserved, in_slices),
        (0, 0),
        "the slice went back at shutdown"
    );
    assert_eq!((spend, recorded), (PRICE, PRICE));
}
