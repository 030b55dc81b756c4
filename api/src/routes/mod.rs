//! The HTTP routes, one module per resource; this file only merges them.

mod call_stream;
mod calls;
mod credits;
mod health;
pub(crate) mod jobs;
pub mod metrics;
mod model_groups;
mod openai;
mod organizations;
mod teams;
mod usage;
pub(crate) mod validate;

use axum::Router;

use crate::state::AppState;

/// Every route of the API.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(organizations::router())
        .merge(model_groups::router())
        .merge(teams::router())
        .merge(credits::router())
        .merge(jobs::router())
        .merge(calls::router())
        .merge(openai::router())
        .merge(usage::router())
        .merge(metrics::router())
}
