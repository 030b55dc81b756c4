//! A team (admin): balance, holds, budget and spend, limits, model groups and key prefix, read
//! through the JSON API; credits, limits, grants, suspend/resume and key rotation sent through it.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use maud::html;
use saasllm_shared::db;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::console::dispatch::{Api, segment};
use crate::console::session::{ConsoleForm, Session};
use crate::console::view::{self, Notice, Page, PageResult, admin_only, pushed, text};
use crate::error::ApiError;
use crate::lookup;
use crate::state::AppState;

/// `GET /console/teams/{id}`
pub async fn page(
    session: Session,
    Extension(api): Extension<Api>,
    Path(team_id): Path<String>,
) -> PageResult {
    admin_only(&session)?;
    render(&session, &api, &team_id, None).await
}

async fn render(session: &Session, api: &Api, team_id: &str, notice: Option<Notice>) -> PageResult {
    let team_path = format!("/api/teams/{}", segment(team_id));
    let balance_path = format!("/api/credits/teams/{}/balance", segment(team_id));
    let (team, balance) = tokio::join!(
        api.call(session, Method::GET, &team_path, None, None),
        api.call(session, Method::GET, &balance_path, None, None)
    );
    let (team, balance) = match (team, balance) {
        (Ok(team), Ok(balance)) => (team, balance),
        (Err(refusal), _) | (_, Err(refusal)) => return Err(view::refused(refusal)),
    };
    let credits = &team["credits"];
    let limits = &team["limits"];
    let groups: Vec<String> = team["model_groups"]
        .as_array()
        .map(|g| g.iter().map(text).collect())
        .unwrap_or_default();
    let suspended = team["status"] == "suspended";
    let base = format!("/console/teams/{}", segment(team_id));
    let content = html! {
        p { "Organization " a href={ "/console/organizations/" (segment(&text(&team["organization_id"]))) } { (text(&team["organization_id"])) }
            " · status " span class={ "status " (text(&team["status"])) } { (text(&team["status"])) }
            " · key " code { (text(&team["key_prefix"])) } "…"
            " · " a href={ (base) "/ledger" } { "ledger" }
            " · " a href={ "/console/jobs?team_id=" (segment(team_id)) } { "jobs" }
            " · " a href={ "/console/usage?team_id=" (segment(team_id)) } { "usage" } }
        div.cards {
            (card("Credits available", &view::count(credits["credits_available"].as_i64().unwrap_or(0))))
            (card("Held by open jobs", &view::count(credits["credits_reserved"].as_i64().unwrap_or(0))))
            (card("Credits used", &view::count(credits["credits_used"].as_i64().unwrap_or(0))))
            (card("Credits allocated", &view::count(credits["credits_allocated"].as_i64().unwrap_or(0))))
            (card("Budget", &view::usd_of(&balance["budget_usd"])))
            (card("Spent on /v1", &view::usd_of(&balance["spend_usd"])))
            (card("Budget parked in slices", &view::usd_of(&balance["budget_reserved_usd"])))
        }
        h2 { "Model groups" }
        p { @for group in &groups { a href={ "/console/model-groups/" (segment(group)) } { (group) } " " }
            @if groups.is_empty() { span.muted { "None granted." } } }
        p.muted { "Allowed models: " (team["allowed_models"].as_array().map(|m| m.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
        h2 { "Actions" }
        div.actions {
            form method="post" action={ (base) "/add-credits" } {
                (view::csrf(session)) (view::idempotency_field())
                label { "Credits to add" input name="credits" type="number" min="1" required; }
                label { "Reason" input name="reason"; }
                button type="submit" { "Add credits" }
            }
            form method="post" action={ (base) "/limits" } {
                (view::csrf(session))
                label { "Calls at once" input name="max_concurrent_calls" type="number" min="1" value=[limits["max_concurrent_calls"].as_i64()]; }
                label { "Requests/min" input name="requests_per_minute" type="number" min="1" value=[limits["requests_per_minute"].as_i64()]; }
                label { "Tokens/min" input name="tokens_per_minute" type="number" min="1" value=[limits["tokens_per_minute"].as_i64()]; }
                button type="submit" { "Set limits" }
            }
            form method="post" action={ (base) "/model-groups" } {
                (view::csrf(session))
                label { "Model groups (comma-separated, in priority order)" input name="model_groups" value=(groups.join(", ")); }
                button type="submit" { "Grant" }
            }
            @if suspended {
                form method="post" action={ (base) "/resume" } { (view::csrf(session)) button type="submit" { "Resume team" } }
            } @else {
                form method="post" action={ (base) "/suspend" } { (view::csrf(session)) button.danger type="submit" { "Suspend team" } }
            }
            form method="post" action={ (base) "/rotate-key" } {
                (view::csrf(session)) (view::idempotency_field())
                button.danger type="submit" { "Rotate key" }
            }
        }
    };
    let response = Page {
        session,
        title: format!("Team {team_id}"),
        section: "teams",
        notice,
    }
    .render(content);
    Ok(pushed(response, &base))
}

fn card(label: &str, value: &str) -> maud::Markup {
    html! { div.card { div.label { (label) } div.value { (value) } } }
}

/// `POST /console/teams/{id}/{action}`
pub async fn act(
    Extension(api): Extension<Api>,
    Path((team_id, action)): Path<(String, String)>,
    form: ConsoleForm,
) -> PageResult {
    let session = form.operator()?;
    let idempotency_key = form.text("idempotency_key");
    let (method, path, body) = match action_request(&action, &team_id, &form) {
        Some(Ok(request)) => request,
        Some(Err(error)) => return render(session, &api, &team_id, Some(refused(error))).await,
        None => return Err(ApiError::NotFound("No such action".into()).into()),
    };
    let answer = api
        .call(session, method, &path, body, idempotency_key)
        .await;
    match (action.as_str(), answer) {
        ("rotate-key", Ok(rotated)) => {
            Ok(key_shown_once(session, &team_id, &rotated, "rotated").await)
        }
        (_, Ok(_)) => {
            let done = match action.as_str() {
                "add-credits" => "Credits added",
                "limits" => "Limits set",
                "model-groups" => "Model groups granted",
                "suspend" => "Team suspended",
                _ => "Team resumed",
            };
            render(session, &api, &team_id, Some(Notice::Done(done.into()))).await
        }
        (_, Err(refusal)) => {
            render(
                session,
                &api,
                &team_id,
                Some(Notice::Refused(refusal.detail)),
            )
            .await
        }
    }
}

/// An API request: its method, path and body.
type ApiRequest = (Method, String, Option<Value>);

/// The API request a team action sends: its method, path and body; `None` for no such action,
/// an error for a form field that is not a whole number.
fn action_request(
    action: &str,
    team_id: &str,
    form: &ConsoleForm,
) -> Option<Result<ApiRequest, ApiError>> {
    let team = segment(team_id);
    let request = match action {
        "add-credits" => {
            let credits = match form.required("credits").and_then(whole) {
                Ok(credits) => credits,
                Err(error) => return Some(Err(error)),
            };
            let body = json!({"credits_amount": credits, "reason": form.text("reason")});
            (
                Method::POST,
                format!("/api/credits/teams/{team}/add"),
                Some(body),
            )
        }
        "limits" => {
            let mut body = serde_json::Map::new();
            for name in [
                "max_concurrent_calls",
                "requests_per_minute",
                "tokens_per_minute",
            ] {
                let value = match form.text(name).map(whole).transpose() {
                    Ok(value) => value,
                    Err(error) => return Some(Err(error)),
                };
                body.insert(name.to_owned(), json!(value));
            }
            let path = format!("/api/teams/{team}/limits");
            (Method::PUT, path, Some(Value::Object(body)))
        }
        "model-groups" => {
            let groups: Vec<&str> = form
                .text("model_groups")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .collect();
            let path = format!("/api/teams/{team}/model-groups");
            (Method::PUT, path, Some(json!(groups)))
        }
        "suspend" | "resume" | "rotate-key" => {
            (Method::POST, format!("/api/teams/{team}/{action}"), None)
        }
        _ => return None,
    };
    Some(Ok(request))
}

fn whole(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("'{text}' is not a whole number")))
}

fn refused(error: ApiError) -> Notice {
    Notice::Refused(error.to_string())
}

/// The page after a team was created or its key rotated: the new key, this once.
pub async fn key_shown_once(
    session: &Session,
    team_id: &str,
    answer: &Value,
    what: &str,
) -> Response {
    let key = answer["virtual_key"].as_str();
    let base = format!("/console/teams/{}", segment(team_id));
    let content = html! {
        @match key {
            // Never kept in the browser's history cache: shown once means once.
            Some(key) => div.secret hx-history="false" {
                p { "The team's key. It is shown this once: copy it now and hand it to the team." }
                p { code #new-key { (key) } }
            },
            None => p.notice.refused { "This request was already done; its key is not shown again. Rotate the key to get a new one." },
        }
        p { a href=(base) { "Go to the team" } }
    };
    Page {
        session,
        title: format!("Team {team_id} {what}"),
        section: "teams",
        notice: None,
    }
    .render(content)
}

#[derive(Deserialize)]
pub struct LedgerQuery {
    offset: Option<i64>,
}

/// `GET /console/teams/{id}/ledger`: every credit movement, newest first.
pub async fn ledger(
    session: Session,
    State(state): State<AppState>,
    Path(team_id): Path<String>,
    Query(query): Query<LedgerQuery>,
) -> PageResult {
    admin_only(&session)?;
    let offset = query.offset.unwrap_or(0).clamp(0, 10_000_000);
    lookup::team(&state.db, &team_id).await?;
    let rows = db::credits::list_transactions(&state.db, &team_id, 100, offset).await?;
    let content = html! {
        p { a href={ "/console/teams/" (segment(&team_id)) } { "← team" } }
        div.table-wrap { table {
            thead { tr { th { "When" } th { "Type" } th.num { "Credits" } th.num { "Balance after" } th { "Reason" } th.hide-narrow { "Job" } } }
            tbody {
                @for row in &rows {
                    tr {
                        td { (view::time(row.created_at)) }
                        td { (format!("{:?}", row.transaction_type).to_lowercase()) }
                        td.num { (view::count(row.credits_amount)) }
                        td.num { (view::count(row.balance_after)) }
                        td.wrap { (view::or_dash(row.reason.as_deref())) }
                        td.hide-narrow { @if let Some(job) = row.job_id { a.mono href={ "/console/jobs/" (job) } { (job) } } }
                    }
                }
                @if rows.is_empty() { tr { td colspan="6" .muted { "No ledger rows." } } }
            }
        } }
        @if rows.len() == 100 {
            p.pager { a href={ "?offset=" (offset + 100) } { "Older →" } }
        }
    };
    Ok(Page {
        session: &session,
        title: format!("Ledger of {team_id}"),
        section: "teams",
        notice: None,
    }
    .render(content))
}
