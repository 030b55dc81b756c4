//! The call queue in Redis: a list of call ids, pushed on the left and popped on the right, so
//! it is first in, first out. It holds ids only; PostgreSQL holds the calls. A lost id is found
//! again by the reconciler and a duplicate one is dropped by the worker's guarded claim.

use std::time::Duration;

use redis::AsyncCommands;
use uuid::Uuid;

use crate::redis_conn::RedisHandle;

/// Ids pushed per LPUSH, so a bulk push never builds one giant command.
const PUSH_CHUNK: usize = 1_000;

/// The queue of one deployment (`QUEUE_NAME`).
#[derive(Clone)]
pub struct CallQueue {
    redis: RedisHandle,
    key: String,
}

impl CallQueue {
    pub fn new(redis: RedisHandle) -> Self {
        let key = format!("{}:calls", redis.namespace);
        Self { redis, key }
    }

    /// Appends call ids.
    pub async fn push(&self, ids: &[Uuid]) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection().await?;
        for chunk in ids.chunks(PUSH_CHUNK) {
            let values: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
            let _: usize = conn.lpush(&self.key, values).await?;
        }
        Ok(())
    }

    /// The id the next pop will return, if any.
    pub async fn next_in_line(&self) -> redis::RedisResult<Option<Uuid>> {
        let mut conn = self.redis.connection().await?;
        let next: Option<String> = conn.lindex(&self.key, -1).await?;
        Ok(next.and_then(|s| s.parse().ok()))
    }

    /// Number of ids waiting.
    pub async fn len(&self) -> redis::RedisResult<usize> {
        let mut conn = self.redis.connection().await?;
        conn.llen(&self.key).await
    }

    /// A consumer with a connection of its own.
    pub async fn consumer(&self) -> redis::RedisResult<QueueConsumer> {
        Ok(QueueConsumer {
            conn: self
                .redis
                .dedicated_connection(Duration::from_secs(10))
                .await?,
            key: self.key.clone(),
        })
    }
}

/// Pops ids, blocking in Redis while the queue is empty (no polling).
pub struct QueueConsumer {
    conn: redis::aio::MultiplexedConnection,
    key: String,
}

impl QueueConsumer {
    /// Waits up to `wait` for the next id. Malformed entries are skipped.
    pub async fn pop(&mut self, wait: Duration) -> redis::RedisResult<Option<Uuid>> {
        let popped: Option<(String, String)> =
            self.conn.brpop(&self.key, wait.as_secs_f64()).await?;
        Ok(popped.and_then(|(_, id)| id.parse().ok()))
    }
}
