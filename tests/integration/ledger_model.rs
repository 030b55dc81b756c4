//! Model-based test of the credit ledger: random sequences of credit additions, job creations,
//! calls (succeeding or failing), completions (both statuses, repeated) and expiries across
//! teams, checked after every step against a plain in-memory model of what the balances must be.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::app::assert_ledger_consistent;
use crate::helpers::stack::{Stack, chat, eventually, spawn_stack};

const CASES: u64 = 1_000;
const STEPS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq)]
enum JobState {
    Open,
    Settled,
}

#[derive(Debug, Default)]
struct TeamModel {
    allocated: i64,
    used: i64,
    reserved: i64,
}

#[derive(Debug)]
struct JobModel {
    team: usize,
    id: String,
    state: JobState,
    failed_call: bool,
    settled_as: Option<&'static str>,
}

async fn balance(db: &PgPool, team: &str) -> (i64, i64, i64) {
    sqlx::query_as("select credits_allocated, credits_used, credits_reserved from credit_balances where team_id = $1")
        .bind(team)
        .fetch_one(db)
        .await
        .expect("balance")
}

async fn run_case(stack: &Stack, keys: &[(String, String)], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut teams: Vec<TeamModel> = Vec::new();
    for (team, _) in keys {
        let (allocated, used, reserved) = balance(&stack.app.db, team).await;
        teams.push(TeamModel {
            allocated,
            used,
            reserved,
        });
    }
    let mut jobs: Vec<JobModel> = Vec::new();
    let mut trace: Vec<String> = Vec::new();
    for step in 0..STEPS {
        let team = rng.random_range(0..keys.len());
        let (team_id, key) = (&keys[team].0, &keys[team].1);
        let action = rng.random_range(0..6);
        trace.push(format!(
            "step {step}: team {team} action {action} jobs {:?}",
            jobs.iter()
                .map(|j| (j.team, j.state, j.failed_call, j.settled_as))
                .collect::<Vec<_>>()
        ));
        match action {
            0 => {
                let amount = rng.random_range(1..3);
                let response = stack
                    .app
                    .admin(Method::POST, &format!("/api/credits/teams/{team_id}/add"))
                    .json(&json!({"credits_amount": amount}))
                    .send()
                    .await
                    .expect("add");
                assert_eq!(response.status(), StatusCode::OK, "seed {seed} step {step}");
                teams[team].allocated += amount;
            }
            1 | 2 => {
                let response = stack
                    .app
                    .with_key(key, Method::POST, "/api/jobs/create")
                    .json(&json!({"team_id": team_id, "job_type": "model"}))
                    .send()
                    .await
                    .expect("create");
                let model = &mut teams[team];
                if model.allocated - model.used - model.reserved >= 1 {
                    assert_eq!(response.status(), StatusCode::OK, "seed {seed} step {step}");
                    let body: serde_json::Value = response.json().await.expect("json");
                    model.reserved += 1;
                    jobs.push(JobModel {
                        team,
                        id: body["job_id"].as_str().expect("id").to_owned(),
                        state: JobState::Open,
                        failed_call: false,
                        settled_as: None,
                    });
                } else {
                    assert_eq!(
                        response.status(),
                        StatusCode::PAYMENT_REQUIRED,
                        "seed {seed} step {step}"
                    );
                }
            }
            3 if !jobs.is_empty() => {
                let index = rng.random_range(0..jobs.len());
                let fail = rng.random_bool(0.3);
                let job = &mut jobs[index];
                let key = &keys[job.team].1;
                let group = if fail { "Broken" } else { "ChatAgent" };
                let response = stack
                    .llm_call(key, &job.id, chat(group, "model step"))
                    .await;
                match (job.state, fail) {
                    (JobState::Open, false) => {
                        assert_eq!(response.status(), StatusCode::OK, "seed {seed}")
                    }
                    (JobState::Open, true) => {
                        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "seed {seed}");
                        job.failed_call = true;
                    }
                    (JobState::Settled, _) => {
                        assert_eq!(response.status(), StatusCode::CONFLICT, "seed {seed}")
                    }
                }
            }
            4 if !jobs.is_empty() => {
                let index = rng.random_range(0..jobs.len());
                let status = if rng.random_bool(0.7) {
                    "completed"
                } else {
                    "failed"
                };
                let job = &mut jobs[index];
                let key = &keys[job.team].1;
                let response = stack.complete(key, &job.id, status).await;
                match (job.state, job.settled_as) {
                    (JobState::Open, _) => {
                        assert_eq!(response.status(), StatusCode::OK, "seed {seed} step {step}");
                        let model = &mut teams[job.team];
                        model.reserved -= 1;
                        if status == "completed" && !job.failed_call {
                            model.used += 1;
                        }
                        job.state = JobState::Settled;
                        job.settled_as = Some(status);
                    }
                    (JobState::Settled, Some(previous)) if previous == status => {
                        assert_eq!(response.status(), StatusCode::OK, "seed {seed} step {step}");
                    }
                    (JobState::Settled, _) => {
                        assert_eq!(
                            response.status(),
                            StatusCode::CONFLICT,
                            "seed {seed} step {step}"
                        );
                    }
                }
            }
            _ if !jobs.is_empty() => {
                // Expiry: age a job past its TTL and run one reconciler pass.
                let index = rng.random_range(0..jobs.len());
                let job = &mut jobs[index];
                sqlx::query("update jobs set expires_at = now() - interval '1 second' where job_id = $1::uuid")
                    .bind(&job.id)
                    .execute(&stack.app.db)
                    .await
                    .expect("age");
                let queue = saasllm_shared::queue::CallQueue::new(stack.redis.clone());
                let settings = saasllm_worker::ReconcilerSettings {
                    interval: std::time::Duration::from_secs(1),
                    grace: std::time::Duration::from_secs(60),
                };
                saasllm_worker::reconcile_pass(&stack.app.db, &queue, settings)
                    .await
                    .expect("pass");
                // The worker's own reconciler may hold the job (skip locked) and commit a moment later.
                let job_id = job.id.clone();
                let expired = job.state == JobState::Settled
                    || eventually(std::time::Duration::from_secs(5), || async {
                        sqlx::query_scalar::<_, String>(
                            "select status from jobs where job_id = $1::uuid",
                        )
                        .bind(&job_id)
                        .fetch_one(&stack.app.db)
                        .await
                        .expect("status")
                            == "expired"
                    })
                    .await;
                assert!(
                    expired || job.state == JobState::Settled,
                    "seed {seed}: job not expired"
                );
                if job.state == JobState::Open {
                    teams[job.team].reserved -= 1;
                    job.state = JobState::Settled;
                    job.settled_as = Some("expired");
                }
            }
            _ => {}
        }
        for (index, (team_id, _)) in keys.iter().enumerate() {
            let model = &teams[index];
            assert_eq!(
                balance(&stack.app.db, team_id).await,
                (model.allocated, model.used, model.reserved),
                "seed {seed} step {step}: balance of {team_id} differs from the model\n{}",
                trace.join("\n")
            );
        }
    }
    for (team_id, _) in keys {
        assert_ledger_consistent(&stack.app.db, team_id).await;
    }
}

#[sqlx::test(migrator = "saasllm_shared::MIGRATOR")]
async fn the_ledger_matches_a_simple_model_over_a_thousand_random_sequences(db: PgPool) {
    let stack = spawn_stack(db.clone()).await;
    let groups: &[(&str, &[&str])] = &[("ChatAgent", &["gpt-4o"]), ("Broken", &["bad-400"])];
    let mut keys = Vec::new();
    for team in ["team_p1", "team_p2", "team_p3"] {
        keys.push((team.to_owned(), stack.team(team, 2, groups).await));
    }
    let base_seed: u64 = std::env::var("LEDGER_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut seen_states: HashMap<&'static str, usize> = HashMap::new();
    for case in 0..CASES {
        run_case(&stack, &keys, base_seed.wrapping_add(case)).await;
        *seen_states.entry("cases").or_default() += 1;
    }
    assert_eq!(seen_states["cases"], CASES as usize);
    let (deductions, expired): (i64, i64) = sqlx::query_as(
        "select (select count(*) from credit_transactions where transaction_type = 'deduction'),
                (select count(*) from jobs where status = 'expired')",
    )
    .fetch_one(&db)
    .await
    .expect("counts");
    assert!(
        deductions > 0 && expired > 0,
        "the random walk exercised charges and expiries"
    );
}
