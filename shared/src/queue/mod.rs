//! The call queue in Redis, shared fairly between teams.
//!
//! Each team has its own FIFO list of call ids (pushed on the left, popped on the right), and a
//! ring lists the teams that have calls waiting. A worker slot takes the team at the ring's tail,
//! moves it to the head, and pops that team's oldest call: teams are served round-robin, so one
//! team's backlog of 100,000 calls delays another team's single call by at most one call per busy
//! worker slot, not by the backlog. The dispatch step also enforces the team's limits (calls in
//! flight, requests and tokens per minute): a team at its limit is passed over and its calls wait.
//!
//! Redis holds ids only; PostgreSQL holds the calls. A lost id is found again by the reconciler
//! and a duplicate one is dropped by the worker's guarded claim. Every step is one Lua script, so
//! it is atomic however many workers and API processes share the queue.
//!
//! Every key of a deployment starts with `{QUEUE_NAME}`: on Redis Cluster that hash tag puts all
//! of them in one slot, so a script may touch any of them. Each script is passed one key of the
//! deployment (which routes it to the slot's node) and builds the others from that key's tag.
//!
//! The pieces: [`keys`] names the keys, [`enqueue`] puts ids in line, [`dispatch`] takes them
//! fairly, and [`team_slots`] keeps the per-team limits that dispatch and the synchronous paths
//! share.

mod dispatch;
mod enqueue;
mod keys;
pub mod team_slots;

use std::time::Duration;

use uuid::Uuid;

use crate::redis_conn::RedisHandle;
pub use dispatch::QueueConsumer;
use keys::QueueKeys;

/// A call handed to a worker slot by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    pub call_id: Uuid,
    pub team_id: String,
    /// The call holds one of the team's concurrency slots, to be freed when it ends.
    pub holds_slot: bool,
    /// The team has a tokens-per-minute limit: the call's tokens are counted when it ends.
    pub counts_tokens: bool,
}

impl Dispatched {
    /// Whether the call holds anything of its team's limits to give back when it ends.
    pub fn holds_limits(&self) -> bool {
        self.holds_slot || self.counts_tokens
    }
}

/// The queue of one deployment (`QUEUE_NAME`).
#[derive(Clone)]
pub struct CallQueue {
    redis: RedisHandle,
    keys: QueueKeys,
}

impl CallQueue {
    pub fn new(redis: RedisHandle) -> Self {
        let keys = QueueKeys::of(&redis.namespace);
        Self { redis, keys }
    }

    /// `{QUEUE_NAME}`: how every key of this queue starts (on Redis Cluster, their hash tag).
    pub fn key_prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// A consumer with a connection of its own (it blocks in Redis while the queue is empty).
    /// Calls it takes hold a concurrency slot for `hold` unless ended or extended.
    pub async fn consumer(&self, hold: Duration) -> redis::RedisResult<QueueConsumer> {
        Ok(QueueConsumer {
            conn: self
                .redis
                .dedicated_connection(Duration::from_secs(10))
                .await?,
            keys: self.keys.clone(),
            hold,
        })
    }
}
