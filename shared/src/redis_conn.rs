//! A Redis connection that is made on first use and re-made after failures, so a process starts
//! (and reports itself unhealthy) while Redis is down instead of refusing to start.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::config::RedisConfig;

/// Shared handle; cheap to clone.
#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    manager: std::sync::Arc<OnceCell<ConnectionManager>>,
    /// Key prefix of this deployment.
    pub namespace: String,
}

impl RedisHandle {
    /// Validates the URL; connects lazily.
    pub fn new(config: &RedisConfig) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.expose_secret())
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))?;
        Ok(Self {
            client,
            manager: Default::default(),
            namespace: config.queue_name.clone(),
        })
    }

    /// A multiplexed connection that reconnects by itself after it has once connected.
    pub async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(manager.clone())
    }

    /// `PING`, bounded in time.
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let attempt = async {
            let mut conn = self.connection().await.map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| "timed out".to_owned())?
    }
}

impl RedisHandle {
    /// A connection of its own, for blocking commands (BRPOP) that would stall a shared one.
    pub async fn dedicated_connection(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}
