//! Who is calling: the admin (admin key) or a team (its virtual key). Extractors reject missing and
//! unknown keys with 401 and suspended teams with 403; handlers then scope every lookup to the caller.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use saasllm_shared::domain::keys;
use saasllm_shared::domain::limits::TeamLimits;
use saasllm_shared::domain::status::TeamStatus;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Team {
        team_id: String,
        organization_id: String,
        /// The team's limits, read with the key (no extra round trip on the request path).
        limits: TeamLimits,
    },
}

impl Caller {
    /// Allows the admin and the team itself; another team gets the same 404 as a missing team,
    /// so ids of other tenants cannot be probed.
    pub fn ensure_can_see_team(&self, team_id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Team { team_id: own, .. } if own != team_id => Err(team_not_found(team_id)),
            _ => Ok(()),
        }
    }

    /// For a `team_id` given in a body or query: a team key may only name its own team (403).
    pub fn ensure_acts_for_team(&self, team_id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Team { team_id: own, .. } if own != team_id => Err(ApiError::Forbidden(
                format!("team_id '{team_id}' does not match the team of this API key"),
            )),
            _ => Ok(()),
        }
    }

    /// The limits of `team_id` when the caller is that team (read with its key); `None` otherwise.
    pub fn own_limits(&self, team_id: &str) -> Option<TeamLimits> {
        match self {
            Caller::Team {
                team_id: own,
                limits,
                ..
            } if own == team_id => Some(*limits),
            _ => None,
        }
    }

    /// The caller's team, if it is a team.
    pub fn team_id(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Team { team_id, .. } => Some(team_id),
        }
    }
}

/// A request the web console sends through this router on behalf of its signed-in user: the
/// caller was resolved from the console session, and idempotency keys are scoped to it. Only
/// code in this process can put it in a request's extensions; no header can.
#[derive(Debug, Clone)]
pub struct InProcess {
    pub caller: Caller,
    /// Scope of the request's `Idempotency-Key`, in place of the credential's digest.
    pub idempotency_scope: String,
}

/// The 404 for a team that does not exist or is not the caller's.
pub fn team_not_found(team_id: &str) -> ApiError {
    ApiError::NotFound(format!("Team '{team_id}' not found"))
}

/// Authenticates every request to `/api/` and `/v1/` before anything reads its body or looks
/// up its `Idempotency-Key`: a request with a missing, unknown or revoked key, or a suspended
/// team's key, is answered 401/403 at once, so an unauthenticated client can neither make the
/// server buffer a large body nor reach a stored response. The caller is put in the request's
/// extensions for the extractors below (one key lookup per request, usually from the cache).
/// Only the admin changes keys, teams and grants: after the admin's successful change, this
/// process's cache is dropped before the response leaves, so the admin's next request here
/// sees the change; other processes hear of it from PostgreSQL.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let openai = path.starts_with("/v1/");
    // Unknown routes (no matched path) keep their plain 404 whoever asks.
    let routed = request.extensions().get::<MatchedPath>().is_some();
    if !routed || (!openai && !path.starts_with("/api/")) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let caller = match parts.extensions.get::<InProcess>() {
        Some(in_process) => Ok(in_process.caller.clone()),
        None => Caller::authenticate(&parts, &state).await,
    };
    match caller {
        Ok(caller) => {
            let admin_change = matches!(caller, Caller::Admin) && !parts.method.is_safe();
            parts.extensions.insert(caller);
            let response = next.run(Request::from_parts(parts, body)).await;
            if admin_change && response.status().is_success() {
                state.directory.forget_all();
            }
            response
        }
        Err(error) if openai => crate::routes::openai::OpenAiError::from(error).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Extracts any authenticated caller (the one `authenticate` found, else looks the key up).
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        Caller::authenticate(parts, state).await
    }
}

impl Caller {
    /// Who presented the request's key: the admin, or an active team (401 for a missing,
    /// unknown or revoked key; 403 for a suspended team).
    async fn authenticate(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = presented_key(parts)?;
        Self::from_key_hash(&keys::hash(presented), state).await
    }

    /// The caller whose key hashes to `presented_hash` (the same answers as for a presented key).
    pub async fn from_key_hash(presented_hash: &[u8], state: &AppState) -> Result<Self, ApiError> {
        if bool::from(presented_hash.ct_eq(&state.settings.admin_key_hash)) {
            return Ok(Caller::Admin);
        }
        let owner = state
            .directory
            .owner(presented_hash)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("Invalid API key".into()))?;
        if owner.status == TeamStatus::Suspended {
            return Err(ApiError::Forbidden(format!(
                "Team '{}' is suspended",
                owner.team_id
            )));
        }
        Ok(Caller::Team {
            team_id: owner.team_id,
            organization_id: owner.organization_id,
            limits: owner.limits,
        })
    }
}

/// Extracts the admin; a valid team key gets 403.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(AdminAuth),
            Caller::Team { .. } => Err(ApiError::Forbidden(
                "This endpoint requires the admin key".into(),
            )),
        }
    }
}

/// The key from `X-Admin-Key`, else from `Authorization: Bearer`.
fn presented_key(parts: &Parts) -> Result<&str, ApiError> {
    if let Some(value) = parts.headers.get("x-admin-key") {
        return value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("Invalid API key".into()));
    }
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "Missing API key: send 'Authorization: Bearer <key>' (or 'X-Admin-Key: <admin key>')"
                .into(),
        ));
    };
    let value = value.to_str().unwrap_or_default().trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized(
            "Invalid Authorization header: expected 'Authorization: Bearer <key>'".into(),
        ));
    }
    Ok(token)
}
