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

use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use crate::domain::limits::TeamLimits;
use crate::redis_conn::{RedisConnection, RedisHandle};

/// Ids pushed per script call, so a bulk push never builds one giant command.
const PUSH_CHUNK: usize = 1_000;

/// Wake-up tokens kept at most: enough to wake every idle slot of a large fleet.
const WAKE_CAP: usize = 1_024;

/// Opens every script: `ns` is the hash tag that starts the key passed as KEYS[1], the prefix of
/// every key of the deployment.
const KEY_PREFIX: &str = r"
local ns = string.match(KEYS[1], '^{[^{}]+}')
if not ns then return redis.error_reply('queue key without its hash tag: ' .. KEYS[1]) end
";

/// Appends ids to a team's list (KEYS[1]), puts the team in the ring if it was not, records its
/// limits, and leaves wake-up tokens for idle workers.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}
local team, limits, wake_cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('HSET', ns .. ':limits', team, limits)
local ids = {{}}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return 0 end
redis.call('LPUSH', KEYS[1], unpack(ids))
if redis.call('SADD', ns .. ':calls:active', team) == 1 then
  redis.call('LPUSH', ns .. ':calls:teams', team)
end
local tokens = {{}}
for i = 1, math.min(#ids, wake_cap) do tokens[i] = '1' end
redis.call('LPUSH', ns .. ':calls:wake', unpack(tokens))
redis.call('LTRIM', ns .. ':calls:wake', 0, wake_cap - 1)
return #ids
"
    ))
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
/// passed over in a row, so a ring of blocked teams costs one pass. KEYS[1] is the ring.
static DISPATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}{LIMIT_CHECK}
local hold_ms, max = tonumber(ARGV[1]), tonumber(ARGV[2])
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
/// concurrency slot under `member` when `reserve` is 1), else milliseconds to wait. KEYS[1] is the
/// team's in-flight set.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}{LIMIT_CHECK}
local team, limits, member, reserve, hold_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local conc, rpm, tpm = parse_limits(limits)
local now = now_ms()
local wait = blocked_for(ns, team, conc, rpm, tpm, now)
if wait == 0 and reserve == '1' then start_request(ns, team, member, conc, rpm, now, hold_ms) end
return wait
"
    ))
});

/// Ends a request: frees its concurrency slot (in KEYS[1], the team's in-flight set) and adds its
/// tokens to the team's minute.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}
local team, member, tokens = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], member)
if tokens > 0 then
  local t = redis.call('TIME')
  local key = ns .. ':rate:' .. team .. ':' .. math.floor(tonumber(t[1]) / 60) .. ':tokens'
  redis.call('INCRBY', key, tokens)
  redis.call('EXPIRE', key, 120)
end
return 1
"
    ))
});

/// Ids waiting over all teams. KEYS[1] is the set of teams with calls waiting.
static LENGTH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}
local total = 0
for _, team in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  total = total + redis.call('LLEN', ns .. ':calls:team:' .. team)
end
return total
"
    ))
});

/// Moves the end of a held concurrency slot (in KEYS[1], the team's in-flight set) to `hold`
/// milliseconds from now, by the clock of the node that holds the set; a slot already freed
/// stays free.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
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
                .key(self.keys.team_list(team_id))
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
        conn.hset_multiple(self.keys.limits(), &fields).await
    }

    /// The id a team's next pop will return, if any.
    pub async fn next_in_line(&self, team_id: &str) -> redis::RedisResult<Option<Uuid>> {
        let mut conn = self.redis.connection().await?;
        let next: Option<String> = conn.lindex(self.keys.team_list(team_id), -1).await?;
        Ok(next.and_then(|s| s.parse().ok()))
    }

    /// Number of ids waiting, over all teams.
    pub async fn len(&self) -> redis::RedisResult<usize> {
        let mut conn = self.redis.connection().await?;
        LENGTH
            .key(self.keys.active_teams())
            .invoke_async(&mut conn)
            .await
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
            .key(self.keys.inflight(team_id))
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
            .key(self.keys.inflight(team_id))
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
        let _: i64 = EXTEND
            .key(self.keys.inflight(team_id))
            .arg(member)
            .arg(hold.as_millis() as u64)
            .invoke_async(&mut conn)
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
            keys: self.keys.clone(),
            hold,
        })
    }
}

/// Names of the keys the Rust side passes to Redis; the scripts build the same names from the
/// prefix of the key they are given.
#[derive(Clone)]
struct QueueKeys {
    prefix: String,
}

impl QueueKeys {
    fn of(namespace: &str) -> Self {
        Self {
            prefix: format!("{{{namespace}}}"),
        }
    }

    fn ring(&self) -> String {
        format!("{}:calls:teams", self.prefix)
    }

    fn active_teams(&self) -> String {
        format!("{}:calls:active", self.prefix)
    }

    fn wake(&self) -> String {
        format!("{}:calls:wake", self.prefix)
    }

    fn limits(&self) -> String {
        format!("{}:limits", self.prefix)
    }

    fn team_list(&self, team_id: &str) -> String {
        format!("{}:calls:team:{team_id}", self.prefix)
    }

    fn inflight(&self, team_id: &str) -> String {
        format!("{}:inflight:{team_id}", self.prefix)
    }
}

/// Takes calls fairly, waiting in Redis for a wake-up while there is nothing to take (no polling
/// beyond one look per `wait`, which also notices teams whose limits have eased). One per worker
/// process: it takes calls in batches for all of the process's free slots.
pub struct QueueConsumer {
    conn: RedisConnection,
    keys: QueueKeys,
    hold: Duration,
}

impl QueueConsumer {
    /// Up to `max` calls, waiting up to `wait` for a first one. An entry that is not a call id is
    /// left out of the answer, but the dispatch script has already started it as a request of
    /// its team: it holds a concurrency slot until `hold` lapses and counts towards the team's
    /// requests per minute.
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
            .brpop(self.keys.wake(), wait.as_secs_f64())
            .await?;
        self.dispatch(max).await
    }

    async fn dispatch(&mut self, max: usize) -> redis::RedisResult<Vec<Dispatched>> {
        let taken: Vec<String> = DISPATCH
            .key(self.keys.ring())
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
