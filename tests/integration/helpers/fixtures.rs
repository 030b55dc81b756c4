//! Set-ups and checks that several test files share: JSON requests in one call, webhook
//! receivers and their signature check, stacks with model-chain resilience settings, and the
//! spend and reservations of a team.

pub mod requests;
pub mod resilience;
pub mod spend;
pub mod webhooks;
