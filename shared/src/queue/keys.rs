//! Names of the queue's Redis keys. The Rust side passes some of them to the scripts; the
//! scripts build the others inside Redis from the prefix of the key they were given (a script
//! may only touch keys it can name from there). Both sides take the names from the constants
//! here, so they cannot drift apart. The keys of the per-team limits are named in
//! [`super::team_slots`], their home.

use super::team_slots;

/// Ring of the teams with calls waiting (a list, served from its tail).
pub(super) const RING: &str = ":calls:teams";
/// Set of the teams in the ring, so a team is added to it once.
pub(super) const ACTIVE_TEAMS: &str = ":calls:active";
/// Wake-up tokens for idle consumers (a list they block on).
pub(super) const WAKE: &str = ":calls:wake";
/// A team's FIFO list of call ids, followed by the team's id.
pub(super) const TEAM_LIST: &str = ":calls:team:";

/// Opens every script: `ns` is the hash tag that starts the key passed as KEYS[1], the prefix of
/// every key of the deployment.
pub(super) const KEY_PREFIX: &str = r"
local ns = string.match(KEYS[1], '^{[^{}]+}')
if not ns then return redis.error_reply('queue key without its hash tag: ' .. KEYS[1]) end
";

/// The keys the Rust side passes to Redis, under the deployment's prefix.
#[derive(Clone)]
pub(super) struct QueueKeys {
    pub(super) prefix: String,
}

impl QueueKeys {
    pub(super) fn of(namespace: &str) -> Self {
        Self {
            prefix: format!("{{{namespace}}}"),
        }
    }

    pub(super) fn ring(&self) -> String {
        format!("{}{RING}", self.prefix)
    }

    pub(super) fn active_teams(&self) -> String {
        format!("{}{ACTIVE_TEAMS}", self.prefix)
    }

    pub(super) fn wake(&self) -> String {
        format!("{}{WAKE}", self.prefix)
    }

    pub(super) fn team_list(&self, team_id: &str) -> String {
        format!("{}{TEAM_LIST}{team_id}", self.prefix)
    }

    pub(super) fn limits(&self) -> String {
        format!("{}{}", self.prefix, team_slots::LIMITS)
    }

    pub(super) fn inflight(&self, team_id: &str) -> String {
        format!("{}{}{team_id}", self.prefix, team_slots::INFLIGHT)
    }
}
