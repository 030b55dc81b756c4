//! The web console under `/console`: operators manage tenants and watch the fleet; a team sees
//! its own balance, jobs and usage. Server-rendered HTML, assets compiled into the binary,
//! actions sent through the JSON API's own router (see `dispatch`).

mod chart;
mod deliveries;
mod dispatch;
mod groups;
mod jobs;
mod overview;
mod session;
mod teams;
mod tenants;
mod usage;
mod view;

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use crate::state::AppState;

pub use dispatch::Api;
pub use session::MAX_FAILED_SIGN_INS;

/// Largest console form accepted (forms are a few fields; model lists are the largest).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The console's routes; `api` is the JSON API's finished router, which actions go through.
pub fn router(state: AppState, api: Router) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/console", get(overview::page))
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route("/console/live", get(overview::live))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route(
            "/console/organizations",
            get(tenants::organizations).post(tenants::create_organization),
        )
        .route(
            "/console/organizations/{organization_id}",
            get(tenants::organization),
        )
        .route(
            "/console/teams",
            get(tenants::teams).post(tenants::create_team),
        )
        .route("/console/teams/{team_id}", get(teams::page))
        .route("/console/teams/{team_id}/ledger", get(teams::ledger))
        .route("/console/teams/{team_id}/{action}", post(teams::act))
        .route(
            "/console/model-groups",
            get(groups::list).post(groups::create),
        )
        .route(
            "/console/model-groups/{group_name}",
            get(groups::page).post(groups::update),
        )
        .route("/console/jobs", get(jobs::list))
        .route("/console/jobs/{job_id}", get(jobs::page))
        .route("/console/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/console/usage", get(usage::page))
        .route("/console/usage.csv", get(usage::csv))
        .route("/console/webhooks", get(deliveries::list))
        // Any other address under /console is the console's own 404 page, not the API's JSON.
        .route("/console/{*rest}", axum::routing::any(not_found))
        .route(assets::HTMX, get(assets::htmx))
        .route(&assets::STYLESHEET, get(assets::stylesheet))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(Api(api)))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn(server_timing))
        .with_state(state)
}

/// Says how long the server took to make each page (`Server-Timing: app;dur=<ms>`), so a
/// browser's developer tools and the benchmark can read the server's share of a page's time.
async fn server_timing(request: Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let millis = started.elapsed().as_secs_f64() * 1_000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={millis:.2}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

/// A method a console address does not take: the console's own 405 page (`/` answers JSON, as
/// it does an API client).
async fn method_not_allowed(request: Request) -> Response {
    let error = crate::error::ApiError::MethodNotAllowed(format!(
        "Method {} is not allowed on {}",
        request.method(),
        request.uri().path()
    ));
    match request.uri().path() {
        "/" => error.into_response(),
        _ => view::error_page(&error),
    }
}

async fn not_found(request: Request) -> Response {
    view::error_page(&crate::error::ApiError::NotFound(format!(
        "No console page at {}",
        request.uri().path()
    )))
}

/// `GET /`: a browser goes to the console; an API client gets pointers as JSON.
async fn root(headers: HeaderMap) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if browser {
        return Redirect::to("/console").into_response();
    }
    axum::Json(serde_json::json!({
        "service": "saasllm-api",
        "console": "/console",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "health": "/health",
    }))
    .into_response()
}

#[derive(Deserialize)]
struct SignInQuery {
    reason: Option<String>,
}

async fn sign_in_page(Query(query): Query<SignInQuery>) -> Response {
    let message = match query.reason.as_deref() {
        Some("expired") => Some("Your session has ended: sign in again"),
        Some("key") => Some("The key you signed in with is no longer valid"),
        Some("suspended") => Some("This team is suspended"),
        Some("signed-out") => Some("Signed out"),
        _ => None,
    };
    view::sign_in_page(message)
}

async fn sign_in(State(state): State<AppState>, request: Request) -> Response {
    session::sign_in(state, request).await
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: session::ConsoleForm,
) -> Response {
    session::sign_out(state, form, &headers).await
}

/// The vendored script and the stylesheet, compiled in and cached by browsers (their addresses
/// carry a version or a digest, so a new release never meets a stale copy).
mod assets {
    use super::*;

    pub const HTMX: &str = "/console/assets/htmx-2.0.11.min.js";
    const CSS: &str = include_str!("../../assets/console.css");

    /// The stylesheet's address carries a digest of its content.
    pub static STYLESHEET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(CSS.as_bytes()));
        format!("/console/assets/console-{}.css", &digest[..12])
    });

    pub async fn htmx() -> Response {
        asset(
            include_str!("../../assets/htmx-2.0.11.min.js"),
            "text/javascript; charset=utf-8",
        )
    }

    pub async fn stylesheet() -> Response {
        asset(CSS, "text/css; charset=utf-8")
    }

    fn asset(body: &'static str, content_type: &'static str) -> Response {
        let mut response = (StatusCode::OK, body).into_response();
        view::set_headers(
            response.headers_mut(),
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
        );
        response
    }
}
