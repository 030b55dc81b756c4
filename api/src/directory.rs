//! Who a key belongs to and what its team may use, cached in this process so that a request
//! costs no database round trip to authenticate and find its models. Every change to keys,
//! teams, grants or model groups is announced by PostgreSQL on `DIRECTORY_CHANNEL` when it
//! commits (triggers, whatever made the change); the listener drops what changed, the process
//! that made the change drops its entries before answering, and entries expire after a short
//! time-to-live in case a notification was lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saasllm_shared::db;
use saasllm_shared::db::keys::KeyOwner;
use saasllm_shared::db::model_groups::{ModelEntryRow, ModelGroupRow};
use serde_json::Value;
use sqlx::PgPool;

/// PostgreSQL notification channel announcing a changed team (payload: its id) or any model
/// group (payload `*`).
pub const DIRECTORY_CHANNEL: &str = "saasllm_directory";

/// How long an entry is trusted without a notification.
const TIME_TO_LIVE: Duration = Duration::from_secs(5);

/// Entries kept at most per map; beyond it the map starts over (a flood of distinct keys).
const MAX_ENTRIES: usize = 100_000;

/// A team's grants: its groups in grant order, each with its models in priority order.
pub struct TeamGrants {
    pub groups: Vec<(ModelGroupRow, Vec<ModelEntryRow>)>,
}

impl TeamGrants {
    /// The granted group of that name.
    pub fn group(&self, name: &str) -> Option<&ModelGroupRow> {
        self.groups
            .iter()
            .map(|(group, _)| group)
            .find(|g| g.group_name == name)
    }

    /// The config of `model` in the first granted group that has it; `None` when the team may
    /// not call it.
    pub fn model_config(&self, model: &str) -> Option<&Value> {
        self.groups
            .iter()
            .flat_map(|(_, models)| models)
            .find(|m| m.model_name == model)
            .map(|m| &m.config)
    }

    /// The models the team may call directly, first occurrence first (grant order, then
    /// priority), without duplicates.
    pub fn allowed_models(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for model in self.groups.iter().flat_map(|(_, models)| models) {
            if !seen.contains(&model.model_name) {
                seen.push(model.model_name.clone());
            }
        }
        seen
    }
}

type Entries<K, V> = Mutex<HashMap<K, (Instant, V)>>;

/// The cache of one API process.
pub struct Directory {
    db: PgPool,
    /// Bumped by every invalidation: a value read from the database while it moved may be
    /// stale and is not kept.
    generation: AtomicU64,
    owners: Entries<Vec<u8>, KeyOwner>,
    grants: Entries<String, Arc<TeamGrants>>,
}

impl Directory {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            generation: AtomicU64::new(0),
            owners: Mutex::default(),
            grants: Mutex::default(),
        }
    }

    /// The owner of an active key with this hash.
    pub async fn owner(&self, key_hash: &[u8]) -> sqlx::Result<Option<KeyOwner>> {
        if let Some(owner) = fresh(&self.owners, key_hash) {
            return Ok(Some(owner));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let owner = db::keys::find_owner(&self.db, key_hash).await?;
        if let Some(owner) = &owner {
            self.keep(&self.owners, generation, key_hash.to_vec(), owner.clone());
        }
        Ok(owner)
    }

    /// The team's grants.
    pub async fn grants(&self, team_id: &str) -> sqlx::Result<Arc<TeamGrants>> {
        if let Some(grants) = fresh(&self.grants, team_id) {
            return Ok(grants);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let mut conn = self.db.acquire().await?;
        let groups = db::model_groups::granted_to(&mut conn, team_id).await?;
        let grants = Arc::new(TeamGrants { groups });
        self.keep(
            &self.grants,
            generation,
            team_id.to_owned(),
            Arc::clone(&grants),
        );
        Ok(grants)
    }

    /// Drops what is cached about the team (its key, its grants).
    pub fn forget_team(&self, team_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.owners).retain(|_, (_, owner)| owner.team_id != team_id);
        lock(&self.grants).remove(team_id);
    }

    /// Drops every team's grants (a model group changed).
    pub fn forget_grants(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.grants).clear();
    }

    /// Drops everything (a change made here, or notifications possibly missed).
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.owners).clear();
        lock(&self.grants).clear();
    }

    /// Applies a notification's payload.
    pub fn changed(&self, payload: &str) {
        match payload {
            "*" => self.forget_grants(),
            team_id => self.forget_team(team_id),
        }
    }

    fn keep<K: std::hash::Hash + Eq, V>(
        &self,
        entries: &Entries<K, V>,
        generation: u64,
        key: K,
        value: V,
    ) {
        let mut map = lock(entries);
        // Checked under the map's lock: an invalidation either came before (and this value
        // may be stale, so it is not kept) or comes after and removes it.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (Instant::now(), value));
    }
}

fn lock<K, V>(entries: &Entries<K, V>) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
    entries.lock().unwrap_or_else(|p| p.into_inner())
}

fn fresh<K, Q, V>(entries: &Entries<K, V>, key: &Q) -> Option<V>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    V: Clone,
{
    let map = lock(entries);
    let (stored_at, value) = map.get(key)?;
    (stored_at.elapsed() < TIME_TO_LIVE).then(|| value.clone())
}
