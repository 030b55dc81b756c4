//! What every handler can reach: the pool, Redis, and settings fixed at start.

use std::sync::Arc;

use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::redis_conn::RedisHandle;
use sqlx::PgPool;

/// Shared application state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub redis: RedisHandle,
    pub settings: Arc<Settings>,
}

/// Settings the handlers need, derived once from the configuration.
pub struct Settings {
    /// SHA-256 of the admin key; compared in constant time.
    pub admin_key_hash: Vec<u8>,
    pub usd_per_credit: MicroUsd,
}
