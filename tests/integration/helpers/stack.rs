//! The whole data plane for a test: API, worker(s) on the test's own queue, and a fake upstream.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Response};
use saasllm_api::Application;
use saasllm_api::startup::ApiSettings;
use saasllm_fake_llm::FakeLlm;
use saasllm_shared::config::{LlmConfig, RedisConfig};
use saasllm_shared::queue::CallQueue;
use saasllm_shared::redis_conn::RedisHandle;
use saasllm_worker::{Upstream, WorkerOptions};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::app::{ADMIN_KEY, TestApp, ok_json, redis_url};

/// API + fake upstream, and the workers started with `start_worker`.
pub struct Stack {
    pub app: TestApp,
    pub llm: FakeLlm,
    pub redis: RedisHandle,
    workers: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    llm_timeout_secs: u64,
    worker_options: WorkerOptions,
}

/// Options of a stack.
pub struct StackOptions {
    pub workers: usize,
    pub complete_wait: Duration,
    pub sync_call_timeout: Duration,
    pub llm_timeout_secs: u64,
    pub worker_options: WorkerOptions,
    /// The Redis of the API and the workers; by default the test Redis, under a queue name of
    /// the stack's own.
    pub redis: RedisConfig,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            complete_wait: Duration::from_secs(30),
            sync_call_timeout: Duration::from_secs(30),
            llm_timeout_secs: 10,
            worker_options: test_worker_options(),
            redis: RedisConfig::standalone(&redis_url(), &format!("test-{}", uuid::Uuid::new_v4())),
        }
    }
}

/// Worker tuning for tests: a short lease, reconciler interval and webhook retry delay.
pub fn test_worker_options() -> WorkerOptions {
    WorkerOptions {
        concurrency: 16,
        batch_size: 8,
        claim_wait_ms: 3,
        lease_secs: 5,
        reconcile_interval_secs: 1,
        reconcile_grace_secs: 3,
        shutdown_timeout_secs: 10,
        // No retries or cooldowns, so that attempt lists are exact; the resilience tests set
        // their own.
        upstream_retries: 0,
        upstream_retry_base_ms: 10,
        upstream_retry_max_ms: 1_000,
        model_cooldown_failures: 0,
        model_cooldown_secs: 30,
        // Webhooks retried quickly so that retry tests take well under a second per attempt.
        webhook_poll_ms: 50,
        webhook_concurrency: 8,
        webhook_timeout_secs: 10,
        webhook_retry_base_ms: 50,
        webhook_retry_max_ms: 1_000,
        webhook_retry_window_secs: 93_600,
        // Test receivers listen on 127.0.0.1; the target policy tests turn this off.
        webhook_allow_private_targets: true,
    }
}

pub async fn spawn_stack(db: PgPool) -> Stack {
    spawn_stack_with(db, StackOptions::default()).await
}

/// A stack whose workers a test starts itself (`start_worker`), after queuing work.
pub async fn spawn_stack_without_workers(db: PgPool) -> Stack {
    let options = StackOptions {
        workers: 0,
        ..StackOptions::default()
    };
    spawn_stack_with(db, options).await
}

pub async fn spawn_stack_with(db: PgPool, options: StackOptions) -> Stack {
    let llm = FakeLlm::start();
    let redis = RedisHandle::new(&options.redis).expect("valid redis settings");
    let settings = ApiSettings {
        max_body_bytes: 1024 * 1024,
        complete_wait: options.complete_wait,
        sync_call_timeout: options.sync_call_timeout,
        llm: LlmConfig {
            base_url: llm.base_url(),
            api_key: Some(SecretString::from("sk-upstream-test".to_owned())),
            timeout_secs: options.llm_timeout_secs,
        },
        webhook_targets: options.worker_options.webhook_targets(),
        // The API streams job calls with the workers' retries and cooldown settings.
        upstream_retry: options.worker_options.retry_policy(),
        model_cooldowns: Arc::new(options.worker_options.cooldowns()),
        ..ApiSettings::new(SecretString::from(ADMIN_KEY.to_owned()))
    };
    let app = Application::build_with(
        db.clone(),
        redis.clone(),
        settings,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("API builds");
    let addr = app.local_addr();
    let budgets = app.budgets();
    tokio::spawn(app.run_until(std::future::pending()));
    let mut stack = Stack {
        app: TestApp {
            addr,
            db,
            client: reqwest::Client::new(),
            budgets,
        },
        llm,
        redis,
        workers: Vec::new(),
        llm_timeout_secs: options.llm_timeout_secs,
        worker_options: options.worker_options,
    };
    for _ in 0..options.workers {
        stack.start_worker();
    }
    stack
}

impl Stack {
    /// Starts one more worker on the stack's queue.
    pub fn start_worker(&mut self) {
        let upstream = Upstream::new(&LlmConfig {
            base_url: self.llm.base_url(),
            api_key: Some(SecretString::from("sk-upstream-test".to_owned())),
            timeout_secs: self.llm_timeout_secs,
        })
        .expect("upstream client");
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(saasllm_worker::run(
            self.app.db.clone(),
            self.redis.clone(),
            self.worker_options.engine(upstream),
            self.worker_options.clone(),
            cancel.clone(),
        ));
        self.workers.push((cancel, handle));
    }

    /// The call queue of the stack's API and workers.
    pub fn queue(&self) -> CallQueue {
        CallQueue::new(self.redis.clone())
    }

    /// Stops every worker gracefully and checks none of them failed.
    pub async fn stop_workers(&mut self) {
        for (cancel, handle) in self.workers.drain(..) {
            cancel.cancel();
            handle.await.expect("worker task").expect("worker run");
        }
    }

    /// Whether every worker task is still running (none exited on an error).
    pub fn workers_alive(&self) -> bool {
        self.workers.iter().all(|(_, h)| !h.is_finished())
    }

    /// An organization, a team with `credits` and these groups (created if missing); its key.
    pub async fn team(&self, team_id: &str, credits: i64, groups: &[(&str, &[&str])]) -> String {
        let org = format!("org_{team_id}");
        self.app.create_org(&org).await;
        for (name, models) in groups {
            let exists = self
                .app
                .admin(Method::GET, &format!("/api/model-groups/{name}"))
                .send()
                .await
                .expect("request")
                .status()
                .is_success();
            if !exists {
                self.app.create_group(name, models).await;
            }
        }
        let names: Vec<&str> = groups.iter().map(|(n, _)| *n).collect();
        let team = self.app.create_team(&org, team_id, &names, credits).await;
        team["virtual_key"]
            .as_str()
            .expect("virtual_key")
            .to_owned()
    }

    /// A team with `credits` whose one group `group` holds these models, tried in this order,
    /// each with its config (prices, limits); its key.
    pub async fn team_with_models(
        &self,
        team_id: &str,
        credits: i64,
        group: &str,
        models: &[(&str, Value)],
    ) -> String {
        let key = self.team(team_id, credits, &[]).await;
        let models: Vec<Value> = models
            .iter()
            .enumerate()
            .map(|(i, (name, config))| json!({"model_name": name, "priority": i, "config": config}))
            .collect();
        ok_json(
            self.app
                .admin(Method::POST, "/api/model-groups/create")
                .json(&json!({"group_name": group, "models": models}))
                .send()
                .await,
        )
        .await;
        ok_json(
            self.app
                .admin(Method::PUT, &format!("/api/teams/{team_id}/model-groups"))
                .json(&json!([group]))
                .send()
                .await,
        )
        .await;
        key
    }

    pub async fn create_job(&self, key: &str, team_id: &str) -> String {
        let body = json!({"team_id": team_id, "job_type": "document_analysis", "metadata": {"document_id": "doc_1"}});
        let job = ok_json(
            self.app
                .with_key(key, Method::POST, "/api/jobs/create")
                .json(&body)
                .send()
                .await,
        )
        .await;
        job["job_id"].as_str().expect("job_id").to_owned()
    }

    /// The job as `GET /api/jobs/{id}` answers it (asserting a 200).
    pub async fn get_job(&self, key: &str, job_id: &str) -> Value {
        ok_json(
            self.app
                .with_key(key, Method::GET, &format!("/api/jobs/{job_id}"))
                .send()
                .await,
        )
        .await
    }

    pub async fn llm_call(&self, key: &str, job_id: &str, body: Value) -> Response {
        self.app
            .with_key(key, Method::POST, &format!("/api/jobs/{job_id}/llm-call"))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn complete(&self, key: &str, job_id: &str, status: &str) -> Response {
        self.app
            .with_key(key, Method::POST, &format!("/api/jobs/{job_id}/complete"))
            .json(&json!({"status": status, "metadata": {"result": "done"}}))
            .send()
            .await
            .expect("request sent")
    }
}

/// A chat body for a group.
pub fn chat(group: &str, text: &str) -> Value {
    json!({"model_group": group, "messages": [{"role": "user", "content": text}], "purpose": "test"})
}

/// How long the polling helpers wait between looks: short against their deadlines, long enough
/// not to keep the database and Redis busy.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `check` until it returns true or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll_for(deadline, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Polls `probe` until it yields a value, or `None` once `deadline` passes.
pub async fn poll_for<T, F, Fut>(deadline: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
