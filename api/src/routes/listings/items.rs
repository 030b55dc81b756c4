//! The rows and pages the admin lists answer with.

use chrono::{DateTime, Utc};
use saasllm_shared::db::listings::{JobListing, OrganizationSummary, TeamSummary};
use saasllm_shared::domain::money::{MicroUsd, Usd};
use saasllm_shared::domain::status::{JobStatus, TeamStatus};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::credits_view::CreditsView;

/// Declares a page of a list: its rows under `$rows`, the limit it was cut at, and the cursor
/// of the next page.
macro_rules! keyset_page {
    ($page:ident, $rows:ident, $item:ty) => {
        #[derive(Serialize, ToSchema)]
        pub(super) struct $page {
            pub(super) $rows: Vec<$item>,
            pub(super) limit: i64,
            /// Pass as `cursor` for the next page; null on the last page.
            pub(super) next_cursor: Option<String>,
        }
    };
}

#[derive(Serialize, ToSchema)]
pub(super) struct OrganizationItem {
    organization_id: String,
    name: String,
    status: String,
    team_count: i64,
    created_at: DateTime<Utc>,
}

impl From<OrganizationSummary> for OrganizationItem {
    fn from(row: OrganizationSummary) -> Self {
        Self {
            organization_id: row.organization_id,
            name: row.name,
            status: row.status.as_str().to_owned(),
            team_count: row.teams,
            created_at: row.created_at,
        }
    }
}

keyset_page!(OrganizationsPage, organizations, OrganizationItem);

#[derive(Serialize, ToSchema)]
pub(super) struct TeamItem {
    team_id: String,
    organization_id: String,
    team_alias: Option<String>,
    status: TeamStatus,
    /// As `GET /api/teams/{team_id}` reports them.
    credits: CreditsView,
    /// Spend of the OpenAI-compatible path.
    spend_usd: Usd,
    key_prefix: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<TeamSummary> for TeamItem {
    fn from(row: TeamSummary) -> Self {
        Self {
            credits: CreditsView::from(&row.balance),
            spend_usd: MicroUsd(row.spend_micro_usd).usd(),
            team_id: row.team_id,
            organization_id: row.organization_id,
            team_alias: row.team_alias,
            status: row.status,
            key_prefix: row.key_prefix,
            created_at: row.created_at,
        }
    }
}

keyset_page!(TeamsPage, teams, TeamItem);

/// A job as `GET /api/teams/{team_id}/jobs` lists it, with the number of its calls.
#[derive(Serialize, ToSchema)]
pub(super) struct JobItem {
    job_id: Uuid,
    team_id: String,
    user_id: Option<String>,
    job_type: String,
    status: JobStatus,
    #[schema(value_type = Object)]
    metadata: serde_json::Value,
    credit_applied: bool,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    calls: i64,
}

impl From<JobListing> for JobItem {
    fn from(listing: JobListing) -> Self {
        let job = listing.job;
        Self {
            credit_applied: job.credit_applied(),
            job_id: job.job_id,
            team_id: job.team_id,
            user_id: job.user_id,
            job_type: job.job_type,
            status: job.status,
            metadata: job.metadata,
            created_at: job.created_at,
            completed_at: job.completed_at,
            calls: listing.calls,
        }
    }
}

keyset_page!(JobsPage, jobs, JobItem);
