//! The HTTP routes, one module per resource; this file only merges them.

mod admin_keys;
mod audit;
mod audited;
pub(crate) mod batch;
mod calls;
mod credits;
mod health;
pub(crate) mod jobs;
mod listings;
pub mod metrics;
mod model_groups;
pub(crate) mod openai;
mod openai_batches;
mod openai_embeddings;
pub(crate) mod openai_files;
mod organizations;
mod team_lifecycle;
mod team_limits;
mod team_settings;
mod teams;
mod usage;
mod webhooks;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::openapi::{self, ApiDoc};
use crate::state::AppState;

/// Every route of the API, and the OpenAPI document describing exactly those routes.
pub fn router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(organizations::router())
        .merge(model_groups::router())
        .merge(teams::router())
        .merge(team_limits::router())
        .merge(team_lifecycle::router())
        .merge(team_settings::router())
        .merge(credits::router())
        .merge(jobs::router())
        .merge(calls::router())
        .merge(batch::router())
        .merge(webhooks::router())
        .merge(openai::router())
        .merge(openai_embeddings::router())
        .merge(openai_files::router())
        .merge(openai_batches::router())
        .merge(usage::router())
        .merge(metrics::router())
        .merge(listings::router())
        .merge(admin_keys::router())
        .merge(audit::router())
        .split_for_parts();
    (router, openapi::finish(document))
}
