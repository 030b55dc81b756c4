//! Organizations and the teams list (admin): browse, and create through the API.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::IntoResponse;
use maud::{Markup, html};
use saasllm_shared::db::listings;
use serde::Deserialize;
use serde_json::json;

use crate::console::dispatch::{Api, segment};
use crate::console::session::{ConsoleForm, Session};
use crate::console::view::{self, Notice, Page, PageResult, admin_only, pushed, refused, text};
use crate::error::ApiError;
use crate::state::AppState;

const PAGE: i64 = 50;

#[derive(Deserialize)]
pub struct After {
    after: Option<String>,
    organization_id: Option<String>,
}

/// `GET /console/organizations`
pub async fn organizations(
    session: Session,
    State(state): State<AppState>,
    Query(query): Query<After>,
) -> PageResult {
    render_organizations(&session, &state, query.after.as_deref(), None).await
}

async fn render_organizations(
    session: &Session,
    state: &AppState,
    after: Option<&str>,
    notice: Option<Notice>,
) -> PageResult {
    admin_only(session)?;
    let rows = listings::organizations(&state.db, after, PAGE).await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.organization_id.clone()))
        .flatten();
    let content = html! {
        fieldset {
            legend { "New organization" }
            form.inline method="post" action="/console/organizations" {
                (view::csrf(session))
                label { "Id" input name="organization_id" required pattern="[A-Za-z0-9_.:\\-]+" maxlength="200"; }
                label { "Name" input name="name" required; }
                button type="submit" { "Create" }
            }
        }
        div.table-wrap { table {
            thead { tr { th { "Organization" } th { "Name" } th { "Status" } th.num { "Teams" } th.hide-narrow { "Created" } } }
            tbody {
                @for org in &rows {
                    tr {
                        td { a href={ "/console/organizations/" (segment(&org.organization_id)) } { (org.organization_id) } }
                        td.wrap { (org.name) }
                        td { span class={ "status " (org.status) } { (org.status) } }
                        td.num { (view::count(org.teams)) }
                        td.hide-narrow { (view::time(org.created_at)) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="5" .muted { "No organizations yet." } } }
            }
        } }
        @if let Some(next) = next {
            p.pager { a href={ "/console/organizations?after=" (segment(&next)) } { "Next page →" } }
        }
    };
    Ok(Page {
        session,
        title: "Organizations".into(),
        section: "organizations",
        notice,
    }
    .render(content))
}

/// `POST /console/organizations`: `POST /api/organizations/create`.
pub async fn create_organization(
    State(state): State<AppState>,
    Extension(api): Extension<Api>,
    form: ConsoleForm,
) -> PageResult {
    let session = form.operator()?;
    let body = json!({
        "organization_id": form.text("organization_id").unwrap_or_default(),
        "name": form.text("name").unwrap_or_default(),
    });
    let notice = api
        .created(
            session,
            "/api/organizations/create",
            body,
            "Organization",
            "organization_id",
        )
        .await;
    let response = render_organizations(session, &state, None, Some(notice)).await;
    Ok(pushed(response.into_response(), "/console/organizations"))
}

/// `GET /console/organizations/{id}`: the organization, its teams, and a form for a new team.
pub async fn organization(
    session: Session,
    State(state): State<AppState>,
    Extension(api): Extension<Api>,
    Path(organization_id): Path<String>,
) -> PageResult {
    admin_only(&session)?;
    let path = format!("/api/organizations/{}", segment(&organization_id));
    let org = api.call(&session, Method::GET, &path, None, None).await;
    let org = org.map_err(refused)?;
    let teams = listings::teams(&state.db, Some(&organization_id), None, 500).await?;
    let content = html! {
        p { "Name: " strong { (text(&org["name"])) } " · status " span.status { (text(&org["status"])) } " · "
            a href={ "/console/usage?organization_id=" (segment(&organization_id)) } { "usage" } }
        (new_team_form(&session, Some(&organization_id)))
        h2 { "Teams" }
        (teams_table(&teams))
    };
    Ok(Page {
        session: &session,
        title: format!("Organization {organization_id}"),
        section: "organizations",
        notice: None,
    }
    .render(content))
}

fn new_team_form(session: &Session, organization_id: Option<&str>) -> Markup {
    html! {
        fieldset {
            legend { "New team" }
            form.inline method="post" action="/console/teams" {
                (view::csrf(session))
                (view::idempotency_field())
                label { "Organization" input name="organization_id" required value=[organization_id]; }
                label { "Team id" input name="team_id" required pattern="[A-Za-z0-9_.:\\-]+" maxlength="200"; }
                label { "Alias" input name="team_alias"; }
                label { "Model groups (comma-separated, in priority order)" input name="model_groups"; }
                label { "Credits" input name="credits_allocated" type="number" min="0" value="0"; }
                button type="submit" { "Create team" }
            }
        }
    }
}

fn teams_table(teams: &[listings::TeamSummary]) -> Markup {
    html! {
        div.table-wrap { table {
            thead { tr { th { "Team" } th.hide-narrow { "Organization" } th { "Status" } th.num { "Credits available" }
                         th.num.hide-narrow { "Credits used" } th.num { "Spend" } th.hide-narrow { "Key" } } }
            tbody {
                @for team in teams {
                    tr {
                        td { a href={ "/console/teams/" (segment(&team.team_id)) } { (team.team_id) }
                             @if let Some(alias) = &team.team_alias { br; span.muted { (alias) } } }
                        td.hide-narrow { a href={ "/console/organizations/" (segment(&team.organization_id)) } { (team.organization_id) } }
                        td { span class={ "status " (team.status) } { (team.status) } }
                        td.num { (view::count(team.credits_available)) }
                        td.num.hide-narrow { (view::count(team.credits_used)) }
                        td.num { (view::usd(team.spend_micro_usd)) }
                        td.hide-narrow { code { (view::or_dash(team.key_prefix.as_deref())) } }
                    }
                }
                @if teams.is_empty() { tr { td colspan="7" .muted { "No teams." } } }
            }
        } }
    }
}

/// `GET /console/teams`
pub async fn teams(
    session: Session,
    State(state): State<AppState>,
    Query(query): Query<After>,
) -> PageResult {
    admin_only(&session)?;
    let org = query.organization_id.as_deref().filter(|o| !o.is_empty());
    let rows = listings::teams(&state.db, org, query.after.as_deref(), PAGE).await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.team_id.clone()))
        .flatten();
    let content = html! {
        (new_team_form(&session, None))
        (teams_table(&rows))
        @if let Some(next) = next {
            p.pager { a href={ "/console/teams?after=" (segment(&next)) "&organization_id=" (segment(org.unwrap_or_default())) } { "Next page →" } }
        }
    };
    Ok(Page {
        session: &session,
        title: "Teams".into(),
        section: "teams",
        notice: None,
    }
    .render(content))
}

/// `POST /console/teams`: `POST /api/teams/create`; the new key is shown on this page only.
pub async fn create_team(Extension(api): Extension<Api>, form: ConsoleForm) -> PageResult {
    let session = form.operator()?;
    let groups: Vec<String> = form
        .text("model_groups")
        .unwrap_or_default()
        .split(',')
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
        .collect();
    let credits = match form.text("credits_allocated").map(str::parse::<i64>) {
        None => 0,
        Some(Ok(credits)) => credits,
        Some(Err(_)) => {
            return Err(ApiError::BadRequest("Credits must be a whole number".into()).into());
        }
    };
    let body = json!({
        "organization_id": form.text("organization_id").unwrap_or_default(),
        "team_id": form.text("team_id").unwrap_or_default(),
        "team_alias": form.text("team_alias"),
        "model_groups": groups,
        "credits_allocated": credits,
    });
    let answer = api
        .call(
            session,
            Method::POST,
            "/api/teams/create",
            Some(body),
            form.text("idempotency_key"),
        )
        .await;
    let team = answer.map_err(refused)?;
    let team_id = text(&team["team_id"]);
    Ok(crate::console::teams::key_shown_once(session, &team_id, &team, "created").await)
}
