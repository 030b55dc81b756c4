//! Group commit per team. A request for a team that finds no flush running for that team starts
//! one at once (so a lone request waits for nothing); requests arriving while a flush runs gather
//! and go together in the next one. A flush is one transaction, so a busy team pays one commit
//! and one update of its balance row per group instead of one per request, and its requests stop
//! queueing one by one on that row's lock.
//!
//! The flush runs in a task of its own, not in the request that started it: a client hanging up
//! drops its request's future, and must neither abandon the requests gathered behind it nor
//! leave its transaction half-driven.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

/// Pauses before each new try of a group that failed for a reason a retry may fix (a deadlock or
/// serialization victim, a dropped connection). Short: requests are waiting on the answer.
const RETRY_PAUSES: [Duration; 4] = [
    Duration::from_millis(5),
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(500),
];

/// What a group of one team's requests is flushed with.
pub trait Flush: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    type Answer: Send + 'static;

    /// Serves `requests` (all of `team`, in arrival order) in one transaction and answers each,
    /// in the same order. `retrying` is set when an earlier try of some of these requests
    /// failed: that try may have committed before its connection broke, so the flush must not
    /// apply anything twice.
    fn flush(
        &self,
        team: &str,
        requests: &[&Self::Request],
        retrying: bool,
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Answer>>> + Send;
}

/// A database error answered to every request of a group that failed as a whole.
#[derive(Debug, Clone)]
pub struct GroupError(Arc<sqlx::Error>);

impl GroupError {
    pub fn database_error(&self) -> &sqlx::Error {
        &self.0
    }

    /// The error itself when no other request shares it.
    pub fn into_owned(self) -> Result<sqlx::Error, Self> {
        Arc::try_unwrap(self.0).map_err(Self)
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for GroupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl From<sqlx::Error> for GroupError {
    fn from(error: sqlx::Error) -> Self {
        Self(Arc::new(error))
    }
}

/// Whether PostgreSQL or the connection failed in a way that a new try may get past: the
/// transaction was a deadlock or serialization victim, or the connection broke or could not be
/// had. A violated constraint or a value PostgreSQL refuses fails the same way again.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            matches!(&*code, "40001" | "40P01" | "55P03" | "53300")
                || code.starts_with("08")
                || code.starts_with("57P")
        }),
        _ => false,
    }
}

type Waiter<F> = (
    <F as Flush>::Request,
    oneshot::Sender<Result<<F as Flush>::Answer, GroupError>>,
);

/// Requests gathered per team; cheap to clone.
pub struct GroupCommit<F: Flush> {
    inner: Arc<Inner<F>>,
}

impl<F: Flush> Clone for GroupCommit<F> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<F: Flush> {
    flusher: F,
    /// What is flushed, for the metrics (`create`, `settle`).
    kind: &'static str,
    /// A team has an entry exactly while a flush task runs for it; the entry holds the requests
    /// waiting for that task's next group.
    teams: Mutex<HashMap<String, VecDeque<Waiter<F>>>>,
    max_group: usize,
}

impl<F: Flush> GroupCommit<F> {
    /// Groups of at most `max_group` requests; `kind` labels their metrics.
    pub fn new(flusher: F, kind: &'static str, max_group: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                flusher,
                kind,
                teams: Mutex::new(HashMap::new()),
                max_group: max_group.max(1),
            }),
        }
    }

    /// Serves the request in the team's next group and returns its answer.
    pub async fn submit(&self, team: &str, request: F::Request) -> Result<F::Answer, GroupError> {
        let (answer, answered) = oneshot::channel();
        let start_flushing = {
            let mut teams = self.inner.lock();
            match teams.get_mut(team) {
                Some(waiting) => {
                    waiting.push_back((request, answer));
                    false
                }
                None => {
                    teams.insert(team.to_owned(), VecDeque::from([(request, answer)]));
                    true
                }
            }
        };
        if start_flushing {
            tokio::spawn(Arc::clone(&self.inner).flush_team(team.to_owned()));
        }
        answered.await.unwrap_or_else(|_| {
            Err(GroupError::from(sqlx::Error::Protocol(
                "the group flush ended without an answer".into(),
            )))
        })
    }
}

impl<F: Flush> Inner<F> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Waiter<F>>>> {
        // Pushes and drains only: a panic elsewhere leaves the map consistent.
        self.teams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Flushes the team's groups until none is waiting, then gives the team up (under the same
    /// lock a new request checks, so none is left behind without a flush).
    async fn flush_team(self: Arc<Self>, team: String) {
        let _running = RunningFlush {
            inner: &self,
            team: &team,
        };
        loop {
            let group: Vec<Waiter<F>> = {
                let mut teams = self.lock();
                let Some(waiting) = teams.get_mut(&team) else {
                    return;
                };
                if waiting.is_empty() {
                    teams.remove(&team);
                    return;
                }
                let n = waiting.len().min(self.max_group);
                waiting.drain(..n).collect()
            };
            self.flush_and_answer(&team, group).await;
        }
    }

    async fn flush_and_answer(&self, team: &str, group: Vec<Waiter<F>>) {
        let (requests, answers): (Vec<F::Request>, Vec<_>) = group.into_iter().unzip();
        let all: Vec<&F::Request> = requests.iter().collect();
        // Their ratio is the mean group: how well a busy team's requests share commits.
        metrics::counter!("group_commit_flushes_total", "kind" => self.kind).increment(1);
        metrics::counter!("group_commit_requests_total", "kind" => self.kind)
            .increment(all.len() as u64);
        match self.flush_with_retries(team, &all, false).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            // One request the database refuses (or a bug that only some rows hit) must not fail
            // the others: each is served on its own, in arrival order, so the first come are
            // still the first served.
            Err(error) if all.len() > 1 && !is_transient(&error) => {
                tracing::warn!(%team, %error, requests = all.len(), "group flush failed; serving its requests one by one");
                for (request, answer) in all.iter().zip(answers) {
                    let result = self.flush_with_retries(team, &[*request], true).await;
                    let _ = answer.send(result.map_err(GroupError::from).and_then(|mut one| {
                        one.pop().ok_or_else(|| {
                            GroupError::from(sqlx::Error::Protocol(
                                "a flush left a request unanswered".into(),
                            ))
                        })
                    }));
                }
            }
            Err(error) => {
                let error = GroupError::from(error);
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }

    async fn flush_with_retries(
        &self,
        team: &str,
        requests: &[&F::Request],
        mut retrying: bool,
    ) -> sqlx::Result<Vec<F::Answer>> {
        let mut pauses = RETRY_PAUSES.iter();
        loop {
            let outcome = self.flusher.flush(team, requests, retrying).await;
            match outcome {
                Ok(answers) if answers.len() == requests.len() => return Ok(answers),
                Ok(_) => {
                    return Err(sqlx::Error::Protocol(
                        "a flush answered a different number of requests".into(),
                    ));
                }
                Err(error) if is_transient(&error) => {
                    let Some(pause) = pauses.next() else {
                        return Err(error);
                    };
                    tracing::warn!(%team, %error, requests = requests.len(), ?pause, "group flush failed; trying again");
                    tokio::time::sleep(*pause).await;
                    retrying = true;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Gives up the team if its flush task panics, so that the next request starts a new task
/// instead of waiting behind a dead one. The requests it had gathered get an error (their
/// answer senders are dropped).
struct RunningFlush<'a, F: Flush> {
    inner: &'a Inner<F>,
    team: &'a str,
}

impl<F: Flush> Drop for RunningFlush<'_, F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.inner.lock().remove(self.team);
        }
    }
}
