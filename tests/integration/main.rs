//! The one integration-test binary: real PostgreSQL (a fresh database per test) and real Redis.
//!
//! The tests read and arrange the database with runtime `sqlx::query(...)`, not the compile-checked
//! macros the service uses: a test's SQL often writes states the service never writes (a lapsed
//! lease, a forged row, a broken foreign value) to see what the code does with them, and a test
//! whose SQL no longer matches the schema fails at once when it runs, which is the check the
//! macros would give. Keeping it out of `.sqlx/` also keeps that data to the statements that ship.

mod helpers;

mod admin_listings;
mod admin_roles;
mod audit_log;
mod auth;
mod batch;
mod budget_bounds;
mod budget_property;
mod budget_slices;
mod calls;
mod console;
mod console_actions;
mod credit_races;
mod credits;
mod directory_cache;
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
mod openai_batches;
mod openai_embeddings;
mod openai_files;
mod openapi;
mod organizations;
mod queue;
mod reconciler_turns;
mod redis_cluster;
mod refills;
mod request_errors;
mod resilience;
mod schema_bounds;
mod streaming_resilience;
mod team_alerts;
mod teams;
mod usage;
mod usage_totals;
mod usd_format;
mod webhook_targets;
mod webhooks;
