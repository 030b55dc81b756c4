//! Model-based test of the credit ledger: sequences of credit additions, job creations, calls
//! (succeeding or failing), completions (both statuses, repeated) and expiries across teams,
//! checked after every step against a plain in-memory model of what the balances must be.
//!
//! The sequences come from `proptest-state-machine`, so a failing sequence is shrunk to a minimal
//! one before it is reported. Every case gets teams of its own (created in `init_test`), so its
//! starting balances are exactly the model's initial state whatever earlier cases left behind.
//! `model` holds the reference model; this file runs the real service against it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use tokio::runtime::Handle;

use crate::helpers::app::assert_ledger_consistent;
use crate::helpers::stack::{Stack, chat, eventually, spawn_stack};

/// Cases and transitions per case: as long a run (about two minutes here) as the hand-rolled
/// walk of a thousand sequences of eight steps that this test replaced; every case also creates
/// its own teams.
const CASES: u32 = 640;
const MAX_TRANSITIONS: usize = 8;
const TEAMS: usize = 3;
const ORG: &str = "org_ledger_model";
const GROUPS: [(&str, &[&str]); 2] = [("ChatAgent", &["gpt-4o"]), ("Broken", &["bad-400"])];

mod model;

use model::{Expected, Ledger, Transition};

/// The stack the cases run against. The trait's functions take no context, so it is handed to
/// them through the thread that runs the cases.
struct Harness {
    runtime: Handle,
    stack: Arc<Stack>,
    next_case: AtomicUsize,
}

thread_local! {
    static HARNESS: std::cell::RefCell<Option<Arc<Harness>>> = const { std::cell::RefCell::new(None) };
}

/// The real service for one case: its teams (id and key) and the ids of the jobs it created,
/// in the model's order.
struct LedgerUnderTest {
    harness: Arc<Harness>,
    teams: Vec<(String, String)>,
    jobs: Vec<String>,
}

impl LedgerUnderTest {
    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.harness.runtime.block_on(future)
    }

    fn stack(&self) -> &Stack {
        &self.harness.stack
    }

    fn key_of_job(&self, model: &Ledger, job: usize) -> &str {
        &self.teams[model.jobs[job].team].1
    }
}

async fn balance(db: &PgPool, team: &str) -> (i64, i64, i64) {
    sqlx::query_as("select credits_allocated, credits_used, credits_reserved from credit_balances where team_id = $1")
        .bind(team)
        .fetch_one(db)
        .await
        .expect("balance")
}

impl StateMachineTest for LedgerUnderTest {
    type SystemUnderTest = Self;
    type Reference = Ledger;

    fn init_test(model: &Ledger) -> Self {
        let harness = HARNESS.with(|h| h.borrow().clone()).expect("harness set");
        let case = harness.next_case.fetch_add(1, Ordering::Relaxed);
        let names: Vec<&str> = GROUPS.iter().map(|(name, _)| *name).collect();
        let teams = harness.runtime.block_on(async {
            let mut teams = Vec::new();
            for (index, team) in model.teams.iter().enumerate() {
                let team_id = format!("team_m{case}_{index}");
                let created = harness
                    .stack
                    .app
                    .create_team(ORG, &team_id, &names, team.allocated)
                    .await;
                let key = created["virtual_key"].as_str().expect("key").to_owned();
                teams.push((team_id, key));
            }
            teams
        });
        Self {
            harness,
            teams,
            jobs: Vec::new(),
        }
    }

    fn apply(mut sut: Self, model: &Ledger, transition: Transition) -> Self {
        let expected = model.expected;
        let harness = Arc::clone(&sut.harness);
        let stack = &harness.stack;
        let outcome = match transition {
            Transition::AddCredits { team, amount } => {
                let team_id = &sut.teams[team].0;
                let response = sut.block_on(
                    stack
                        .app
                        .admin(Method::POST, &format!("/api/credits/teams/{team_id}/add"))
                        .json(&json!({"credits_amount": amount}))
                        .send(),
                );
                Expected::Status(response.expect("add").status())
            }
            Transition::CreateJob { team } => {
                let (team_id, key) = &sut.teams[team];
                let (status, job_id) = sut.block_on(async {
                    let response = stack
                        .app
                        .with_key(key, Method::POST, "/api/jobs/create")
                        .json(&json!({"team_id": team_id, "job_type": "model"}))
                        .send()
                        .await
                        .expect("create");
                    let status = response.status();
                    let body: serde_json::Value = response.json().await.expect("json");
                    (status, body["job_id"].as_str().map(str::to_owned))
                });
                if status == StatusCode::OK {
                    sut.jobs.push(job_id.expect("job_id"));
                }
                Expected::Status(status)
            }
            Transition::Call { job, fail } => {
                let group = if fail { "Broken" } else { "ChatAgent" };
                let key = sut.key_of_job(model, job);
                let response =
                    sut.block_on(stack.llm_call(key, &sut.jobs[job], chat(group, "model step")));
                Expected::Status(response.status())
            }
            Transition::Complete { job, settlement } => {
                let key = sut.key_of_job(model, job);
                let response =
                    sut.block_on(stack.complete(key, &sut.jobs[job], settlement.status()));
                Expected::Status(response.status())
            }
            Transition::Expire { job } => sut.block_on(expire(stack, &sut.jobs[job], expected)),
        };
        assert_eq!(
            outcome, expected,
            "the service's answer differs from the model"
        );
        sut
    }

    fn check_invariants(sut: &Self, model: &Ledger) {
        for ((team_id, _), team) in sut.teams.iter().zip(&model.teams) {
            assert_eq!(
                sut.block_on(balance(&sut.stack().app.db, team_id)),
                (team.allocated, team.used, team.reserved),
                "balance of {team_id} differs from the model"
            );
        }
    }

    fn teardown(sut: Self, _: Ledger) {
        for (team_id, _) in &sut.teams {
            sut.block_on(assert_ledger_consistent(&sut.stack().app.db, team_id));
        }
    }
}

/// Ages the job past its TTL and runs one reconciler pass; `JobExpired` once the job's status
/// is `expired` when the model expects that, else `Nothing`.
async fn expire(stack: &Stack, job_id: &str, expected: Expected) -> Expected {
    sqlx::query("update jobs set expires_at = now() - interval '1 second' where job_id = $1::uuid")
        .bind(job_id)
        .execute(&stack.app.db)
        .await
        .expect("age");
    let queue = stack.queue();
    let settings = saasllm_worker::ReconcilerSettings {
        interval: std::time::Duration::from_secs(1),
        grace: std::time::Duration::from_secs(60),
    };
    saasllm_worker::reconcile_pass(&stack.app.db, &queue, settings)
        .await
        .expect("pass");
    if expected != Expected::JobExpired {
        return Expected::Nothing;
    }
    // The worker's own reconciler may hold the job (skip locked) and commit a moment later.
    let expired = eventually(std::time::Duration::from_secs(5), || async {
        sqlx::query_scalar::<_, String>("select status from jobs where job_id = $1::uuid")
            .bind(job_id)
            .fetch_one(&stack.app.db)
            .await
            .expect("status")
            == "expired"
    })
    .await;
    if expired {
        Expected::JobExpired
    } else {
        Expected::Nothing
    }
}

/// The runner's seed: `LEDGER_MODEL_SEED` to explore other sequences, else a fixed one so that
/// every run checks the same cases.
fn seeded_rng() -> TestRng {
    let seed: u64 = std::env::var("LEDGER_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut bytes = [0_u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_ledger_matches_a_simple_model_over_random_sequences(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    stack.app.create_org(ORG).await;
    for (name, models) in GROUPS {
        stack.app.create_group(name, models).await;
    }
    let harness = Arc::new(Harness {
        runtime: Handle::current(),
        stack: Arc::new(stack),
        next_case: AtomicUsize::new(0),
    });
    // The cases block on the test's runtime from a thread of their own, while this task awaits
    // them and so keeps the runtime driving the stack.
    let result = tokio::task::spawn_blocking(move || {
        HARNESS.with(|h| *h.borrow_mut() = Some(harness));
        let config = Config {
            cases: CASES,
            failure_persistence: None,
            // Each shrink step replays a sequence against the database; bound the search.
            max_shrink_iters: 1_024,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config.clone(), seeded_rng());
        runner.run(
            &Ledger::sequential_strategy(1..=MAX_TRANSITIONS),
            |(initial, transitions, seen)| {
                LedgerUnderTest::test_sequential(config.clone(), initial, transitions, seen);
                Ok(())
            },
        )
    })
    .await
    .expect("cases ran");
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (deductions, expired): (i64, i64) = sqlx::query_as(
        "select (select count(*) from credit_transactions where transaction_type = 'deduction'),
                (select count(*) from jobs where status = 'expired')",
    )
    .fetch_one(&db)
    .await
    .expect("counts");
    assert!(
        deductions > 0 && expired > 0,
        "the sequences exercised charges and expiries"
    );
}
