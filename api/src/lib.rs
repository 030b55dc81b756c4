//! The SaaS LiteLLM HTTP API as a library, so that `main.rs` stays thin and tests can start it.

pub mod auth;
pub mod budget;
pub mod config;
pub mod console;
pub mod credits_view;
pub mod directory;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod job_access;
pub mod limits;
pub mod lookup;
pub mod model_group_input;
pub mod notify;
pub mod openapi;
pub mod paging;
pub mod roles;
pub mod routes;
pub mod serve;
pub mod sse;
pub mod startup;
pub mod state;
pub mod usage_period;

pub use config::ApiConfig;
pub use startup::Application;
