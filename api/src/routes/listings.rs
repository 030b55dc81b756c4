//! Admin lists across tenants: organizations, teams and jobs, with filters, in keyset pages (an
//! opaque `cursor` in, `next_cursor` out; no offset, so a late page costs what the first does).

use axum::extract::State;
use axum::response::Json as JsonResponse;
use saasllm_shared::db::listings::{self, JobFilter, OrganizationFilter, TeamFilter};
use saasllm_shared::domain::status::{JobStatus, TeamStatus};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::extract::Query;
use crate::paging::{opened, page};
use crate::state::AppState;
use crate::validate::{self, CursorScope};

mod items;

use items::{JobsPage, OrganizationsPage, TeamsPage};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(organizations))
        .routes(routes!(teams))
        .routes(routes!(jobs))
}

/// Declares the query of a list: its own filters, then the `limit` and `cursor` of a page.
macro_rules! keyset_query {
    ($query:ident { $($filters:tt)* }) => {
        #[derive(Deserialize, IntoParams)]
        #[into_params(parameter_in = Query)]
        #[serde(deny_unknown_fields)]
        struct $query {
            $($filters)*
            /// Rows per page, 1..=500, default 50.
            #[param(minimum = 1, maximum = 500)]
            limit: Option<i64>,
            /// `next_cursor` of the previous page, with the same filters.
            #[param(max_length = 1024)]
            cursor: Option<String>,
        }
    };
}

/// The `name_prefix` filter, checked, if one was given.
fn name_prefix(value: Option<&str>) -> Result<Option<&str>, ApiError> {
    value.map(validate::name_prefix).transpose()
}

keyset_query!(OrganizationsQuery {
    /// Only organizations whose id or name starts with this text (case-sensitive; `%` and `_`
    /// are plain characters).
    #[param(min_length = 1, max_length = 200)]
    name_prefix: Option<String>,
});

/// Organizations in id order (admin).
#[utoipa::path(
    get,
    path = "/api/organizations",
    operation_id = "list",
    tag = "organizations",
    params(OrganizationsQuery),
    responses((status = 200, description = "A page of organizations", body = OrganizationsPage)),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn organizations(
    _admin: AdminAuth,
    State(state): State<AppState>,
    Query(query): Query<OrganizationsQuery>,
) -> Result<JsonResponse<OrganizationsPage>, ApiError> {
    let limit = validate::page_limit(query.limit)?;
    let name_prefix = name_prefix(query.name_prefix.as_deref())?;
    let scope = CursorScope::new("organizations", vec![name_prefix]);
    let filter = OrganizationFilter {
        name_prefix: name_prefix.map(str::to_owned),
        after: opened(&scope, query.cursor.as_deref())?,
    };
    let rows = listings::organizations_matching(&state.db, &filter, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, &scope, |o| o.organization_id.clone());
    Ok(JsonResponse(OrganizationsPage {
        organizations: rows.into_iter().map(Into::into).collect(),
        limit,
        next_cursor,
    }))
}

keyset_query!(TeamsQuery {
    /// Only the teams of this organization.
    #[param(max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    organization_id: Option<String>,
    #[param(inline)]
    status: Option<TeamStatus>,
    /// Only teams whose id or alias starts with this text (case-sensitive; `%` and `_` are
    /// plain characters).
    #[param(min_length = 1, max_length = 200)]
    name_prefix: Option<String>,
});

/// Teams in id order with their credits (admin).
#[utoipa::path(
    get,
    path = "/api/teams",
    operation_id = "list",
    tag = "teams",
    params(TeamsQuery),
    responses((status = 200, description = "A page of teams", body = TeamsPage)),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn teams(
    _admin: AdminAuth,
    State(state): State<AppState>,
    Query(query): Query<TeamsQuery>,
) -> Result<JsonResponse<TeamsPage>, ApiError> {
    let limit = validate::page_limit(query.limit)?;
    if let Some(organization_id) = &query.organization_id {
        validate::identifier("organization_id", organization_id)?;
    }
    let name_prefix = name_prefix(query.name_prefix.as_deref())?;
    let status = query.status.map(|status| match status {
        TeamStatus::Active => "active",
        TeamStatus::Suspended => "suspended",
    });
    let scope = CursorScope::new(
        "teams",
        vec![query.organization_id.as_deref(), status, name_prefix],
    );
    let filter = TeamFilter {
        organization_id: query.organization_id.clone(),
        status: query.status,
        name_prefix: name_prefix.map(str::to_owned),
        after: opened(&scope, query.cursor.as_deref())?,
    };
    let rows = listings::teams_matching(&state.db, &filter, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, &scope, |t| t.team_id.clone());
    Ok(JsonResponse(TeamsPage {
        teams: rows.into_iter().map(Into::into).collect(),
        limit,
        next_cursor,
    }))
}

keyset_query!(JobsQuery {
    #[param(max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    team_id: Option<String>,
    /// Only the jobs of this organization's teams.
    #[param(max_length = 200, pattern = "^[A-Za-z0-9_.:-]+$")]
    organization_id: Option<String>,
    #[param(inline)]
    status: Option<JobStatus>,
    #[param(min_length = 1, max_length = 200)]
    job_type: Option<String>,
    /// Only jobs created at or after this instant (RFC 3339).
    #[param(format = DateTime)]
    created_after: Option<String>,
    /// Only jobs created before this instant (RFC 3339).
    #[param(format = DateTime)]
    created_before: Option<String>,
});

/// The filter of a jobs query, each part checked.
fn job_filter(query: &JobsQuery) -> Result<JobFilter, ApiError> {
    for (field, value) in [
        ("team_id", &query.team_id),
        ("organization_id", &query.organization_id),
    ] {
        if let Some(value) = value {
            validate::identifier(field, value)?;
        }
    }
    if let Some(job_type) = &query.job_type {
        validate::non_blank("job_type", job_type)?;
        if job_type.chars().count() > 200 {
            return Err(ApiError::BadRequest(
                "job_type must be at most 200 characters".into(),
            ));
        }
    }
    let created_from = query
        .created_after
        .as_deref()
        .map(|at| validate::rfc3339("created_after", at))
        .transpose()?;
    let created_to = query
        .created_before
        .as_deref()
        .map(|at| validate::rfc3339("created_before", at))
        .transpose()?;
    if let (Some(from), Some(to)) = (created_from, created_to)
        && from >= to
    {
        return Err(ApiError::BadRequest(
            "created_after must be earlier than created_before".into(),
        ));
    }
    Ok(JobFilter {
        team_id: query.team_id.clone(),
        status: query.status,
        job_type: query.job_type.clone(),
        created_from,
        created_to,
        before: None,
    })
}

/// Jobs across teams, newest first (admin).
#[utoipa::path(
    get,
    path = "/api/jobs",
    operation_id = "list",
    tag = "jobs",
    params(JobsQuery),
    responses((status = 200, description = "A page of jobs", body = JobsPage)),
    security(("admin_key" = []), ("bearer" = []))
)]
async fn jobs(
    _admin: AdminAuth,
    State(state): State<AppState>,
    Query(query): Query<JobsQuery>,
) -> Result<JsonResponse<JobsPage>, ApiError> {
    let limit = validate::page_limit(query.limit)?;
    let mut filter = job_filter(&query)?;
    let scope = CursorScope::new(
        "jobs",
        vec![
            query.team_id.as_deref(),
            query.organization_id.as_deref(),
            query.status.map(JobStatus::as_str),
            query.job_type.as_deref(),
            query.created_after.as_deref(),
            query.created_before.as_deref(),
        ],
    );
    filter.before = opened(&scope, query.cursor.as_deref())?
        .map(|position| {
            listings::parse_position(&position).ok_or_else(|| {
                ApiError::BadRequest("Invalid cursor: it does not name a job".into())
            })
        })
        .transpose()?;
    let rows = listings::jobs_in(
        &state.db,
        &filter,
        query.organization_id.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, &scope, |j| {
        listings::position_text(j.job.created_at, j.job.job_id)
    });
    Ok(JsonResponse(JobsPage {
        jobs: rows.into_iter().map(Into::into).collect(),
        limit,
        next_cursor,
    }))
}
