//! The one table of what each admin role may do: (method, route template) -> the least role
//! allowed. `auth::authenticate` checks it for every admin request, from a client or from the
//! console (which sends its actions through the same router), before any handler runs. A route
//! missing from the table needs `owner`: a new route is closed to lesser keys until it is listed.
//! Team keys are not concerned: what a team may do is decided by the handlers.

use axum::http::Method;
use saasllm_shared::domain::admin::AdminRole;

use crate::error::ApiError;

use AdminRole::{Billing, Owner, Viewer};

/// Every admin route with the least role allowed to call it. Templates are axum's `MatchedPath`,
/// which are also the OpenAPI document's paths. HEAD is checked as GET.
pub const LEAST_ROLE: &[(&str, &str, AdminRole)] = &[
    // Reading: any admin key.
    ("GET", "/metrics", Viewer),
    ("GET", "/api/audit", Viewer),
    ("GET", "/api/organizations", Viewer),
    ("GET", "/api/organizations/{organization_id}", Viewer),
    ("GET", "/api/organizations/{organization_id}/teams", Viewer),
    ("GET", "/api/organizations/{organization_id}/usage", Viewer),
    ("GET", "/api/model-groups", Viewer),
    ("GET", "/api/model-groups/{group_name}", Viewer),
    ("GET", "/api/model-groups/{group_name}/models", Viewer),
    ("GET", "/api/model-groups/{group_name}/resolve", Viewer),
    ("GET", "/api/teams", Viewer),
    ("GET", "/api/teams/{team_id}", Viewer),
    ("GET", "/api/teams/{team_id}/jobs", Viewer),
    ("GET", "/api/teams/{team_id}/usage", Viewer),
    ("GET", "/api/credits/teams/{team_id}/balance", Viewer),
    ("GET", "/api/credits/teams/{team_id}/transactions", Viewer),
    // A POST that only reads the balance.
    ("POST", "/api/credits/teams/{team_id}/check", Viewer),
    ("GET", "/api/jobs", Viewer),
    ("GET", "/api/jobs/{job_id}", Viewer),
    ("GET", "/api/jobs/{job_id}/calls", Viewer),
    ("GET", "/api/jobs/{job_id}/calls/{call_id}", Viewer),
    ("GET", "/api/jobs/{job_id}/webhooks", Viewer),
    // Credits and billing settings.
    ("POST", "/api/credits/teams/{team_id}/add", Billing),
    ("PUT", "/api/teams/{team_id}/alerts", Billing),
    ("PUT", "/api/teams/{team_id}/refills", Billing),
    // Tenants, grants, keys; and jobs, which spend a team's credits.
    ("POST", "/api/organizations/create", Owner),
    ("POST", "/api/model-groups/create", Owner),
    ("PUT", "/api/model-groups/{group_name}/models", Owner),
    ("DELETE", "/api/model-groups/{group_name}", Owner),
    ("POST", "/api/teams/create", Owner),
    ("PUT", "/api/teams/{team_id}/limits", Owner),
    ("PUT", "/api/teams/{team_id}/model-groups", Owner),
    ("POST", "/api/teams/{team_id}/suspend", Owner),
    ("POST", "/api/teams/{team_id}/resume", Owner),
    ("POST", "/api/teams/{team_id}/rotate-key", Owner),
    ("POST", "/api/jobs/create", Owner),
    ("POST", "/api/jobs/{job_id}/llm-call", Owner),
    ("POST", "/api/jobs/{job_id}/llm-calls", Owner),
    ("POST", "/api/jobs/{job_id}/complete", Owner),
    ("POST", "/api/jobs/{job_id}/cancel", Owner),
    ("GET", "/api/admin-keys", Owner),
    ("POST", "/api/admin-keys/create", Owner),
    ("POST", "/api/admin-keys/{admin_key_id}/revoke", Owner),
    // The OpenAI-compatible routes take team keys only: their handlers answer any admin key
    // with what to send instead, which says more than a role refusal would.
    ("GET", "/v1/models", Viewer),
    ("POST", "/v1/chat/completions", Viewer),
    ("POST", "/v1/embeddings", Viewer),
    ("GET", "/v1/files", Viewer),
    ("POST", "/v1/files", Viewer),
    ("GET", "/v1/files/{file_id}", Viewer),
    ("DELETE", "/v1/files/{file_id}", Viewer),
    ("GET", "/v1/files/{file_id}/content", Viewer),
    ("GET", "/v1/batches", Viewer),
    ("POST", "/v1/batches", Viewer),
    ("GET", "/v1/batches/{batch_id}", Viewer),
    ("POST", "/v1/batches/{batch_id}/cancel", Viewer),
];

/// The least role that may call `method template`: `owner` for a route not in the table; none
/// for a listed route with a method it does not have, which the router answers 405 (a 403 would
/// suggest that a higher role could). `tests/integration/admin_roles.rs` fails when a served
/// admin operation is missing here, so a new method on a listed route cannot slip through.
pub fn least_role(method: &Method, template: &str) -> Option<AdminRole> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let mut routes = LEAST_ROLE
        .iter()
        .filter(|(_, t, _)| *t == template)
        .peekable();
    if routes.peek().is_none() {
        return Some(Owner);
    }
    routes
        .find(|(m, _, _)| *m == method)
        .map(|(_, _, role)| *role)
}

/// Whether an admin request with this role may change something (not a read): after such a
/// request succeeds, cached keys and grants are dropped.
pub fn changes_state(method: &Method, template: &str) -> bool {
    !method.is_safe() && least_role(method, template).is_some_and(|role| role > Viewer)
}

/// Refuses (403) an admin key whose role is below what the route needs.
pub fn authorize(role: AdminRole, method: &Method, template: &str) -> Result<(), ApiError> {
    let Some(required) = least_role(method, template) else {
        return Ok(());
    };
    if role.allows(required) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "This action requires the {required} role; this admin key is {role}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_routes_need_the_owner_and_head_is_read_as_get() {
        assert_eq!(least_role(&Method::GET, "/api/not-yet-listed"), Some(Owner));
        assert_eq!(least_role(&Method::PATCH, "/api/teams/{team_id}"), None);
        assert_eq!(
            least_role(&Method::HEAD, "/api/teams/{team_id}"),
            Some(Viewer)
        );
        assert_eq!(
            least_role(&Method::POST, "/api/credits/teams/{team_id}/add"),
            Some(Billing)
        );
        assert!(!changes_state(
            &Method::POST,
            "/api/credits/teams/{team_id}/check"
        ));
        assert!(changes_state(&Method::POST, "/api/teams/create"));
    }

    #[test]
    fn refusals_name_both_roles() {
        let refusal = authorize(Viewer, &Method::POST, "/api/teams/create")
            .expect_err("a viewer may not create teams");
        assert_eq!(
            refusal.to_string(),
            "This action requires the owner role; this admin key is viewer"
        );
        assert!(authorize(Owner, &Method::POST, "/api/teams/create").is_ok());
        assert!(authorize(Billing, &Method::GET, "/api/teams/{team_id}").is_ok());
    }

    #[test]
    fn each_route_is_listed_once() {
        for (i, (method, template, _)) in LEAST_ROLE.iter().enumerate() {
            assert!(
                !LEAST_ROLE[i + 1..]
                    .iter()
                    .any(|(m, t, _)| m == method && t == template),
                "{method} {template} is listed twice"
            );
        }
    }
}
