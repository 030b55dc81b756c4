//! Taking calls fairly: the round-robin walk over the teams with calls waiting, passing over
//! teams at a limit, and the consumer that waits in Redis while there is nothing to take.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::Dispatched;
use super::keys::{ACTIVE_TEAMS, KEY_PREFIX, QueueKeys, RING, TEAM_LIST};
use super::team_slots::{LIMIT_CHECK, LIMITS};
use crate::redis_conn::RedisConnection;

/// Takes up to `max` calls, round-robin over the teams with calls waiting (one call per team per
/// turn), skipping teams at a limit. Returns a flat list of `call_id, team, flags` triples (flags:
/// `c` when the call holds a concurrency slot, `t` when its tokens count towards a per-minute
/// limit), empty when nothing can be taken. The walk ends once every team in the ring has been
/// passed over in a row, so a ring of blocked teams costs one pass. KEYS[1] is the ring.
static DISPATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}{check}
local hold_ms, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local ring, active = ns .. '{RING}', ns .. '{ACTIVE_TEAMS}'
local now = now_ms()
local taken = {{}}
local passed = 0
while #taken < max * 3 do
  local teams = redis.call('LLEN', ring)
  if teams == 0 or passed >= teams then break end
  local team = redis.call('LMOVE', ring, ring, 'RIGHT', 'LEFT')
  local list = ns .. '{TEAM_LIST}' .. team
  if redis.call('LLEN', list) == 0 then
    redis.call('LREM', ring, 1, team)
    redis.call('SREM', active, team)
  else
    local conc, rpm, tpm = parse_limits(redis.call('HGET', ns .. '{LIMITS}', team))
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
",
        check = LIMIT_CHECK.as_str()
    ))
});

/// Takes calls fairly, waiting in Redis for a wake-up while there is nothing to take (no polling
/// beyond one look per `wait`, which also notices teams whose limits have eased). One per worker
/// process: it takes calls in batches for all of the process's free slots.
pub struct QueueConsumer {
    pub(super) conn: RedisConnection,
    pub(super) keys: QueueKeys,
    pub(super) hold: Duration,
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
