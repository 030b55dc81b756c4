//! Shared core of SaaS LiteLLM: configuration, domain types, every SQL statement, and the Redis
//! connection used by both the API and the worker.

pub mod config;
pub mod db;
pub mod domain;
pub mod group_commit;
pub mod job_credits;
pub mod queue;
pub mod redis_conn;
pub mod shutdown;
pub mod telemetry;

pub use db::MIGRATOR;
