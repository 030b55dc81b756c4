//! A deterministic, OpenAI-compatible chat-completions and embeddings server owned by the
//! project: integration tests, benchmarks and the README demo point at it instead of a real
//! provider or LiteLLM proxy.
//! Behaviour (failures, delays, cost header) is chosen by the model name; see [`Scenario`].

mod completion;
mod embeddings;
mod recorder;
mod routes;
mod scenario;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use completion::token_count;
pub use recorder::RecordedRequest;
pub use scenario::{Failure, Scenario};

use recorder::Recorder;
use routes::AppState;

/// How to run a [`FakeLlm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeLlmConfig {
    /// Added before every response, on top of any `slow-<ms>` delay.
    pub latency_ms: u64,
    /// Listen address; port 0 picks a free port, which is what tests want.
    pub addr: SocketAddr,
}

impl Default for FakeLlmConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

/// A running fake server. It serves on a spawned Tokio task and stops when this is dropped
/// (or on [`FakeLlm::shutdown`]), so each test owns an isolated instance.
#[derive(Debug)]
pub struct FakeLlm {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl FakeLlm {
    /// Starts on `127.0.0.1:<free port>` with no added latency.
    ///
    /// # Panics
    /// Outside a Tokio runtime, or if no local port can be bound.
    pub fn start() -> Self {
        Self::start_with(FakeLlmConfig::default())
    }

    /// Starts with the given configuration.
    ///
    /// # Panics
    /// Outside a Tokio runtime, or if the address cannot be bound.
    pub fn start_with(config: FakeLlmConfig) -> Self {
        Self::try_start_with(config).expect("fake LLM: failed to start")
    }

    /// Like [`FakeLlm::start_with`] but reports bind and runtime problems, for the binary.
    /// Binding happens before returning, so the server accepts connections as soon as this does.
    pub fn try_start_with(config: FakeLlmConfig) -> io::Result<Self> {
        // Checked up front because `TcpListener::from_std` and `spawn` would panic without one.
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let listener = std::net::TcpListener::bind(config.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;

        let recorder = Arc::new(Recorder::new());
        let app = routes::router(Arc::new(AppState {
            latency: Duration::from_millis(config.latency_ms),
            recorder: Arc::clone(&recorder),
            flaky_counts: Default::default(),
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            // Stream chunks go out as written, as a real provider's do (no Nagle delay).
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender means the handle is gone: stop either way.
                    let _ = stopped.await;
                })
                .await
        });
        tracing::debug!(%addr, "fake LLM listening");
        Ok(Self {
            addr,
            recorder,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<ip>:<port>`, without `/v1` (both `/v1/chat/completions` and `/chat/completions`
    /// are served). A wildcard bind is reported as loopback, which is where a client can reach it.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }

    /// Every chat-completion request received so far (while recording is on), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorder.requests()
    }

    /// Recorded requests whose body asked for exactly `model`.
    pub fn count_for_model(&self, model: &str) -> usize {
        self.recorder.count_for_model(model)
    }

    /// Chat-completion requests received, counted even while recording is off.
    pub fn total_requests(&self) -> usize {
        self.recorder.total()
    }

    /// Chat-completion requests being handled right now (streams count until their last chunk).
    pub fn in_flight(&self) -> usize {
        self.recorder.in_flight()
    }

    /// The highest [`FakeLlm::in_flight`] seen since start or the last [`FakeLlm::reset`].
    pub fn max_concurrent(&self) -> usize {
        self.recorder.max_in_flight()
    }

    /// Turns the request log on or off; counters keep working. Off keeps memory flat in
    /// long benchmarks.
    pub fn set_recording(&self, on: bool) {
        self.recorder.set_recording(on);
    }

    /// Appends one JSON line per chat-completion request to the file at `path`:
    /// `{"call_id", "model", "start", "end"}`, with `call_id` from the `x-saasllm-call-id`
    /// header and the times in Unix seconds (end = when the answer was produced or the client
    /// went away). The fault-tolerance suite reads it to find calls run twice at once.
    pub fn log_intervals_to(&self, path: &std::path::Path) -> io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        self.recorder.log_intervals_to(file);
        Ok(())
    }

    /// Forgets recorded requests and restarts the counters, for tests reusing one instance.
    pub fn reset(&self) {
        self.recorder.reset();
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server task.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already be gone with its runtime; nothing left to stop then.
            let _ = stop.send(());
        }
    }
}
