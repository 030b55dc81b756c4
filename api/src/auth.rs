//! Who is calling: an admin (the bootstrap admin key or a named admin key with a role) or a team
//! (its virtual key). Missing, unknown and revoked keys get 401, suspended teams 403, an admin key
//! below the route's role 403 (`roles`); handlers then scope every lookup to the caller. Admin
//! handlers take `AdminAuth`, which also appends their changes to the audit log.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use saasllm_shared::db;
use saasllm_shared::db::admin_keys::AdminKeyRow;
use saasllm_shared::domain::admin::{self, AdminRole};
use saasllm_shared::domain::keys;
use saasllm_shared::domain::limits::TeamLimits;
use saasllm_shared::domain::status::TeamStatus;
use sqlx::PgConnection;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::ApiError;
use crate::roles;
use crate::state::AppState;

/// Which admin key is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminIdentity {
    /// The admin key's id; `None` for the bootstrap `ADMIN_API_KEY`.
    pub id: Option<Uuid>,
    pub name: String,
    pub role: AdminRole,
}

impl AdminIdentity {
    /// The bootstrap `ADMIN_API_KEY`: an owner named `bootstrap`.
    pub fn bootstrap() -> Self {
        Self {
            id: None,
            name: admin::BOOTSTRAP.to_owned(),
            role: AdminRole::Owner,
        }
    }

    /// The id the audit log and `created_by` name this key by: its id, or `bootstrap`.
    pub fn actor_id(&self) -> String {
        self.id
            .map_or_else(|| admin::BOOTSTRAP.to_owned(), |id| id.to_string())
    }
}

impl From<AdminKeyRow> for AdminIdentity {
    fn from(row: AdminKeyRow) -> Self {
        Self {
            id: Some(row.admin_key_id),
            name: row.name,
            role: row.role,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin(AdminIdentity),
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
            Caller::Admin(_) => None,
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
/// up its `Idempotency-Key`: a request with a missing, unknown or revoked key, a suspended
/// team's key, or an admin key whose role does not reach the route's (`roles::LEAST_ROLE`), is
/// answered 401/403 at once, so an unauthenticated client can neither make the server buffer a
/// large body nor reach a stored response. The console's requests (`InProcess`) pass the same
/// role check. The caller is put in the request's extensions for the extractors below (one key
/// lookup per request, usually from the cache). Only admins change keys, teams and grants:
/// after an admin's successful change, this process's cache is dropped before the response
/// leaves, so the admin's next request here sees the change; other processes hear of it from
/// PostgreSQL.
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
    }
    .and_then(|caller| caller.authorize(&parts));
    match caller {
        Ok(caller) => {
            // A read-only POST (the credits check) by a viewer must not flush the caches.
            let admin_change = matches!(caller, Caller::Admin(_))
                && parts
                    .extensions
                    .get::<MatchedPath>()
                    .is_some_and(|template| roles::changes_state(&parts.method, template.as_str()));
            parts.extensions.insert(caller);
            let response = next.run(Request::from_parts(parts, body)).await;
            if admin_change && response.status().is_success() {
                state.directory.forget_all();
            }
            response
        }
        Err(error) if openai => crate::openai::OpenAiError::from(error).into_response(),
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
        // A route outside `authenticate`'s reach (`/metrics`): the same checks, here.
        Caller::authenticate(parts, state).await?.authorize(parts)
    }
}

/// Which kind of key a presented key can be, from its shape alone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `sk-admin-...`: only an admin key (team keys are `sk-<hex>`).
    Admin,
    /// Anything else: only a team key (or the bootstrap key, compared first).
    Team,
    /// Only its hash is known (a console session): either.
    Unknown,
}

impl Caller {
    /// Who presented the request's key: an admin, or an active team (401 for a missing,
    /// unknown or revoked key; 403 for a suspended team).
    async fn authenticate(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = presented_key(parts)?;
        let shape = match admin::looks_like_admin_key(presented) {
            true => Shape::Admin,
            false => Shape::Team,
        };
        Self::resolve(&keys::hash(presented), shape, state).await
    }

    /// The caller whose key hashes to `presented_hash` (the same answers as for a presented key).
    pub async fn from_key_hash(presented_hash: &[u8], state: &AppState) -> Result<Self, ApiError> {
        Self::resolve(presented_hash, Shape::Unknown, state).await
    }

    /// Looks the key up where its shape says it can be: a team key costs no admin lookup and an
    /// admin key no team lookup. Admin keys are read from the database on every request (no
    /// cache): admin traffic is light, and a revoked key is refused by every process at once.
    async fn resolve(
        presented_hash: &[u8],
        shape: Shape,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        if bool::from(presented_hash.ct_eq(&state.settings.admin_key_hash)) {
            return Ok(Caller::Admin(AdminIdentity::bootstrap()));
        }
        if shape != Shape::Team
            && let Some(row) = db::admin_keys::find_active(&state.db, presented_hash).await?
        {
            return Ok(Caller::Admin(row.into()));
        }
        if shape == Shape::Admin {
            return Err(ApiError::Unauthorized("Invalid API key".into()));
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

    /// Refuses an admin key whose role does not reach the matched route's (403); team keys
    /// pass (their handlers decide).
    fn authorize(self, parts: &Parts) -> Result<Self, ApiError> {
        if let Caller::Admin(admin) = &self {
            let template = parts
                .extensions
                .get::<MatchedPath>()
                .map_or("", MatchedPath::as_str);
            roles::authorize(admin.role, &parts.method, template)?;
        }
        Ok(self)
    }
}

/// Extracts an admin, with what the audit log needs of the request; a valid team key gets 403.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub admin: AdminIdentity,
    /// The request's `X-Request-Id` (the client's, or the one the API assigned).
    request_id: Option<String>,
}

/// Longest request id kept in the audit log (a client may send any).
const MAX_REQUEST_ID_LEN: usize = 200;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin(admin) => Ok(AdminAuth {
                admin,
                request_id: parts
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(MAX_REQUEST_ID_LEN).collect()),
            }),
            Caller::Team { .. } => Err(ApiError::Forbidden(
                "This endpoint requires the admin key".into(),
            )),
        }
    }
}

impl AdminAuth {
    /// Appends the audit row of a change this admin made, in the transaction `conn` is in (so
    /// the row commits with the change, or not at all): `action` as `<object>.<verb>`, the
    /// target as (type, id), snapshots of the relevant fields before and after (`None` where
    /// the object did not exist; never a secret). A change that changed nothing (`before ==
    /// after`) writes no row.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        action: &str,
        (target_type, target_id): (&str, &str),
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<(), ApiError> {
        if before == after {
            return Ok(());
        }
        let actor_id = self.admin.actor_id();
        let entry = db::audit::NewEntry {
            actor: db::audit::Actor {
                id: &actor_id,
                name: &self.admin.name,
                role: self.admin.role.as_str(),
            },
            action,
            target_type,
            target_id,
            before: before.as_ref(),
            after: after.as_ref(),
            request_id: self.request_id.as_deref(),
        };
        db::audit::insert(conn, &entry).await?;
        Ok(())
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
