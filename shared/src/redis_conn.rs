//! A Redis connection that is made on first use and re-made after failures, so a process starts
//! (and reports itself unhealthy) while Redis is down instead of refusing to start. It reaches
//! either a standalone Redis or a Redis Cluster (`REDIS_CLUSTER`); callers see one connection
//! type either way, and the cluster client routes each command by its key.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::config::RedisConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const RETRIES: u32 = 2;

/// Shared handle; cheap to clone.
#[derive(Clone)]
pub struct RedisHandle {
    client: Client,
    shared: std::sync::Arc<OnceCell<RedisConnection>>,
    /// `QUEUE_NAME`: the name this deployment's keys are built from.
    pub namespace: String,
}

#[derive(Clone)]
enum Client {
    Standalone(redis::Client),
    /// Boxed: a cluster client is twice the size of a standalone one.
    Cluster(Box<ClusterClient>),
}

/// A connection to a standalone Redis or to a Redis Cluster.
#[derive(Clone)]
pub enum RedisConnection {
    /// The shared standalone connection, which reconnects by itself.
    Managed(ConnectionManager),
    /// A standalone connection of its own.
    Dedicated(MultiplexedConnection),
    /// A cluster connection: one connection per node, re-made and re-routed by the client.
    Cluster(ClusterConnection),
}

impl RedisHandle {
    /// Validates the settings; connects lazily.
    pub fn new(config: &RedisConfig) -> anyhow::Result<Self> {
        check_queue_name(&config.queue_name)?;
        let url = config.url.expose_secret();
        let client = match config.cluster {
            false => Client::Standalone(standalone_client(url)?),
            true => Client::Cluster(Box::new(cluster_client(url)?)),
        };
        Ok(Self {
            client,
            shared: Default::default(),
            namespace: config.queue_name.clone(),
        })
    }

    /// The shared multiplexed connection, which reconnects by itself after it has once connected.
    pub async fn connection(&self) -> redis::RedisResult<RedisConnection> {
        let shared = self
            .shared
            .get_or_try_init(|| async {
                match &self.client {
                    Client::Standalone(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(CONNECT_TIMEOUT))
                            .set_response_timeout(Some(RESPONSE_TIMEOUT))
                            .set_number_of_retries(RETRIES as usize);
                        ConnectionManager::new_with_config(client.clone(), config)
                            .await
                            .map(RedisConnection::Managed)
                    }
                    Client::Cluster(client) => client
                        .get_async_connection()
                        .await
                        .map(RedisConnection::Cluster),
                }
            })
            .await?;
        Ok(shared.clone())
    }

    /// A connection of its own, for blocking commands (BRPOP) that would stall a shared one.
    pub async fn dedicated_connection(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<RedisConnection> {
        match &self.client {
            Client::Standalone(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(response_timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(RedisConnection::Dedicated)
            }
            Client::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(response_timeout);
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(RedisConnection::Cluster)
            }
        }
    }

    /// `PING` (every node of a cluster), bounded in time.
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

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Managed(conn) => conn.req_packed_command(cmd),
            Self::Dedicated(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Managed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Dedicated(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(conn) => conn.get_db(),
            Self::Dedicated(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The queue wraps `QUEUE_NAME` in braces as the hash tag of all its keys: an empty name would
/// make an empty tag, which Redis Cluster ignores (the keys would spread over slots), and a brace
/// inside would end the tag early.
fn check_queue_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        anyhow::bail!("QUEUE_NAME must not be empty");
    }
    if name.contains(['{', '}']) {
        anyhow::bail!(
            "QUEUE_NAME must not contain '{{' or '}}': the queue wraps it in braces as the hash tag of its Redis keys"
        );
    }
    Ok(())
}

fn standalone_client(url: &str) -> anyhow::Result<redis::Client> {
    if url.contains(',') {
        anyhow::bail!(
            "REDIS_URL lists several URLs, which is only for Redis Cluster: set REDIS_CLUSTER=true, or give one URL"
        );
    }
    redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))
}

/// A cluster client from comma-separated seed node URLs.
fn cluster_client(urls: &str) -> anyhow::Result<ClusterClient> {
    let mut seeds = Vec::new();
    for (position, url) in urls.split(',').map(str::trim).enumerate() {
        if url.is_empty() {
            anyhow::bail!(
                "REDIS_URL (with REDIS_CLUSTER=true) has an empty entry at position {}: give seed node URLs separated by commas",
                position + 1
            );
        }
        let seed = url.into_connection_info().map_err(|e| {
            anyhow::anyhow!(
                "REDIS_URL entry {} is not a valid Redis URL: {e}",
                position + 1
            )
        })?;
        seeds.push(seed);
    }
    ClusterClient::builder(seeds)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(RETRIES)
        .build()
        .map_err(|e| anyhow::anyhow!("REDIS_URL does not describe a usable Redis Cluster: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, cluster: bool, queue_name: &str) -> RedisConfig {
        RedisConfig {
            cluster,
            ..RedisConfig::standalone(url, queue_name)
        }
    }

    fn refusal(config: &RedisConfig) -> String {
        match RedisHandle::new(config) {
            Ok(_) => panic!("settings accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cluster_mode_takes_several_seed_urls() {
        let seeds = "redis://10.0.0.1:7000, redis://10.0.0.2:7000,redis://10.0.0.3:7000";
        assert!(RedisHandle::new(&config(seeds, true, "saasllm")).is_ok());
        assert!(RedisHandle::new(&config("redis://10.0.0.1:7000", true, "saasllm")).is_ok());
    }

    #[test]
    fn several_urls_without_cluster_mode_are_refused_with_the_setting_to_change() {
        let error = refusal(&config("redis://a:6379,redis://b:6379", false, "saasllm"));
        assert!(error.contains("REDIS_CLUSTER=true"), "{error}");
    }

    #[test]
    fn malformed_seed_lists_are_refused_naming_the_entry() {
        let error = refusal(&config("redis://a:7000,,redis://b:7000", true, "q"));
        assert!(error.contains("empty entry at position 2"), "{error}");
        let error = refusal(&config("redis://a:7000,http://b:7000", true, "q"));
        assert!(
            error.contains("entry 2 is not a valid Redis URL"),
            "{error}"
        );
    }

    #[test]
    fn queue_names_that_break_the_hash_tag_are_refused() {
        for name in ["", "a{b", "a}b", "{saasllm}"] {
            let error = refusal(&config("redis://127.0.0.1:6379", false, name));
            assert!(error.starts_with("QUEUE_NAME must not"), "{name}: {error}");
        }
    }
}
