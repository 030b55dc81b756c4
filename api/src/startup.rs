//! Building the router with its layers, binding the listener, serving until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, Request};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use saasllm_shared::db;
use saasllm_shared::domain::keys;
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::redis_conn::RedisHandle;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::routes;
use crate::state::{AppState, Settings};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the router needs beyond the pool and Redis.
#[derive(Clone)]
pub struct ApiSettings {
    pub admin_api_key: SecretString,
    pub max_body_bytes: usize,
    pub usd_per_credit: MicroUsd,
}

/// A bound, not yet serving, API.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database) and Redis, and binds.
    pub async fn build(config: &ApiConfig) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&config.database).await?;
        let redis = RedisHandle::new(&config.redis)?;
        let admin_api_key = match &config.admin_api_key {
            Some(key) => key.clone(),
            None => generated_admin_key(),
        };
        let settings = ApiSettings {
            admin_api_key,
            max_body_bytes: config.max_body_bytes,
            usd_per_credit: config.billing.usd_per_credit,
        };
        Self::build_with(pool, redis, settings, config.bind_addr).await
    }

    /// Binds an API over existing connections (tests use port 0).
    pub async fn build_with(
        pool: PgPool,
        redis: RedisHandle,
        settings: ApiSettings,
        addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let state = AppState {
            db: pool,
            redis,
            settings: Arc::new(Settings {
                admin_key_hash: keys::hash(settings.admin_api_key.expose_secret()),
                usd_per_credit: settings.usd_per_credit,
            }),
        };
        Ok(Self {
            listener,
            router: router(state, settings.max_body_bytes),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %self.local_addr(), "API listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The full router with its layers.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    routes::router()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(BodyLimit(max_body_bytes)))
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static("x-admin-key"),
        ]))
        .with_state(state)
}

async fn not_found(request: Request) -> Response {
    ApiError::NotFound(format!(
        "No route for {} {}",
        request.method(),
        request.uri().path()
    ))
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    let mut response = ApiError::MethodNotAllowed(format!(
        "Method {} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
    .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// A fresh admin key for a first run without `ADMIN_API_KEY`, printed once so the operator can
/// proceed (it is never logged through tracing).
fn generated_admin_key() -> SecretString {
    let key = keys::generate().plain.replacen("sk-", "sk-admin-", 1);
    eprintln!(
        "\n  ADMIN_API_KEY was not set; generated an admin key for this run:\n\n      {key}\n\n  \
         Send it as 'X-Admin-Key: <key>' or 'Authorization: Bearer <key>'. Set ADMIN_API_KEY to keep one across restarts.\n"
    );
    SecretString::from(key)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
