//! The usage reports' answers, and how they are summed up from the usage rows.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use saasllm_shared::db;
use saasllm_shared::db::usage::{DailyUsageRow, OpenAiUsageRow, UsageRow};
use saasllm_shared::domain::money::{MicroUsd, Usd};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::usage_period::Range;

/// Declares a struct of the reports: its own fields before `..`, then the totals of jobs that
/// the summary and each day of the series have, then its own fields after `..`. The totals are
/// declared here rather than in a `#[serde(flatten)]` struct, which the documented schema would
/// show as an `allOf` instead of the struct's own properties.
macro_rules! with_job_totals {
    (
        $(#[$attr:meta])*
        $name:ident {
            $($(#[$before_attr:meta])* $before:ident: $before_ty:ty,)*
            ..
            $(, $(#[$after_attr:meta])* $after:ident: $after_ty:ty)* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Serialize, ToSchema)]
        pub(super) struct $name {
            $($(#[$before_attr])* pub(super) $before: $before_ty,)*
            pub(super) total_jobs: i64,
            pub(super) successful_jobs: i64,
            pub(super) failed_jobs: i64,
            pub(super) total_cost_usd: Usd,
            pub(super) total_tokens: i64,
            $($(#[$after_attr])* pub(super) $after: $after_ty,)*
        }
    };
}

with_job_totals! {
    /// The guide's `summary` block.
    Summary {
        ..,
        /// `total_cost_usd / total_jobs`, rounded to the micro-dollar.
        avg_cost_per_job: Usd,
        /// Credits deducted in the period.
        credits_used: i64,
    }
}

/// One job type's figures in `job_types`.
#[derive(Serialize, ToSchema)]
pub(super) struct JobTypeUsage {
    pub(super) count: i64,
    pub(super) cost_usd: Usd,
}

/// Spend of the OpenAI-compatible path in the period (`/v1` requests and the lines of batches,
/// which also count as jobs of type `openai_batch` above), by endpoint.
#[derive(Serialize, ToSchema, Default)]
pub(super) struct OpenAiUsage {
    pub(super) requests: i64,
    pub(super) cost_usd: Usd,
    pub(super) total_tokens: i64,
    /// `chat` and `embeddings`, each with its `requests`, `cost_usd` and `total_tokens`.
    #[schema(value_type = Object)]
    pub(super) endpoints: BTreeMap<String, OpenAiEndpointUsage>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct OpenAiEndpointUsage {
    pub(super) requests: i64,
    pub(super) cost_usd: Usd,
    pub(super) total_tokens: i64,
}

/// The OpenAI-compatible path's figures over some rows, in total and by endpoint.
fn openai_report<'a>(rows: impl Iterator<Item = &'a OpenAiUsageRow>) -> OpenAiUsage {
    let mut endpoints: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for row in rows {
        let entry = endpoints
            .entry(row.endpoint.as_str().to_owned())
            .or_default();
        entry.0 += row.requests;
        entry.1 += row.cost_micro_usd;
        entry.2 += row.tokens;
    }
    let total = |pick: fn(&(i64, i64, i64)) -> i64| endpoints.values().map(pick).sum::<i64>();
    OpenAiUsage {
        requests: total(|e| e.0),
        cost_usd: MicroUsd(total(|e| e.1)).usd(),
        total_tokens: total(|e| e.2),
        endpoints: endpoints
            .iter()
            .map(|(name, &(requests, cost, tokens))| {
                let usage = OpenAiEndpointUsage {
                    requests,
                    cost_usd: MicroUsd(cost).usd(),
                    total_tokens: tokens,
                };
                (name.clone(), usage)
            })
            .collect(),
    }
}

with_job_totals! {
    /// One UTC day's figures, for charts (days without jobs are left out).
    DailyUsage {
        date: NaiveDate,
        ..
    }
}

impl From<&DailyUsageRow> for DailyUsage {
    fn from(row: &DailyUsageRow) -> Self {
        Self {
            date: row.day,
            total_jobs: row.jobs,
            successful_jobs: row.completed,
            failed_jobs: row.failed,
            total_cost_usd: MicroUsd(row.cost_micro_usd).usd(),
            total_tokens: row.tokens,
        }
    }
}

/// Declares a usage report: the id of whose usage it is (`$owner`), the period, the figures over
/// all its teams, then its `$extra` fields; and `new`, which makes it from the report's rows. The
/// shared fields are declared here rather than in a `#[serde(flatten)]` struct, which the
/// documented schema would show as an `allOf` instead of the report's own properties.
macro_rules! usage_report {
    (
        $(#[$attr:meta])*
        $name:ident {
            $owner:ident
            $(, $(#[$extra_attr:meta])* $extra:ident: $extra_ty:ty)* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Serialize, ToSchema)]
        pub(super) struct $name {
            pub(super) $owner: String,
            /// `YYYY-MM`, or `YYYY-MM-DD/YYYY-MM-DD` for a from..to range.
            pub(super) period: String,
            pub(super) from: NaiveDate,
            pub(super) to: NaiveDate,
            pub(super) summary: Summary,
            pub(super) job_types: BTreeMap<String, JobTypeUsage>,
            pub(super) openai: OpenAiUsage,
            pub(super) daily: Vec<DailyUsage>,
            $($(#[$extra_attr])* pub(super) $extra: $extra_ty,)*
        }

        impl $name {
            pub(super) fn new(
                $owner: String,
                range: Range,
                rows: &UsageRows,
                $($extra: $extra_ty,)*
            ) -> Self {
                let TeamUsageBlock {
                    summary,
                    job_types,
                    openai,
                } = rows.block(None);
                Self {
                    $owner,
                    period: range.label,
                    from: range.first_day,
                    to: range.last_day,
                    summary,
                    job_types,
                    openai,
                    daily: rows.daily.iter().map(DailyUsage::from).collect(),
                    $($extra,)*
                }
            }
        }
    };
}

usage_report! {
    TeamUsageReport { team_id }
}

/// A team's figures inside an organization report.
#[derive(Serialize, ToSchema)]
pub(super) struct TeamUsageBlock {
    pub(super) summary: Summary,
    pub(super) job_types: BTreeMap<String, JobTypeUsage>,
    pub(super) openai: OpenAiUsage,
}

usage_report! {
    OrganizationUsageReport {
        organization_id,
        teams: BTreeMap<String, TeamUsageBlock>,
    }
}

/// The guide's `summary` and `job_types` blocks over some rows.
fn report(rows: &[&UsageRow], credits_used: i64) -> (Summary, BTreeMap<String, JobTypeUsage>) {
    let jobs: i64 = rows.iter().map(|r| r.jobs).sum();
    let cost: i64 = rows.iter().map(|r| r.cost_micro_usd).sum();
    let mut job_types: BTreeMap<String, JobTypeUsage> = BTreeMap::new();
    let mut type_costs: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for row in rows {
        let entry = type_costs.entry(&row.job_type).or_default();
        entry.0 += row.jobs;
        entry.1 += row.cost_micro_usd;
    }
    for (name, (count, cost)) in type_costs {
        job_types.insert(
            name.to_owned(),
            JobTypeUsage {
                count,
                cost_usd: MicroUsd(cost).usd(),
            },
        );
    }
    let summary = Summary {
        total_jobs: jobs,
        successful_jobs: rows.iter().map(|r| r.completed).sum(),
        failed_jobs: rows.iter().map(|r| r.failed).sum(),
        total_cost_usd: MicroUsd(cost).usd(),
        total_tokens: rows.iter().map(|r| r.tokens).sum(),
        avg_cost_per_job: MicroUsd(cost).mean(jobs).usd(),
        credits_used,
    };
    (summary, job_types)
}

/// The rows a report is made of, for some teams over a period.
pub(super) struct UsageRows {
    pub(super) by_type: Vec<UsageRow>,
    /// Credits deducted, by team.
    pub(super) credits: Vec<(String, i64)>,
    pub(super) daily: Vec<DailyUsageRow>,
    pub(super) openai: Vec<OpenAiUsageRow>,
}

impl UsageRows {
    pub(super) async fn load(db: &PgPool, teams: &[String], range: &Range) -> sqlx::Result<Self> {
        let (by_type, credits, daily, openai) = tokio::try_join!(
            db::usage::by_team_and_type(db, teams, range.start, range.end),
            db::usage::credits_used(db, teams, range.start, range.end),
            db::usage::by_day(db, teams, range.start, range.end),
            db::usage::openai_by_endpoint(db, teams, range.start, range.end),
        )?;
        Ok(Self {
            by_type,
            credits,
            daily,
            openai,
        })
    }

    /// The `summary`, `job_types` and `openai` blocks over the rows of one team, or of all of
    /// them with `None`.
    pub(super) fn block(&self, team: Option<&str>) -> TeamUsageBlock {
        let counted = |team_id: &str| team.is_none_or(|team| team_id == team);
        let by_type: Vec<&UsageRow> = self
            .by_type
            .iter()
            .filter(|r| counted(&r.team_id))
            .collect();
        let credits = self
            .credits
            .iter()
            .filter(|(team_id, _)| counted(team_id))
            .map(|(_, n)| n)
            .sum();
        let (summary, job_types) = report(&by_type, credits);
        let openai = openai_report(self.openai.iter().filter(|r| counted(&r.team_id)));
        TeamUsageBlock {
            summary,
            job_types,
            openai,
        }
    }
}
