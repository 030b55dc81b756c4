//! The overview: the last hour minute by minute (calls, failures, fallbacks, jobs, `/v1` spend,
//! credits deducted), the queue (depth, oldest wait) and the workers seen recently. A team sees
//! its own balance and its own hour. The live part refreshes itself every 10 s with htmx.

use axum::Extension;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use chrono::{Duration, DurationRound, Utc};
use maud::{Markup, html};
use saasllm_shared::db::listings::{self, MinuteActivity};

use crate::console::chart::{self, Bar};
use crate::console::dispatch::{Api, segment};
use crate::console::session::Session;
use crate::console::view::{self, Page, PageResult, text};
use crate::error::ApiError;
use crate::state::AppState;

const MINUTES: i64 = 60;

/// `GET /console`
pub async fn page(
    session: Session,
    State(state): State<AppState>,
    Extension(api): Extension<Api>,
) -> PageResult {
    let live = live_markup(&session, &state, &api).await?;
    let content = html! {
        div #live hx-get="/console/live" hx-trigger="every 10s" hx-swap="innerHTML" { (live) }
    };
    let title = match session.caller.team_id() {
        Some(team) => format!("Team {team}"),
        None => "Overview".to_owned(),
    };
    Ok(Page {
        session: &session,
        title,
        section: "overview",
        notice: None,
    }
    .render(content))
}

/// `GET /console/live`: the part of the overview that refreshes.
pub async fn live(
    session: Session,
    State(state): State<AppState>,
    Extension(api): Extension<Api>,
) -> PageResult {
    let live = live_markup(&session, &state, &api).await?;
    Ok(view::html_response(StatusCode::OK, live))
}

async fn live_markup(session: &Session, state: &AppState, api: &Api) -> Result<Markup, ApiError> {
    let now = Utc::now();
    let since =
        now.duration_trunc(Duration::minutes(1)).unwrap_or(now) - Duration::minutes(MINUTES - 1);
    let team = session.caller.team_id();
    let activity = listings::activity(&state.db, team, since).await?;
    let minutes = by_minute(&activity, since);
    let sum = |f: fn(&MinuteActivity) -> i64| minutes.iter().map(f).sum::<i64>();
    let series = |f: fn(&MinuteActivity) -> i64| -> Vec<Bar> {
        minutes
            .iter()
            .map(|m| Bar {
                label: m.minute.format("%H:%M").to_string(),
                value: f(m) as f64,
            })
            .collect()
    };
    let head = match team {
        None => admin_cards(state, now).await?,
        Some(team) => team_cards(session, api, team).await?,
    };
    Ok(html! {
        (head)
        h2 { "Last hour" }
        div.cards {
            (card("Calls", &view::count(sum(|m| m.calls))))
            (card("Failed calls", &view::count(sum(|m| m.failed_calls))))
            (card("Fallbacks", &view::count(sum(|m| m.fallbacks))))
            (card("Jobs created", &view::count(sum(|m| m.jobs))))
            (card("/v1 spend", &view::usd(sum(|m| m.spend_micro_usd))))
            (card("Credits deducted", &view::count(sum(|m| m.credits_deducted))))
        }
        div.charts {
            (chart::bars("Calls per minute", &series(|m| m.calls), chart::count))
            (chart::bars("Failed calls per minute", &series(|m| m.failed_calls), chart::count))
            (chart::bars("Fallbacks per minute", &series(|m| m.fallbacks), chart::count))
            (chart::bars("Jobs per minute", &series(|m| m.jobs), chart::count))
            (chart::bars("/v1 spend per minute", &series(|m| m.spend_micro_usd), chart::usd))
            (chart::bars("Credits deducted per minute", &series(|m| m.credits_deducted), chart::count))
        }
        p.muted { "Updated " (view::time(now)) " UTC; refreshes every 10 s." }
    })
}

/// Every minute of the hour, those without activity as zeros.
fn by_minute(activity: &[MinuteActivity], since: chrono::DateTime<Utc>) -> Vec<MinuteActivity> {
    (0..MINUTES)
        .map(|i| {
            let minute = since + Duration::minutes(i);
            activity
                .iter()
                .find(|a| a.minute == minute)
                .cloned()
                .unwrap_or(MinuteActivity {
                    minute,
                    ..MinuteActivity::default()
                })
        })
        .collect()
}

fn card(label: &str, value: &str) -> Markup {
    html! { div.card { div.label { (label) } div.value { (value) } } }
}

async fn admin_cards(state: &AppState, now: chrono::DateTime<Utc>) -> Result<Markup, ApiError> {
    let (queue, workers) = tokio::try_join!(
        listings::queue_state(&state.db),
        listings::workers_seen(&state.db, now - Duration::minutes(5))
    )?;
    let oldest = queue.oldest_queued_at.map_or_else(
        || "–".to_owned(),
        |at| view::age((now - at).num_seconds().max(0)),
    );
    Ok(html! {
        div.cards {
            (card("Calls queued", &view::count(queue.queued)))
            (card("Oldest queued", &oldest))
            (card("Calls running", &view::count(queue.running)))
            (card("Workers seen (5 min)", &view::count(workers.len() as i64)))
        }
        @if !workers.is_empty() {
            details {
                summary { "Workers seen in the last 5 minutes" }
                div.table-wrap { table {
                    thead { tr { th { "Worker" } th { "Last seen" } th.num { "Calls" } } }
                    tbody { @for worker in &workers {
                        tr { td.mono { (worker.worker_id) } td { (view::time(worker.last_seen)) } td.num { (view::count(worker.calls)) } }
                    } }
                } }
            }
        }
    })
}

async fn team_cards(session: &Session, api: &Api, team: &str) -> Result<Markup, ApiError> {
    let path = format!("/api/credits/teams/{}/balance", segment(team));
    let balance = api
        .call(session, Method::GET, &path, None, None)
        .await
        .map_err(|refusal| ApiError::BadRequest(refusal.detail))?;
    Ok(html! {
        div.cards {
            (card("Credits available", &text(&balance["credits_available"])))
            (card("Held by open jobs", &text(&balance["credits_reserved"])))
            (card("Credits used", &text(&balance["credits_used"])))
            (card("Budget", &view::usd_of(&balance["budget_usd"])))
            (card("Spent on /v1", &view::usd_of(&balance["spend_usd"])))
        }
        p { a href="/console/jobs" { "Your jobs" } " · " a href="/console/usage" { "usage by day" } " · " a href="/console/model-groups" { "model groups you may use" } }
    })
}
