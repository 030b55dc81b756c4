//! The one integration-test binary: real PostgreSQL (a fresh database per test) and real Redis.

mod helpers;

mod auth;
mod credits;
mod health;
mod model_groups;
mod organizations;
mod request_errors;
mod teams;
