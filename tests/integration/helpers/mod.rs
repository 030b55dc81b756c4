//! Test harness: start the API on a free port over the test's own database and Redis namespace.

pub mod app;
pub mod browser;
pub mod call_rows;
pub mod cluster;
pub mod fixtures;
pub mod groups;
pub mod peer;
pub mod stack;
pub mod team_jobs;

pub use app::{ADMIN_KEY, TestApp, spawn_app};
