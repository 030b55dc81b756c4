//! What the OpenAI-compatible routes (`/v1/...`) share beyond their handlers: OpenAI's error
//! shape, admitting a request (team key, model, budget), passing the upstream's answer on while
//! settling what it cost, and the progress counts of batches.

pub(crate) mod admission;
pub(crate) mod batch_progress;
mod error;
pub(crate) mod relay;
pub(crate) mod usage;

pub use error::{KeyRefusals, ModelRefusals, OpenAiError};
