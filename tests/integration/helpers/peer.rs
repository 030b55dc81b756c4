//! A second API process over the same database and upstream: its own runtime, pool, cache and
//! budget slices. Killing it shuts its runtime down at once, the way a crashed process stops:
//! nothing is given back, its connections just close.

use saasllm_api::Application;
use saasllm_api::budget::SliceSettings;
use saasllm_api::startup::ApiSettings;
use saasllm_shared::config::{LlmConfig, RedisConfig};
use saasllm_shared::redis_conn::RedisHandle;
use secrecy::SecretString;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::app::{ADMIN_KEY, TestApp, redis_url};

/// An API running on its own runtime.
pub struct PeerApi {
    pub app: TestApp,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl PeerApi {
    /// Starts an API over `db`'s database sending upstream requests to `llm_base_url`.
    pub async fn start(db: &PgPool, llm_base_url: String, budget_slices: SliceSettings) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let options = (*db.connect_options()).clone();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (stop, stop_requested) = tokio::sync::oneshot::channel::<()>();
        let (stopped_sender, stopped) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .connect_with(options)
                .await
                .expect("peer pool");
            let redis = RedisHandle::new(&RedisConfig::standalone(
                &redis_url(),
                &format!("test-{}", uuid::Uuid::new_v4()),
            ))
            .expect("valid redis url");
            let settings = ApiSettings {
                llm: LlmConfig {
                    base_url: llm_base_url,
                    api_key: None,
                    timeout_secs: 10,
                },
                budget_slices,
                ..ApiSettings::new(SecretString::from(ADMIN_KEY.to_owned()))
            };
            let app = Application::build_with(
                pool,
                redis,
                settings,
                "127.0.0.1:0".parse().expect("addr"),
            )
            .await
            .expect("API builds");
            let _ = sender.send((app.local_addr(), app.budgets()));
            let result = app
                .run_until(async {
                    let _ = stop_requested.await;
                })
                .await;
            let _ = stopped_sender.send(());
            result
        });
        let (addr, budgets) = receiver.await.expect("peer started");
        Self {
            app: TestApp {
                addr,
                db: db.clone(),
                client: reqwest::Client::new(),
                budgets,
            },
            runtime: Some(runtime),
            stop: Some(stop),
            stopped: Some(stopped),
        }
    }

    /// Stops the process the way SIGTERM does, and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }

    /// Stops the process as a crash would.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for PeerApi {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
