//! The SaaS LiteLLM HTTP API as a library, so that `main.rs` stays thin and tests can start it.

pub mod auth;
pub mod budget;
pub mod bulk_calls;
pub mod call_dispatch;
pub mod call_request;
pub mod call_stream;
pub mod config;
pub mod console;
pub mod credits_view;
pub mod directory;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod job_access;
pub mod job_report;
pub mod job_settlement;
pub mod limits;
pub mod lookup;
pub mod model_group_input;
pub mod notify;
pub mod openai;
pub mod openapi;
pub mod paging;
pub mod roles;
pub mod routes;
pub mod serve;
pub mod sse;
pub mod startup;
pub mod state;
pub mod usage_period;
pub mod validate;

pub use config::ApiConfig;
pub use startup::Application;
