//! What the fake received and how many requests it held at once, so tests can assert on the
//! traffic the system under test produced (models, bodies, credentials, concurrency).

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// One request the fake received on a chat-completions route.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `model` from the body; empty when the body had none.
    pub model: String,
    /// The full JSON body; `Null` when the body was not JSON.
    pub body: Value,
    /// The raw `Authorization` header value (e.g. `"Bearer sk-..."`), if any.
    pub authorization: Option<String>,
    /// Request path, `/v1/chat/completions` or `/chat/completions`.
    pub path: String,
    /// Arrival on a monotonic clock, for ordering and spacing assertions.
    pub received_at: Instant,
    /// Arrival on the wall clock, for comparing with timestamps stored by the system under test.
    pub received_at_wall: SystemTime,
}

/// Shared counters and the request log. A plain `Mutex<Vec>` is enough: the critical section is
/// one push, far cheaper than the HTTP work around it.
#[derive(Debug)]
pub(crate) struct Recorder {
    recording: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
    total: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// JSON lines file of request intervals (see [`Recorder::interval`]), when enabled.
    interval_log: Mutex<Option<File>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            recording: AtomicBool::new(true),
            requests: Mutex::new(Vec::new()),
            total: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            interval_log: Mutex::new(None),
        }
    }

    /// From now on, appends one JSON line per chat-completion request to `file`.
    pub fn log_intervals_to(&self, file: File) {
        *self
            .interval_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(file);
    }

    /// Starts timing a request when the interval log is on. The guard writes
    /// `{"call_id", "model", "start", "end"}` (Unix seconds) when it is dropped, which happens
    /// also when the client goes away mid-request and the handler is cancelled.
    pub fn interval(self: &Arc<Self>, call_id: Option<&str>, model: &str) -> Option<Interval> {
        let on = self
            .interval_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        on.then(|| Interval {
            recorder: Arc::clone(self),
            call_id: call_id.map(str::to_owned),
            model: model.to_owned(),
            start: unix_seconds(),
        })
    }

    /// A panicking test thread must not hide the log from the assertions that follow.
    fn log(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record(&self, request: RecordedRequest) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if self.recording.load(Ordering::Relaxed) {
            self.log().push(request);
        }
    }

    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log().clone()
    }

    pub fn count_for_model(&self, model: &str) -> usize {
        self.log().iter().filter(|r| r.model == model).count()
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Clears the log and counters; the in-flight count is live state and is left alone, and the
    /// high-water mark restarts from it so later requests are measured from now.
    pub fn reset(&self) {
        self.log().clear();
        self.total.store(0, Ordering::Relaxed);
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }
}

/// Held for the life of a request, including the whole of a streamed body, because a concurrency
/// limit upstream of the fake must cover streams until their last chunk.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Recorder>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request being timed for the interval log.
#[derive(Debug)]
pub(crate) struct Interval {
    recorder: Arc<Recorder>,
    call_id: Option<String>,
    model: String,
    start: f64,
}

impl Drop for Interval {
    fn drop(&mut self) {
        let line = serde_json::json!({
            "call_id": self.call_id,
            "model": self.model,
            "start": self.start,
            "end": unix_seconds(),
        });
        let mut log = self
            .recorder
            .interval_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = log.as_mut()
            && let Err(err) = writeln!(file, "{line}")
        {
            tracing::warn!(%err, "cannot write the request interval log");
        }
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str) -> RecordedRequest {
        RecordedRequest {
            model: model.to_owned(),
            body: Value::Null,
            authorization: None,
            path: "/v1/chat/completions".to_owned(),
            received_at: Instant::now(),
            received_at_wall: SystemTime::now(),
        }
    }

    #[test]
    fn in_flight_tracks_high_water_mark() {
        let recorder = Arc::new(Recorder::new());
        let a = recorder.enter();
        let b = recorder.enter();
        assert_eq!(recorder.in_flight(), 2);
        drop(a);
        let c = recorder.enter();
        assert_eq!(recorder.max_in_flight(), 2);
        drop((b, c));
        assert_eq!(recorder.in_flight(), 0);
        recorder.reset();
        assert_eq!(recorder.max_in_flight(), 0);
    }

    #[test]
    fn disabled_recording_still_counts() {
        let recorder = Recorder::new();
        recorder.record(request("a"));
        recorder.set_recording(false);
        recorder.record(request("a"));
        assert_eq!(recorder.total(), 2);
        assert_eq!(recorder.count_for_model("a"), 1);
        assert_eq!(recorder.requests().len(), 1);
    }
}
