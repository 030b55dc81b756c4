//! The one integration-test binary: real PostgreSQL (a fresh database per test) and real Redis.

mod helpers;

mod auth;
mod batch;
mod budget_bounds;
mod budget_property;
mod calls;
mod credit_races;
mod credits;
mod fairness;
mod group_commit;
mod group_commit_failures;
mod hardening;
mod health;
mod hot_updates;
mod idempotency;
mod job_races;
mod jobs;
mod ledger_model;
mod lock_order;
mod model_groups;
mod nul_bytes;
mod openai;
mod openapi;
mod organizations;
mod queue;
mod reconciler_turns;
mod redis_cluster;
mod request_errors;
mod resilience;
mod schema_bounds;
mod streaming_resilience;
mod teams;
mod usage;
mod webhook_targets;
mod webhooks;
