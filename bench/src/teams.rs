//! The benchmark's tenant: one organization, one model group and N teams (`--teams`), each with
//! its own key and credits. Load spread over the teams takes them in turn, so each team's
//! balance row sees 1/N of the requests.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use serde_json::{Value, json};

use crate::requests::send;
use crate::{ADMIN_KEY, GROUP, MODEL, TEAM};

/// Credits each team starts with: far more than any run spends.
const CREDITS: u64 = 10_000_000;

pub struct Team {
    pub id: String,
    pub key: String,
}

/// The teams of a run, handed out in turn.
pub struct Teams {
    list: Vec<Team>,
    next: AtomicUsize,
}

impl Teams {
    /// Creates the organization, the model group and `n` teams with plenty of credits. One team
    /// is `team_bench`; more are `team_bench_000`, `team_bench_001`, ...
    pub async fn create(client: &reqwest::Client, api_url: &str, n: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 1, "--teams must be at least 1");
        let admin = |path: &str, body: Value| {
            client
                .post(format!("{api_url}{path}"))
                .header("X-Admin-Key", ADMIN_KEY)
                .json(&body)
        };
        send(admin(
            "/api/organizations/create",
            json!({"organization_id": "org_bench", "name": "Bench"}),
        ))
        .await?;
        send(admin(
            "/api/model-groups/create",
            json!({"group_name": GROUP, "display_name": "Bench Agent",
                   "models": [{"model_name": MODEL, "priority": 0}]}),
        ))
        .await?;
        let mut list = Vec::with_capacity(n);
        for i in 0..n {
            let id = if n == 1 {
                TEAM.to_owned()
            } else {
                format!("{TEAM}_{i:03}")
            };
            let team = send(admin(
                "/api/teams/create",
                json!({"organization_id": "org_bench", "team_id": id, "team_alias": id,
                       "model_groups": [GROUP], "credits_allocated": CREDITS}),
            ))
            .await?;
            let key = team["virtual_key"]
                .as_str()
                .context("no virtual_key in the team create answer")?
                .to_owned();
            list.push(Team { id, key });
        }
        Ok(Self {
            list,
            next: AtomicUsize::new(0),
        })
    }

    pub fn count(&self) -> usize {
        self.list.len()
    }

    pub fn get(&self, i: usize) -> &Team {
        &self.list[i % self.list.len()]
    }

    /// The next team in turn.
    pub fn next(&self) -> &Team {
        self.get(self.next.fetch_add(1, Ordering::Relaxed))
    }
}
