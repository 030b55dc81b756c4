//! Console sign-in: a key (the admin key, or a team's virtual key) is exchanged for a server-side
//! session behind an HttpOnly, SameSite=Strict cookie (Secure when the request came over TLS).
//! Every request resolves the caller again from the hash of the key used to sign in, so a
//! rotated or revoked key, a suspended team or a changed admin key takes effect at once. Forms
//! carry the session's CSRF token; failed sign-ins are limited per client address.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::{DateTime, Utc};
use rand::RngCore;
use redis::AsyncCommands;
use saasllm_shared::db::console_sessions;
use saasllm_shared::domain::keys;
use subtle::ConstantTimeEq;

use crate::auth::Caller;
use crate::console::view;
use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie.
pub const COOKIE: &str = "saasllm_console";
/// Failed sign-ins allowed per client address within `FAILURE_WINDOW_SECS`.
pub const MAX_FAILED_SIGN_INS: u64 = 10;
const FAILURE_WINDOW_SECS: u64 = 15 * 60;

/// A signed-in console user.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf_token: String,
    /// Hash of the key signed in with (scopes the console's idempotency keys).
    pub key_hash: Vec<u8>,
    session_hash: Vec<u8>,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        matches!(self.caller, Caller::Admin(_))
    }

    /// Idempotency keys of console actions live apart from the API's, per signed-in key.
    pub fn idempotency_scope(&self) -> String {
        format!("console:{}", hex::encode(&self.key_hash))
    }
}

/// Why a request has no usable session: the browser is sent to the sign-in page.
pub enum NoSession {
    SignIn(Option<&'static str>),
    Failed(ApiError),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::SignIn(reason) => {
                let target = match reason {
                    Some(reason) => format!("/console/sign-in?reason={reason}"),
                    None => "/console/sign-in".to_owned(),
                };
                // htmx follows `HX-Redirect` with a full page load; a browser follows the 303.
                let mut response = Redirect::to(&target).into_response();
                if let Ok(value) = target.parse() {
                    response.headers_mut().insert("hx-redirect", value);
                }
                response
            }
            NoSession::Failed(error) => view::error_page(&error),
        }
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NoSession> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = jar.get(COOKIE).map(|c| c.value().to_owned()) else {
            return Err(NoSession::SignIn(None));
        };
        let session_hash = keys::hash(&token);
        let row = console_sessions::find(&state.db, &session_hash)
            .await
            .map_err(|e| NoSession::Failed(e.into()))?;
        let Some((key_hash, csrf_token)) = row else {
            return Err(NoSession::SignIn(Some("expired")));
        };
        let caller = match Caller::from_key_hash(&key_hash, state).await {
            Ok(caller) => caller,
            Err(ApiError::Unauthorized(_)) => {
                end(state, &session_hash).await;
                return Err(NoSession::SignIn(Some("key")));
            }
            Err(ApiError::Forbidden(_)) => {
                end(state, &session_hash).await;
                return Err(NoSession::SignIn(Some("suspended")));
            }
            Err(error) => return Err(NoSession::Failed(error)),
        };
        Ok(Session {
            caller,
            csrf_token,
            key_hash,
            session_hash,
        })
    }
}

async fn end(state: &AppState, session_hash: &[u8]) {
    if let Err(error) = console_sessions::delete(&state.db, session_hash).await {
        tracing::warn!(%error, "cannot delete a console session");
    }
}

/// A console form: the signed-in session, the fields posted, and the CSRF token checked. A
/// post from another origin, or without the session's token, is refused with 403 before any
/// field is looked at.
pub struct ConsoleForm {
    pub session: Session,
    fields: Vec<(String, String)>,
}

impl FromRequest<AppState> for ConsoleForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        check_origin(&parts.headers).map_err(|e| view::error_page(&e))?;
        let request = Request::from_parts(parts, body);
        let axum::Form(fields) = axum::Form::<Vec<(String, String)>>::from_request(request, state)
            .await
            .map_err(|e| {
                view::error_page(&match e.status() {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::PayloadTooLarge(super::MAX_FORM_BYTES)
                    }
                    _ => ApiError::BadRequest(format!("Unreadable form: {e}")),
                })
            })?;
        let presented = fields
            .iter()
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value.as_bytes())
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(session.csrf_token.as_bytes())) {
            return Err(view::error_page(&ApiError::Forbidden(
                "The form's CSRF token is missing or wrong: reload the page and try again".into(),
            )));
        }
        Ok(Self { session, fields })
    }
}

impl ConsoleForm {
    /// The session of an operator (admin key); any other sees no such page (404).
    pub fn operator(&self) -> Result<&Session, view::ErrorPage> {
        view::admin_only(&self.session)?;
        Ok(&self.session)
    }

    /// A field's value, trimmed; `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A required field (400 naming it when missing).
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.text(name)
            .ok_or_else(|| ApiError::BadRequest(format!("'{name}' is required")))
    }
}

/// A browser sends `Origin` with every POST: one that is not this host is another site's form.
fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    if origin_host == Some(host) && !host.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Cross-origin form posts are not accepted".into(),
        ))
    }
}

/// Whether the request reached us over TLS (a proxy that terminates TLS says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: String, headers: &HeaderMap, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build((COOKIE, value))
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_tls(headers))
        .max_age(time_duration(max_age_secs))
        .build()
}

fn time_duration(secs: i64) -> time::Duration {
    time::Duration::seconds(secs)
}

/// The client address sign-ins are counted under: the IP address, or for IPv6 its /64 (one
/// host usually holds a whole /64, and could otherwise count under many addresses).
fn client_address(parts: &Parts) -> String {
    match parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    {
        Some(std::net::IpAddr::V6(ip)) if ip.to_ipv4_mapped().is_none() => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(std::net::IpAddr::V6(ip)) => ip.to_canonical().to_string(),
        Some(ip) => ip.to_string(),
        None => "unknown".to_owned(),
    }
}

/// Counted per deployment (the Redis namespace) and client address.
fn failures_key(state: &AppState, address: &str) -> String {
    format!(
        "{}:console:failed-sign-ins:{address}",
        state.redis.namespace
    )
}

/// `POST /console/sign-in`: checks the key, then opens a session. Every attempt is counted
/// before its key is looked at (one atomic increment), and a successful one is taken back off:
/// so however many attempts arrive at once, at most `MAX_FAILED_SIGN_INS` failures per window
/// are ever checked.
pub async fn sign_in(state: AppState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return view::error_page(&ApiError::MethodNotAllowed("Use POST".into()));
    }
    if let Err(error) = check_origin(&parts.headers) {
        return view::error_page(&error);
    }
    let request = Request::from_parts(parts.clone(), body);
    let key = match axum::Form::<Vec<(String, String)>>::from_request(request, &state).await {
        Ok(axum::Form(fields)) => fields
            .into_iter()
            .find(|(n, _)| n == "key")
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default(),
        Err(error) => {
            return view::error_page(&ApiError::BadRequest(format!("Unreadable form: {error}")));
        }
    };
    let counter = failures_key(&state, &client_address(&parts));
    // Without Redis the limit cannot be kept: refuse rather than allow unlimited guesses.
    let mut redis = match state.redis.connection().await {
        Ok(redis) => redis,
        Err(error) => return view::error_page(&redis_down(error)),
    };
    let counted: redis::RedisResult<(u64,)> = redis::pipe()
        .atomic()
        .incr(&counter, 1)
        .expire(&counter, FAILURE_WINDOW_SECS as i64)
        .ignore()
        .query_async(&mut redis)
        .await;
    let attempts = match counted {
        Ok((attempts,)) => attempts,
        Err(error) => return view::error_page(&redis_down(error)),
    };
    if attempts > MAX_FAILED_SIGN_INS {
        let page = view::sign_in_page(Some(
            "Too many failed sign-ins from this address: wait 15 minutes and try again",
        ));
        return (axum::http::StatusCode::TOO_MANY_REQUESTS, page).into_response();
    }
    let key_hash = keys::hash(&key);
    let refused = match Caller::from_key_hash(&key_hash, &state).await {
        _ if key.is_empty() => Some("Enter a key"),
        Ok(_) => None,
        Err(ApiError::Forbidden(_)) => Some("This team is suspended"),
        Err(ApiError::Unauthorized(_)) => Some("This key is not valid"),
        Err(error) => return view::error_page(&error),
    };
    if let Some(reason) = refused {
        let page = view::sign_in_page(Some(reason));
        return (axum::http::StatusCode::UNAUTHORIZED, page).into_response();
    }
    if let Err(error) = redis.decr::<_, _, i64>(&counter, 1).await {
        tracing::warn!(%error, "cannot take a successful console sign-in off the count");
    }
    match open(&state, &key_hash).await {
        Ok((token, expires_at)) => {
            let max_age = (expires_at - Utc::now()).num_seconds();
            let jar = CookieJar::new().add(session_cookie(token, &parts.headers, max_age));
            let mut response = (jar, Redirect::to("/console")).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(error) => view::error_page(&error),
    }
}

/// Stores a new session for `key_hash` (and drops expired ones): its cookie value and expiry.
async fn open(state: &AppState, key_hash: &[u8]) -> Result<(String, DateTime<Utc>), ApiError> {
    let token = random_token();
    let csrf = random_token();
    let ttl = chrono::Duration::from_std(state.settings.console_session_ttl)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let expires_at = Utc::now() + ttl;
    console_sessions::delete_expired(&state.db).await?;
    console_sessions::insert(&state.db, &keys::hash(&token), key_hash, &csrf, expires_at).await?;
    Ok((token, expires_at))
}

/// `POST /console/sign-out`: ends the session and clears the cookie.
pub async fn sign_out(state: AppState, form: ConsoleForm, headers: &HeaderMap) -> Response {
    end(&state, &form.session.session_hash).await;
    let jar = CookieJar::new().add(session_cookie(String::new(), headers, 0));
    (jar, Redirect::to("/console/sign-in?reason=signed-out")).into_response()
}

fn redis_down(error: redis::RedisError) -> ApiError {
    tracing::warn!(%error, "console sign-in cannot reach Redis");
    ApiError::Unavailable("Sign-in is unavailable for a moment: try again".into())
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
