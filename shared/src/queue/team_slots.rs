//! Per-team limits in Redis (calls in flight, requests and tokens per minute): the one home of
//! their accounting, for queued calls and synchronous requests alike.
//!
//! A team's limits are kept in one hash, encoded as "concurrency rpm tpm". A request holding one
//! of the team's concurrency slots is a member of the team's in-flight sorted set, scored by the
//! time its hold lapses (so a slot whose holder died frees itself); requests started and tokens
//! used are counted per team and minute. The dispatcher checks and takes these inside its Lua
//! script, atomically with popping the call, so the checks themselves must run in Redis: the Lua
//! functions below are spliced into the dispatch script too. Its key names and the encoding are
//! defined here and only here, for the scripts and the Rust side alike.
//!
//! Who holds what: a dispatched call holds its slot under its call id (the worker extends it
//! while the call runs, see [`CallQueue::extend_slot`]); a synchronous request of the API holds
//! one under [`request_member`]. Either gives it back with [`CallQueue::finish`].

use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::keys::KEY_PREFIX;
use super::{CallQueue, Dispatched};
use crate::domain::limits::TeamLimits;

/// Hash of every team's encoded limits (see [`encode`]).
pub(super) const LIMITS: &str = ":limits";
/// A team's in-flight set (members scored by when their hold lapses), followed by the team's id.
pub(super) const INFLIGHT: &str = ":inflight:";
/// A team's per-minute counters: followed by `team:minute`, then by [`REQUESTS`] or [`TOKENS`].
const RATE: &str = ":rate:";
const REQUESTS: &str = ":requests";
const TOKENS: &str = ":tokens";

/// The form of a team's limits kept in Redis: "concurrency rpm tpm", 0 for unlimited; read back
/// by `parse_limits` in [`LIMIT_CHECK`].
pub(super) fn encode(limits: &TeamLimits) -> String {
    let n = |v: Option<i32>| v.unwrap_or(0).max(0);
    format!(
        "{} {} {}",
        n(limits.max_concurrent_calls),
        n(limits.requests_per_minute),
        n(limits.tokens_per_minute)
    )
}

/// The member under which a dispatched call holds its team's concurrency slot.
pub fn call_member(call_id: Uuid) -> String {
    call_id.to_string()
}

/// A fresh member under which a synchronous request holds its team's concurrency slot.
pub fn request_member() -> String {
    format!("request:{}", Uuid::new_v4())
}

/// Shared by the dispatch and admission scripts: the team's limits and whether it may start one
/// more request now. `blocked_for` returns 0 when it may, else the milliseconds after which to
/// look again.
pub(super) static LIMIT_CHECK: LazyLock<String> = LazyLock::new(|| {
    format!(
        r"
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
    local inflight = ns .. '{INFLIGHT}' .. team
    redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
    if redis.call('ZCARD', inflight) >= conc then return 1000 end
  end
  local window = ns .. '{RATE}' .. team .. ':' .. math.floor(now / 60000)
  local next_minute = 60000 - (now % 60000)
  if rpm > 0 and tonumber(redis.call('GET', window .. '{REQUESTS}') or '0') >= rpm then
    return next_minute
  end
  if tpm > 0 and tonumber(redis.call('GET', window .. '{TOKENS}') or '0') >= tpm then
    return next_minute
  end
  return 0
end
local function start_request(ns, team, member, conc, rpm, now, hold_ms)
  if conc > 0 then redis.call('ZADD', ns .. '{INFLIGHT}' .. team, now + hold_ms, member) end
  if rpm > 0 then
    local key = ns .. '{RATE}' .. team .. ':' .. math.floor(now / 60000) .. '{REQUESTS}'
    redis.call('INCR', key)
    redis.call('EXPIRE', key, 120)
  end
end
"
    )
});

/// Admits a request of a synchronous path against the team's limits: 0 when admitted (holding a
/// concurrency slot under `member` when `reserve` is 1), else milliseconds to wait. KEYS[1] is the
/// team's in-flight set.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}{check}
local team, limits, member, reserve, hold_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local conc, rpm, tpm = parse_limits(limits)
local now = now_ms()
local wait = blocked_for(ns, team, conc, rpm, tpm, now)
if wait == 0 and reserve == '1' then start_request(ns, team, member, conc, rpm, now, hold_ms) end
return wait
",
        check = LIMIT_CHECK.as_str()
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
  local key = ns .. '{RATE}' .. team .. ':' .. math.floor(tonumber(t[1]) / 60) .. '{TOKENS}'
  redis.call('INCRBY', key, tokens)
  redis.call('EXPIRE', key, 120)
end
return 1
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

impl CallQueue {
    /// Records teams' limits (the reconciler keeps Redis in step with PostgreSQL this way, also
    /// after Redis lost its data). Teams not listed keep what they had.
    pub async fn set_limits(&self, limits: &[(String, TeamLimits)]) -> redis::RedisResult<()> {
        if limits.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.connection().await?;
        let fields: Vec<(&str, String)> = limits
            .iter()
            .map(|(team, limits)| (team.as_str(), encode(limits)))
            .collect();
        conn.hset_multiple(self.keys.limits(), &fields).await
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
            .arg(encode(limits))
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

    /// Ends a dispatched call's hold on its team's limits: frees its concurrency slot if it holds
    /// one, and counts `tokens` if its team limits tokens per minute. Nothing to do (no Redis
    /// round trip) for a call of a team without such limits.
    pub async fn finish_dispatched(
        &self,
        call: &Dispatched,
        tokens: i64,
    ) -> redis::RedisResult<()> {
        if !call.holds_limits() {
            return Ok(());
        }
        let tokens = if call.counts_tokens { tokens } else { 0 };
        self.finish(&call.team_id, &call_member(call.call_id), tokens)
            .await
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_encode_with_zero_for_unlimited() {
        assert_eq!(encode(&TeamLimits::default()), "0 0 0");
        let limits = TeamLimits {
            max_concurrent_calls: Some(4),
            requests_per_minute: None,
            tokens_per_minute: Some(10_000),
        };
        assert_eq!(encode(&limits), "4 0 10000");
    }

    #[test]
    fn the_scripts_name_the_same_keys_as_the_rust_side() {
        assert!(LIMIT_CHECK.contains("ns .. ':inflight:' .. team"));
        assert!(LIMIT_CHECK.contains("window .. ':requests'"));
        assert!(LIMIT_CHECK.contains("window .. ':tokens'"));
    }
}
