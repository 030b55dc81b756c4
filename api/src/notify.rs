//! Wakes requests waiting for a call to finish or a job to settle. Workers `pg_notify` in the
//! transaction that writes the result, so a notification arrives exactly when the row is
//! visible; one LISTEN connection per API process dispatches them to waiters by id. The same
//! connection carries the cache's change notices and other processes' requests for parked
//! budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saasllm_shared::db::calls::CALL_FINISHED_CHANNEL;
use saasllm_shared::db::jobs::JOB_SETTLED_CHANNEL;

use crate::budget::{BUDGET_RECLAIM_CHANNEL, Budgets};
use crate::directory::{DIRECTORY_CHANNEL, Directory};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::oneshot;
use uuid::Uuid;

type Registry = Mutex<HashMap<Uuid, Vec<(u64, oneshot::Sender<()>)>>>;

/// Waiters by call id and by job id.
#[derive(Default)]
pub struct Notifier {
    calls: Registry,
    jobs: Registry,
    next_token: AtomicU64,
}

/// A registration; dropping it unregisters.
pub struct Waiter<'a> {
    registry: &'a Registry,
    id: Uuid,
    token: u64,
    receiver: oneshot::Receiver<()>,
}

impl Waiter<'_> {
    /// Waits for the event, at most `timeout`; true when it was signalled.
    pub async fn wait(mut self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, &mut self.receiver).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(&self.id) {
            list.retain(|(token, _)| *token != self.token);
            if list.is_empty() {
                map.remove(&self.id);
            }
        }
    }
}

impl Notifier {
    /// Starts the listener task and returns the shared notifier.
    pub fn start(db: PgPool, directory: Arc<Directory>, budgets: Arc<Budgets>) -> Arc<Self> {
        let notifier = Arc::new(Self::default());
        let subscribers = Subscribers {
            notifier: Arc::clone(&notifier),
            directory,
            budgets,
        };
        tokio::spawn(listen(db, subscribers));
        notifier
    }

    /// Registers interest in a call; register before the event can happen, then check the row.
    pub fn call(&self, call_id: Uuid) -> Waiter<'_> {
        self.register(&self.calls, call_id)
    }

    /// Registers interest in a job's settlement.
    pub fn job(&self, job_id: Uuid) -> Waiter<'_> {
        self.register(&self.jobs, job_id)
    }

    fn register<'a>(&'a self, registry: &'a Registry, id: Uuid) -> Waiter<'a> {
        let (sender, receiver) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .push((token, sender));
        Waiter {
            registry,
            id,
            token,
            receiver,
        }
    }

    fn wake(registry: &Registry, id: Uuid) {
        let waiters = registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        for (_, sender) in waiters.into_iter().flatten() {
            let _ = sender.send(());
        }
    }

    /// Wakes everyone (after a listener reconnect, when notifications may have been missed);
    /// waiters re-read the database.
    fn wake_all(&self) {
        for registry in [&self.calls, &self.jobs] {
            let all = std::mem::take(&mut *registry.lock().unwrap_or_else(|p| p.into_inner()));
            for (_, sender) in all.into_values().flatten() {
                let _ = sender.send(());
            }
        }
    }
}

/// Who the listener serves.
struct Subscribers {
    notifier: Arc<Notifier>,
    directory: Arc<Directory>,
    budgets: Arc<Budgets>,
}

impl Subscribers {
    /// After (re)connecting, anything may have been missed: waiters re-read the database and the
    /// cache starts over.
    fn missed_some(&self) {
        self.notifier.wake_all();
        self.directory.forget_all();
    }

    fn deliver(&self, channel: &str, payload: &str) {
        match channel {
            DIRECTORY_CHANNEL => self.directory.changed(payload),
            BUDGET_RECLAIM_CHANNEL => self.budgets.give_back(payload),
            CALL_FINISHED_CHANNEL | JOB_SETTLED_CHANNEL => {
                let Ok(id) = payload.parse::<Uuid>() else {
                    return;
                };
                let registry = if channel == CALL_FINISHED_CHANNEL {
                    &self.notifier.calls
                } else {
                    &self.notifier.jobs
                };
                Notifier::wake(registry, id);
            }
            _ => {}
        }
    }
}

async fn listen(db: PgPool, subscribers: Subscribers) {
    loop {
        if db.is_closed() {
            return;
        }
        let mut listener = match PgListener::connect_with(&db).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the notification listener; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener
            .listen_all([
                CALL_FINISHED_CHANNEL,
                JOB_SETTLED_CHANNEL,
                DIRECTORY_CHANNEL,
                BUDGET_RECLAIM_CHANNEL,
            ])
            .await
        {
            tracing::warn!(error = %e, "cannot LISTEN; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        subscribers.missed_some();
        loop {
            // The pool closing (process or test shutting down) ends the listener, so that its
            // connection does not hold the database open.
            let received = tokio::select! {
                () = db.close_event() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    subscribers.deliver(notification.channel(), notification.payload());
                }
                // The connection was lost (and is re-made by the next recv).
                Ok(None) => subscribers.missed_some(),
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}
