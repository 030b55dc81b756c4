//! Domain types and pure rules: keys, money, states, backoff, webhook signatures and targets.

pub mod admin;
pub mod backoff;
pub mod batch_api;
pub mod estimate;
pub mod estimate_embeddings;
pub mod keys;
pub mod limits;
pub mod money;
pub mod net_policy;
pub mod outcomes;
pub mod periods;
pub mod pricing;
pub mod status;
pub(crate) mod stored_names;
pub mod webhook;
