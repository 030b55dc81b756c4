//! Putting call ids in line, and looking at the line: what API processes and the reconciler do.

use std::sync::LazyLock;

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::CallQueue;
use super::keys::{ACTIVE_TEAMS, KEY_PREFIX, RING, TEAM_LIST, WAKE};
use super::team_slots::{self, LIMITS};
use crate::domain::limits::TeamLimits;

/// Ids pushed per script call, so a bulk push never builds one giant command.
const PUSH_CHUNK: usize = 1_000;

/// Wake-up tokens kept at most: enough to wake every idle slot of a large fleet.
const WAKE_CAP: usize = 1_024;

/// Appends ids to a team's list (KEYS[1]), puts the team in the ring if it was not, records its
/// limits, and leaves wake-up tokens for idle workers.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}
local team, limits, wake_cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('HSET', ns .. '{LIMITS}', team, limits)
local ids = {{}}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return 0 end
redis.call('LPUSH', KEYS[1], unpack(ids))
if redis.call('SADD', ns .. '{ACTIVE_TEAMS}', team) == 1 then
  redis.call('LPUSH', ns .. '{RING}', team)
end
local tokens = {{}}
for i = 1, math.min(#ids, wake_cap) do tokens[i] = '1' end
redis.call('LPUSH', ns .. '{WAKE}', unpack(tokens))
redis.call('LTRIM', ns .. '{WAKE}', 0, wake_cap - 1)
return #ids
"
    ))
});

/// Ids waiting over all teams. KEYS[1] is the set of teams with calls waiting.
static LENGTH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{KEY_PREFIX}
local total = 0
for _, team in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  total = total + redis.call('LLEN', ns .. '{TEAM_LIST}' .. team)
end
return total
"
    ))
});

impl CallQueue {
    /// Appends a team's call ids, in order, and records the team's current limits for dispatch.
    pub async fn push(
        &self,
        team_id: &str,
        limits: &TeamLimits,
        ids: &[Uuid],
    ) -> redis::RedisResult<()> {
        let mut conn = self.redis.connection().await?;
        let limits = team_slots::encode(limits);
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
}
