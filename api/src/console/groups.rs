//! Model groups: every group with its models in priority order and the teams holding it (admin;
//! a team sees only the groups granted to it); create and edit through the API.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::IntoResponse;
use maud::{Markup, html};
use saasllm_shared::db;
use saasllm_shared::db::listings;
use saasllm_shared::db::model_groups::ModelGroupRow;
use serde_json::{Value, json};

use crate::console::dispatch::{Api, segment};
use crate::console::session::{ConsoleForm, Session};
use crate::console::view::{self, Notice, Page, PageResult, admin_only, pushed};
use crate::error::ApiError;
use crate::lookup;
use crate::state::AppState;

/// `GET /console/model-groups`
pub async fn list(session: Session, State(state): State<AppState>) -> PageResult {
    render_list(&session, &state, None).await
}

async fn render_list(session: &Session, state: &AppState, notice: Option<Notice>) -> PageResult {
    let groups = match session.caller.team_id() {
        None => db::model_groups::list_all(&state.db).await?,
        Some(team) => db::model_groups::list_for_team(&state.db, team).await?,
    };
    let table = groups_table(session, state, &groups).await?;
    let content = html! {
        @if session.is_admin() {
            fieldset {
                legend { "New model group" }
                form.inline method="post" action="/console/model-groups" {
                    (view::csrf(session))
                    label { "Name" input name="group_name" required maxlength="200"; }
                    label { "Models, one per line, first tried first" textarea name="models" required {} }
                    button type="submit" { "Create" }
                }
            }
        }
        (table)
    };
    Ok(Page {
        session,
        title: "Model groups".into(),
        section: "model groups",
        notice,
    }
    .render(content))
}

async fn groups_table(
    session: &Session,
    state: &AppState,
    groups: &[ModelGroupRow],
) -> Result<Markup, ApiError> {
    let ids: Vec<_> = groups.iter().map(|g| g.model_group_id).collect();
    let models = db::model_groups::models_of(&state.db, &ids).await?;
    let holders = if session.is_admin() {
        listings::group_holders(&state.db, &ids).await?
    } else {
        Vec::new()
    };
    Ok(html! {
        div.table-wrap { table {
            thead { tr { th { "Group" } th { "Models (first tried first)" } @if session.is_admin() { th { "Teams holding it" } } } }
            tbody {
                @for group in groups {
                    tr {
                        td { @if session.is_admin() { a href={ "/console/model-groups/" (segment(&group.group_name)) } { (group.group_name) } }
                             @else { (group.group_name) } }
                        td.wrap { (models.iter().filter(|m| m.model_group_id == group.model_group_id)
                                      .map(|m| m.model_name.as_str()).collect::<Vec<_>>().join(" → ")) }
                        @if session.is_admin() {
                            td.wrap { (holders.iter().filter(|(g, _)| *g == group.model_group_id)
                                          .map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(", ")) }
                        }
                    }
                }
                @if groups.is_empty() { tr { td colspan="3" .muted { "No model groups." } } }
            }
        } }
    })
}

/// The textarea's lines as the API's model list, in priority order.
fn models_from(text: &str) -> Value {
    let models: Vec<Value> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(priority, name)| json!({"model_name": name, "priority": priority}))
        .collect();
    Value::Array(models)
}

/// `POST /console/model-groups`: `POST /api/model-groups/create`.
pub async fn create(
    State(state): State<AppState>,
    Extension(api): Extension<Api>,
    form: ConsoleForm,
) -> PageResult {
    let session = form.operator()?;
    let body = json!({
        "group_name": form.text("group_name").unwrap_or_default(),
        "models": models_from(form.text("models").unwrap_or_default()),
    });
    let notice = api
        .created(
            session,
            "/api/model-groups/create",
            body,
            "Model group",
            "group_name",
        )
        .await;
    Ok(pushed(
        render_list(session, &state, Some(notice))
            .await
            .into_response(),
        "/console/model-groups",
    ))
}

/// `GET /console/model-groups/{name}`: the group's models, editable, and who holds it.
pub async fn page(
    session: Session,
    State(state): State<AppState>,
    Path(group_name): Path<String>,
) -> PageResult {
    render_group(&session, &state, &group_name, None).await
}

async fn render_group(
    session: &Session,
    state: &AppState,
    group_name: &str,
    notice: Option<Notice>,
) -> PageResult {
    admin_only(session)?;
    let group = lookup::model_group(&state.db, group_name).await?;
    let ids = [group.model_group_id];
    let (models, holders) = tokio::try_join!(
        db::model_groups::models_of(&state.db, &ids),
        listings::group_holders(&state.db, &ids)
    )?;
    let lines: Vec<&str> = models.iter().map(|m| m.model_name.as_str()).collect();
    let content = html! {
        form method="post" action={ "/console/model-groups/" (segment(group_name)) } {
            (view::csrf(session))
            label { "Models, one per line, first tried first" textarea name="models" rows="6" required { (lines.join("\n")) } }
            p { button type="submit" { "Save models" } }
        }
        h2 { "Teams holding it" }
        p { @for (_, team) in &holders { a href={ "/console/teams/" (segment(team)) } { (team) } " " }
            @if holders.is_empty() { span.muted { "No team holds this group." } } }
    };
    let response = Page {
        session,
        title: format!("Model group {group_name}"),
        section: "model groups",
        notice,
    }
    .render(content);
    Ok(pushed(
        response,
        &format!("/console/model-groups/{}", segment(group_name)),
    ))
}

/// `POST /console/model-groups/{name}`: `PUT /api/model-groups/{name}/models`.
pub async fn update(
    State(state): State<AppState>,
    Extension(api): Extension<Api>,
    Path(group_name): Path<String>,
    form: ConsoleForm,
) -> PageResult {
    let session = form.operator()?;
    let path = format!("/api/model-groups/{}/models", segment(&group_name));
    let body = models_from(form.text("models").unwrap_or_default());
    let notice = api
        .notice(session, Method::PUT, &path, Some(body), |_| {
            "Models saved".into()
        })
        .await;
    render_group(session, &state, &group_name, Some(notice)).await
}
