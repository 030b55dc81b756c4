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
//! it is atomic however many workers and API processes share the queue. The scripts name keys
//! that they build from the namespace and team, so the queue needs a standalone Redis (or one
//! cluster slot), not Redis Cluster.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use crate::domain::limits::TeamLimits;
use crate::redis_conn::RedisHandle;

/// Ids pushed per script call, so a bulk push never builds one giant command.
const PUSH_CHUNK: usize = 1_000;

/// Wake-up tokens kept at most: enough to wake every idle slot of a large fleet.
const WAKE_CAP: usize = 1_024;

/// Appends ids to a team's list, puts the team in the ring if it was not, records its limits, and
/// leaves wake-up tokens for idle workers.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ns, team, limits, wake_cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call('HSET', ns .. ':limits', team, limits)
local ids = {}
for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return 0 end
redis.call('LPUSH', ns .. ':calls:team:' .. team, unpack(ids))
if redis.call('SADD', ns .. ':calls:active', team) == 1 then
  redis.call('LPUSH', ns .. ':calls:teams', team)
end
local tokens = {}
for i = 1, math.min(#ids, wake_cap) do tokens[i] = '1' end
redis.call('LPUSH', ns .. ':calls:wake', unpack(tokens))
redis.call('LTRIM', ns .. ':calls:wake', 0, wake_cap - 1)
return #ids
",
    )
});

/// Shared by the dispatch and admission scripts: the team's limits and whether it may start one
/// more request now. Returns 0 when it may, else the milliseconds after which to look again.
const LIMIT_CHECK: &str = r"
local function parse_limits(text)
  if not text then return 0, 0, 0 end
  local c, r, t = string.match(text, '(%d+) (%d+) (%d+)')
  return tonumber(c) or 0, tonumber(r) or 0, tonumber(t) or 0
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function blocked_for(ns, team, conc, rpm, tpm, now)
  if conc > 0 then
    local inflight = ns .. ':inflight:' .. team
    redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
    if redis.call('ZCARD', inflight) >= conc then return 1000 end
  end
  local window = ns .. ':rate:' .. team .. ':' .. math.floor(now / 60000)
  local next_minute = 60000 - (now % 60000)
  if rpm > 0 and tonumber(redis.call('GET', window .. ':requests') or '0') >= rpm then
    return next_minute
  end
  if tpm > 0 and tonumber(redis.call('GET', window .. ':tokens') or '0') >= tpm then
    return next_minute
  end
  return 0
end
local function start_request(ns, team, member, conc, rpm, now, hold_ms)
  if conc > 0 then redis.call('ZADD', ns .. ':inflight:' .. team, now + hold_ms, member) end
  if rpm > 0 then
    local key = ns .. ':rate:' .. team .. ':' .. math.floor(now / 60000) .. ':requests'
    redis.call('INCR', key)
    redis.call('EXPIRE', key, 120)
  end
end
";

/// Takes up to `max` calls, round-robin over the teams with calls waiting (one call per team per
/// turn), skipping teams at a limit. Returns a flat list of `call_id, team, flags` triples (flags:
/// `c` when the call holds a concurrency slot, `t` when its tokens count towards a per-minute
/// limit), empty when nothing can be taken. The walk ends once every team in the ring has been
/// passed over in a row, so a ring of blocked teams costs one pass.
static DISPATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{LIMIT_CHECK}
local ns, hold_ms, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ring, active = ns .. ':calls:teams', ns .. ':calls:active'
local now = now_ms()
local taken = {{}}
local passed = 0
while #taken < max * 3 do
  local teams = redis.call('LLEN', ring)
  if teams == 0 or passed >= teams then break end
  local team = redis.call('LMOVE', ring, ring, 'RIGHT', 'LEFT')
  local list = ns .. ':calls:team:' .. team
  if redis.call('LLEN', list) == 0 then
    redis.call('LREM', ring, 1, team)
    redis.call('SREM', active, team)
  else
    local conc, rpm, tpm = parse_limits(redis.call('HGET', ns .. ':limits', team))
    if blocked_for(ns, team, conc, rpm, tpm, now) == 0 then
      local id = redis.call('RPOP', list)
      start_request(ns, team, id, conc, rpm, now, hold_ms)
      local flags = ''
      if conc > 0 then flags = flags .. 'c' end
      if tpm > 0 then flags = flags .. 't' end
      taken[#taken + 1] = id
      taken[#taken + 1] = team
      taken[#taken + 1] = flags
      passed = 0
    else
      passed = passed + 1
    end
  end
end
return taken
"
    ))
});

/// Admits a request of a synchronous path against the team's limits: 0 when admitted (holding a
/// concurrency slot under `member` when `reserve` is 1), else milliseconds to wait.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{LIMIT_CHECK}
local ns, team, limits, member, reserve, hold_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local conc, rpm, tpm = parse_limits(limits)
local now = now_ms()
local wait = blocked_for(ns, team, conc, rpm, tpm, now)
if wait == 0 and reserve == '1' then start_request(ns, team, member, conc, rpm, now, hold_ms) end
return wait
"
    ))
});

/// Ends a request: frees its concurrency slot and adds its tokens to the team's minute.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ns, team, member, tokens = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call('ZREM', ns .. ':inflight:' .. team, member)
if tokens > 0 then
  local t = redis.call('TIME')
  local key = ns .. ':rate:' .. team .. ':' .. math.floor(tonumber(t[1]) / 60) .. ':tokens'
  redis.call('INCRBY', key, tokens)
  redis.call('EXPIRE', key, 120)
end
return 1
",
    )
});

/// Ids waiting over all teams.
static LENGTH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ns = ARGV[1]
local total = 0
for _, team in ipairs(redis.call('SMEMBERS', ns .. ':calls:active')) do
  total = total + redis.call('LLEN', ns .. ':calls:team:' .. team)
end
return total
",
    )
});

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

/// The queue of one deployment (`QUEUE_NAME`).
#[derive(Clone)]
pub struct CallQueue {
    redis: RedisHandle,
    namespace: String,
}

impl CallQueue {
    pub fn new(redis: RedisHandle) -> Self {
        let namespace = redis.namespace.clone();
        Self { redis, namespace }
    }

    /// Appends a team's call ids, in order, and records the team's current limits for dispatch.
    pub async fn push(
        &self,
        team_id: &str,
        limits: &TeamLimits,
        ids: &[Uuid],
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection().await?;
        let limits = limits.encode();
        for chunk in ids.chunks(PUSH_CHUNK) {
            let mut invocation = PUSH.prepare_invoke();
            invocation
                .arg(&self.namespace)
                .arg(team_id)
                .arg(&limits)
                .arg(WAKE_CAP);
            for id in chunk {
                invocation.arg(id.to_string());
            }
            let _: i64 = invocation.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Records teams' limits (the reconciler keeps Redis in step with PostgreSQL this way, also
    /// after Redis lost its data). Teams not listed keep what they had.
    pub async fn set_limits(&self, limits: &[(String, TeamLimits)]) -> redis::RedisResult<()> {
        if limits.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.connection().await?;
        let fields: Vec<(&str, String)> = limits
            .iter()
            .map(|(team, limits)| (team.as_str(), limits.encode()))
            .collect();
        conn.hset_multiple(format!("{}:limits", self.namespace), &fields)
            .await
    }

    /// The id a team's next pop will return, if any.
    pub async fn next_in_line(&self, team_id: &str) -> redis::RedisResult<Option<Uuid>> {
        let mut conn = self.redis.connection().await?;
        let next: Option<String> = conn.lindex(self.team_list(team_id), -1).await?;
        Ok(next.and_then(|s| s.parse().ok()))
    }

    /// Number of ids waiting, over all teams.
    pub async fn len(&self) -> redis::RedisResult<usize> {
        let mut conn = self.redis.connection().await?;
        LENGTH.arg(&self.namespace).invoke_async(&mut conn).await
    }

    /// Admits one request of a synchronous path against the team's limits. `Ok(None)` when
    /// admitted; with `reserve`, the request then holds a concurrency slot under `member` until
    /// [`CallQueue::finish`]. `Ok(Some(wait))` when the team is at a limit.
    pub async fn admit(
        &self,
        team_id: &str,
        limits: &TeamLimits,
        member: &str,
        reserve: bool,
        hold: Duration,
    ) -> redis::RedisResult<Option<Duration>> {
        if !limits.any() {
            return Ok(None);
        }
        let mut conn = self.redis.connection().await?;
        let wait_ms: u64 = ADMIT
            .arg(&self.namespace)
            .arg(team_id)
            .arg(limits.encode())
            .arg(member)
            .arg(if reserve { "1" } else { "0" })
            .arg(hold.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms)))
    }

    /// Ends a dispatched or admitted request: frees its concurrency slot and counts its tokens.
    pub async fn finish(&self, team_id: &str, member: &str, tokens: i64) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection().await?;
        let _: i64 = FINISH
            .arg(&self.namespace)
            .arg(team_id)
            .arg(member)
            .arg(tokens.max(0))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Keeps a long call's concurrency slot: without it the slot would lapse after `hold` and
    /// the team could exceed its limit.
    pub async fn extend_slot(
        &self,
        team_id: &str,
        member: &str,
        hold: Duration,
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection().await?;
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let until = secs * 1000 + micros / 1000 + hold.as_millis() as u64;
        redis::cmd("ZADD")
            .arg(format!("{}:inflight:{team_id}", self.namespace))
            .arg("XX")
            .arg(until)
            .arg(member)
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// A consumer with a connection of its own (it blocks in Redis while the queue is empty).
    /// Calls it takes hold a concurrency slot for `hold` unless ended or extended.
    pub async fn consumer(&self, hold: Duration) -> redis::RedisResult<QueueConsumer> {
        Ok(QueueConsumer {
            conn: self
                .redis
                .dedicated_connection(Duration::from_secs(10))
                .await?,
            namespace: self.namespace.clone(),
            hold,
        })
    }

    fn team_list(&self, team_id: &str) -> String {
        format!("{}:calls:team:{team_id}", self.namespace)
    }
}

/// Takes calls fairly, waiting in Redis for a wake-up while there is nothing to take (no polling
/// beyond one look per `wait`, which also notices teams whose limits have eased). One per worker
/// process: it takes calls in batches for all of the process's free slots.
pub struct QueueConsumer {
    conn: redis::aio::MultiplexedConnection,
    namespace: String,
    hold: Duration,
}

impl QueueConsumer {
    /// Up to `max` calls, waiting up to `wait` for a first one. Malformed entries are skipped.
    pub async fn take(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> redis::RedisResult<Vec<Dispatched>> {
        let taken = self.dispatch(max).await?;
        if !taken.is_empty() {
            return Ok(taken);
        }
        let _: Option<(String, String)> = self
            .conn
            .brpop(format!("{}:calls:wake", self.namespace), wait.as_secs_f64())
            .await?;
        self.dispatch(max).await
    }

    async fn dispatch(&mut self, max: usize) -> redis::RedisResult<Vec<Dispatched>> {
        let taken: Vec<String> = DISPATCH
            .arg(&self.namespace)
            .arg(self.hold.as_millis() as u64)
            .arg(max.max(1))
            .invoke_async(&mut self.conn)
            .await?;
        Ok(taken
            .chunks_exact(3)
            .filter_map(|entry| {
                Some(Dispatched {
                    call_id: entry[0].parse().ok()?,
                    team_id: entry[1].clone(),
                    holds_slot: entry[2].contains('c'),
                    counts_tokens: entry[2].contains('t'),
                })
            })
            .collect())
    }
}
