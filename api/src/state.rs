//! What every handler can reach: the pool, Redis, and settings fixed at start.

use std::sync::Arc;

use std::time::Duration;

use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::net_policy::TargetPolicy;
use saasllm_shared::job_credits::JobCredits;
use saasllm_shared::queue::CallQueue;
use saasllm_shared::redis_conn::RedisHandle;
use saasllm_worker::Engine;
use sqlx::PgPool;

use crate::budget::Budgets;
use crate::directory::Directory;
use crate::notify::Notifier;

/// Shared application state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub redis: RedisHandle,
    pub queue: CallQueue,
    pub notifier: Arc<Notifier>,
    /// Keys, teams and grants, cached until PostgreSQL announces a change.
    pub directory: Arc<Directory>,
    /// The OpenAI-compatible path's budget slices and its queue of spend to write.
    pub budgets: Arc<Budgets>,
    /// Job creates and settlements, served in per-team groups.
    pub job_credits: JobCredits,
    /// The OpenAI-compatible upstream (passthrough) and the model chain over it (streamed job
    /// calls), with the process's retry policy and model cooldowns.
    pub engine: Engine,
    pub settings: Arc<Settings>,
}

/// Settings the handlers need, derived once from the configuration.
pub struct Settings {
    /// SHA-256 of the admin key; compared in constant time.
    pub admin_key_hash: Vec<u8>,
    pub usd_per_credit: MicroUsd,
    pub job_ttl: Duration,
    pub sync_call_timeout: Duration,
    pub complete_wait: Duration,
    pub webhook_targets: TargetPolicy,
    /// How long a console sign-in lasts.
    pub console_session_ttl: Duration,
}
