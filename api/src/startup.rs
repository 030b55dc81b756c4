//! Building the router with its layers, binding the listener, serving until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, Request};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use saasllm_shared::config::LlmConfig;
use saasllm_shared::db;
use saasllm_shared::domain::keys;
use saasllm_shared::domain::money::MicroUsd;
use saasllm_shared::domain::net_policy::TargetPolicy;
use saasllm_shared::job_credits::JobCredits;
use saasllm_shared::queue::CallQueue;
use saasllm_shared::redis_conn::RedisHandle;
use saasllm_worker::{Cooldowns, Engine, RetryPolicy, Upstream};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth;
use crate::budget::{Budgets, SliceSettings};
use crate::config::ApiConfig;
use crate::console;
use crate::directory::Directory;
use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::idempotency;
use crate::notify::Notifier;
use crate::openapi;
use crate::routes;
use crate::serve::{self, ConnectionLimits};
use crate::state::{AppState, Settings};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the router needs beyond the pool and Redis.
#[derive(Clone)]
pub struct ApiSettings {
    pub admin_api_key: SecretString,
    pub max_body_bytes: usize,
    pub usd_per_credit: MicroUsd,
    pub job_ttl: Duration,
    pub sync_call_timeout: Duration,
    pub complete_wait: Duration,
    pub llm: LlmConfig,
    /// Retries of a transient upstream failure on a streamed job call (the workers' policy).
    pub upstream_retry: RetryPolicy,
    /// The process's model cooldowns, shared with the workers it embeds.
    pub model_cooldowns: Arc<Cooldowns>,
    pub connections: ConnectionLimits,
    /// Longest pause allowed between two pieces of a request body.
    pub body_read_timeout: Duration,
    /// Where to serve `GET /metrics` without a key (a private address), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Which callback URLs a job may be created with (`WEBHOOK_ALLOW_PRIVATE_TARGETS`).
    pub webhook_targets: TargetPolicy,
    /// How the OpenAI-compatible path's budget slices are sized and kept.
    pub budget_slices: SliceSettings,
    /// How long a console sign-in lasts.
    pub console_session_ttl: Duration,
}

impl ApiSettings {
    /// Defaults for everything but the admin key (tests and embedders adjust fields). Streamed
    /// job calls are not retried and no model cools down unless `upstream_retry` and
    /// `model_cooldowns` are set (`build` sets them from the worker options).
    pub fn new(admin_api_key: SecretString) -> Self {
        Self {
            admin_api_key,
            max_body_bytes: 2 * 1024 * 1024,
            usd_per_credit: MicroUsd(100_000),
            job_ttl: Duration::from_secs(86_400),
            sync_call_timeout: Duration::from_secs(300),
            complete_wait: Duration::from_secs(30),
            llm: LlmConfig {
                base_url: "http://127.0.0.1:4000".to_owned(),
                api_key: None,
                timeout_secs: 120,
            },
            upstream_retry: RetryPolicy {
                max_retries: 0,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(5),
            },
            model_cooldowns: Arc::new(Cooldowns::new(0, Duration::from_secs(30))),
            connections: ConnectionLimits::default(),
            body_read_timeout: Duration::from_secs(30),
            metrics_addr: None,
            webhook_targets: TargetPolicy::default(),
            budget_slices: SliceSettings::default(),
            console_session_ttl: Duration::from_secs(8 * 3_600),
        }
    }
}

/// A bound, not yet serving, API.
pub struct Application {
    listener: TcpListener,
    router: Router,
    connections: ConnectionLimits,
    /// Given back and written at shutdown.
    budgets: Arc<Budgets>,
    /// The keyless metrics listener and what it serves, when `metrics_addr` is set.
    metrics: Option<(TcpListener, Router)>,
    /// In-process workers of the all-in-one mode, stopped after the server.
    embedded_worker: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database) and Redis, and binds.
    pub async fn build(config: &ApiConfig) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(&config.process.database).await?;
        let redis = RedisHandle::new(&config.process.redis)?;
        let admin_api_key = match &config.admin_api_key {
            Some(key) => key.clone(),
            None => generated_admin_key(),
        };
        // One cooldown table per process: streamed calls and embedded workers learn together.
        let model_cooldowns = Arc::new(config.worker.cooldowns());
        let settings = ApiSettings {
            admin_api_key,
            max_body_bytes: config.max_body_bytes,
            usd_per_credit: config.billing.usd_per_credit,
            job_ttl: Duration::from_secs(config.job_ttl_secs),
            sync_call_timeout: Duration::from_secs(config.sync_call_timeout_secs),
            complete_wait: Duration::from_secs(config.complete_wait_secs),
            llm: config.process.llm.clone(),
            upstream_retry: config.worker.retry_policy(),
            model_cooldowns: Arc::clone(&model_cooldowns),
            connections: ConnectionLimits {
                max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
                header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            },
            body_read_timeout: Duration::from_secs(config.body_read_timeout_secs),
            metrics_addr: config.metrics_addr,
            webhook_targets: config.worker.webhook_targets(),
            budget_slices: config.budget_slices(),
            console_session_ttl: Duration::from_secs(config.console_session_secs),
        };
        let mut app =
            Self::build_with(pool.clone(), redis.clone(), settings, config.bind_addr).await?;
        if config.embedded_worker {
            let engine = Engine::new(
                Upstream::new(&config.process.llm)?,
                config.worker.retry_policy(),
                model_cooldowns,
            );
            let cancel = CancellationToken::new();
            let handle = tokio::spawn(saasllm_worker::run(
                pool,
                redis,
                engine,
                config.worker.clone(),
                cancel.clone(),
            ));
            app.embedded_worker = Some((cancel, handle));
        }
        Ok(app)
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
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?,
            ),
            None => None,
        };
        routes::metrics::handle();
        let directory = Arc::new(Directory::new(pool.clone()));
        let budgets = Budgets::start(
            pool.clone(),
            settings.usd_per_credit.0,
            settings.budget_slices,
        );
        let state = AppState {
            notifier: Notifier::start(pool.clone(), Arc::clone(&directory), Arc::clone(&budgets)),
            directory,
            budgets: Arc::clone(&budgets),
            job_credits: JobCredits::new(pool.clone()),
            queue: CallQueue::new(redis.clone()),
            engine: Engine::new(
                Upstream::new(&settings.llm)?,
                settings.upstream_retry,
                Arc::clone(&settings.model_cooldowns),
            ),
            db: pool,
            redis,
            settings: Arc::new(Settings {
                admin_key_hash: keys::hash(settings.admin_api_key.expose_secret()),
                usd_per_credit: settings.usd_per_credit,
                job_ttl: settings.job_ttl,
                sync_call_timeout: settings.sync_call_timeout,
                complete_wait: settings.complete_wait,
                webhook_targets: settings.webhook_targets,
                console_session_ttl: settings.console_session_ttl,
            }),
        };
        Ok(Self {
            listener,
            metrics: metrics_listener.map(|l| (l, routes::metrics::keyless_router(state.clone()))),
            router: router(state, settings.max_body_bytes, settings.body_read_timeout),
            connections: settings.connections,
            embedded_worker: None,
            budgets,
        })
    }

    /// The OpenAI-compatible path's budgets (tests wait on their writes).
    pub fn budgets(&self) -> Arc<Budgets> {
        Arc::clone(&self.budgets)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the keyless metrics listener, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish and stops the
    /// embedded workers (which finish their in-flight calls).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "API listening");
        let metrics = self.metrics.map(|(listener, router)| {
            tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
            tokio::spawn(serve::serve(
                listener,
                router,
                ConnectionLimits {
                    max_connections: 64,
                    ..self.connections
                },
                std::future::pending(),
            ))
        });
        serve::serve(self.listener, self.router, self.connections, shutdown).await;
        // Every response has been sent: what the slices hold goes back to the teams and the
        // spend still queued is written.
        self.budgets.close(Duration::from_secs(10)).await;
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        if let Some((cancel, handle)) = self.embedded_worker {
            cancel.cancel();
            handle.await??;
        }
        Ok(())
    }
}

/// Keeps a client's `X-Request-Id` only when it is one header of 1 to 128 visible ASCII
/// characters; any other is dropped so that one is generated. The id then reads the same in the
/// response, the logs (a non-ASCII header value logged as empty) and the audit log.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(&REQUEST_ID).iter();
    let usable = match (ids.next(), ids.next()) {
        (Some(id), None) => {
            let id = id.as_bytes();
            (1..=128).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
        }
        _ => false,
    };
    if !usable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// The full router with its layers.
pub fn router(state: AppState, max_body_bytes: usize, body_read_timeout: Duration) -> Router {
    let (api, document) = routes::router();
    let api = api
        .merge(SwaggerUi::new(openapi::DOCS_PATH).url(openapi::DOCUMENT_PATH, document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .layer(axum::middleware::from_fn(crate::bulk_calls::raise_body_limit))
        .layer(axum::middleware::from_fn(routes::openai_files::raise_body_limit))
        // Outside the idempotency and body-limit layers: nothing reads a body, or replays a
        // stored response, before the key is known good.
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .route_layer(axum::middleware::from_fn(routes::metrics::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(body_read_timeout))
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
        .layer(axum::middleware::map_request(drop_unusable_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static("x-admin-key"),
        ]))
        .with_state(state.clone());
    let console = console::router(state, api.clone())
        // A form trickled in byte by byte holds its connection no longer than an API body may.
        .layer(RequestBodyTimeoutLayer::new(body_read_timeout))
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::info_span!("console", method = %request.method(), path = %request.uri().path())
        }))
        .layer(SetSensitiveRequestHeadersLayer::new([axum::http::header::COOKIE]));
    console.merge(api)
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
