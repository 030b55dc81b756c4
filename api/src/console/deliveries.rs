//! Webhook deliveries (admin): each event (a job's `job.settled`, a team's alerts), where it
//! went, and every attempt.

use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use saasllm_shared::db::listings::{self, DeliveryListing};
use serde::Deserialize;
use uuid::Uuid;

use crate::console::dispatch::segment;
use crate::console::session::Session;
use crate::console::view::{self, Page, PageResult, admin_only, text};
use crate::error::ApiError;
use crate::state::AppState;

const PAGE: i64 = 50;

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    team_id: Option<String>,
    /// `<created_at RFC 3339>_<delivery_id>` of the last delivery of the previous page.
    before: Option<String>,
}

fn cursor(text: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || ApiError::BadRequest("Invalid page cursor".into());
    let (at, id) = text.split_once('_').ok_or_else(invalid)?;
    Ok((
        DateTime::parse_from_rfc3339(at)
            .map_err(|_| invalid())?
            .with_timezone(&Utc),
        id.parse().map_err(|_| invalid())?,
    ))
}

/// `GET /console/webhooks`
pub async fn list(
    session: Session,
    State(state): State<AppState>,
    Query(query): Query<DeliveriesQuery>,
) -> PageResult {
    admin_only(&session)?;
    let team = query
        .team_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let before = query
        .before
        .as_deref()
        .filter(|b| !b.is_empty())
        .map(cursor)
        .transpose()?;
    let rows = listings::deliveries(&state.db, team, before, PAGE).await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last())
        .flatten()
        .map(|last| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("team_id", team.unwrap_or_default())
                .append_pair(
                    "before",
                    &format!("{}_{}", last.created_at.to_rfc3339(), last.delivery_id),
                )
                .finish()
        });
    let content = html! {
        form.filters method="get" action="/console/webhooks" {
            label { "Team" input name="team_id" value=[team]; }
            button type="submit" { "Filter" }
        }
        (deliveries_table(&rows))
        @if let Some(next) = next { p.pager { a href={ "/console/webhooks?" (next) } { "Older →" } } }
    };
    Ok(Page {
        session: &session,
        title: "Webhook deliveries".into(),
        section: "webhooks",
        notice: None,
    }
    .render(content))
}

/// A page of deliveries, each with its attempts.
fn deliveries_table(rows: &[DeliveryListing]) -> Markup {
    html! {
        div.table-wrap { table {
            thead { tr { th { "Created" } th { "Team" } th { "Job" } th { "Event" } th { "URL" } th { "Status" } th { "Attempts" } } }
            tbody {
                @for d in rows {
                    tr {
                        td { (view::time(d.created_at)) }
                        td { a href={ "/console/teams/" (segment(&d.team_id)) } { (d.team_id) } }
                        td { @if let Some(job_id) = d.job_id {
                                 a.mono href={ "/console/jobs/" (job_id) } { (job_id) }
                             } @else { span.muted { "team event" } } }
                        td { (d.event_type) }
                        td.wrap { (d.url) }
                        td { span class={ "status " (d.status) } { (d.status) } br;
                             span.muted { "delivered " (view::maybe_time(d.delivered_at)) } }
                        td.wrap {
                            @for attempt in d.attempt_log.as_array().into_iter().flatten() {
                                div { "#" (text(&attempt["attempt"])) " " (text(&attempt["at"]))
                                      " → " (text(&attempt["http_status"])) " " (text(&attempt["latency_ms"])) " ms"
                                      @if !attempt["error"].is_null() { " · " (text(&attempt["error"])) } }
                            }
                            @if d.attempts == 0 { span.muted { "not tried yet" } }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="7" .muted { "No webhook deliveries." } } }
            }
        } }
    }
}
