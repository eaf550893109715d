//! The durable request queue: submit, status, cancel and result over SQLite, run by a pool of
//! workers that call the registered endpoints.

pub mod routes;
pub mod store;
mod stream;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fresco_protocol::EndpointId;
use fresco_protocol::queue::{LogLevel, QueuePriority, QueueStatus, Status};
use futures_util::FutureExt;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError, timestamp};
use crate::endpoints::{Failure, JobContext, Policy, Registry};
use crate::storage::Storage;
pub use store::{CancelEffect, NewRequest, Outcome};

/// A change to one request's status (its state, its logs), announced to whoever follows it.
#[derive(Debug, Clone)]
pub struct Update {
    pub id: Arc<str>,
    /// The order of the waiting requests changed too: one left the queue (claimed, cancelled,
    /// timed out) or one joined it ahead of others. Followers of other waiting requests look
    /// at their position again; a change without it concerns `id`'s followers alone.
    pub moves_queue: bool,
}

struct Inner {
    db: Db,
    registry: Registry,
    /// Wakes an idle worker when a request is queued.
    work: Notify,
    /// Every status change (state, position, logs) is announced here.
    updates: broadcast::Sender<Update>,
    /// Cancel tokens of running requests.
    running: Mutex<HashMap<String, CancellationToken>>,
    max_attempts: u32,
    /// Where endpoints store their output files.
    storage: Option<Storage>,
    /// What endpoints may fetch and load.
    policy: Option<Policy>,
    caps: Caps,
}

/// How many requests may wait or run at once: in all, and per submitter (an API key; on a
/// server without keys everyone is one submitter).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub total: u64,
    pub per_owner: u64,
}

/// Why a request was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Full(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<SubmitError> for crate::http::RouteError {
    fn from(e: SubmitError) -> Self {
        match e {
            // 429: fal's clients retry it with backoff.
            SubmitError::Full(why) => {
                crate::http::RouteError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, why)
            }
            SubmitError::Db(e) => e.into(),
        }
    }
}

/// A handle to the queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    /// Opens the queue over `db`: requests a crash left running are requeued (or failed when
    /// they have had all their attempts).
    pub async fn open(
        db: Db,
        registry: Registry,
        max_attempts: u32,
        storage: Option<Storage>,
        policy: Option<Policy>,
        caps: Caps,
    ) -> Result<Self, DbError> {
        let (requeued, failed) = db.call(move |c| store::recover(c, max_attempts)).await?;
        for id in &requeued {
            let id = id.clone();
            let line = format!(
                "The server restarted while this request was running; it was queued again (up to {max_attempts} attempts in all)"
            );
            db.call(move |c| {
                let n: i64 = c.query_row(
                    "SELECT COUNT(*) FROM logs WHERE request_id = ?1",
                    [&id],
                    |r| r.get(0),
                )?;
                store::append_log(c, &id, n as u64, LogLevel::Warn, &line, &timestamp())
            })
            .await?;
        }
        if !requeued.is_empty() || !failed.is_empty() {
            tracing::warn!(
                requeued = requeued.len(),
                failed = failed.len(),
                "recovered requests left running by a previous run"
            );
        }
        let (updates, _) = broadcast::channel(1024);
        Ok(Queue {
            inner: Arc::new(Inner {
                db,
                registry,
                work: Notify::new(),
                updates,
                running: Mutex::new(HashMap::new()),
                max_attempts,
                storage,
                policy,
                caps,
            }),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.inner.updates.subscribe()
    }

    /// Tells the followers of `id` that its status changed.
    fn announce(&self, id: &str) {
        let _ = self.inner.updates.send(Update {
            id: Arc::from(id),
            moves_queue: false,
        });
    }

    /// Tells the followers of `id`, and of every waiting request, that the queue moved.
    fn announce_move(&self, id: &str) {
        let _ = self.inner.updates.send(Update {
            id: Arc::from(id),
            moves_queue: true,
        });
    }

    /// Starts `workers` workers and the sweeper; they run until `shutdown` is cancelled.
    pub fn start(&self, workers: usize, result_ttl: Duration, shutdown: CancellationToken) {
        for _ in 0..workers.max(1) {
            let q = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { q.worker(stop).await });
        }
        let q = self.clone();
        tokio::spawn(async move { q.sweeper(result_ttl, shutdown).await });
    }

    /// Queues a request and answers with its `IN_QUEUE` status; `Full` when the queue, or the
    /// submitter's share of it, holds as many waiting and running requests as it may.
    pub async fn submit(&self, req: NewRequest) -> Result<QueueStatus, SubmitError> {
        let id = req.id.clone();
        let priority = req.priority;
        let caps = self.inner.caps;
        let status = self
            .inner
            .db
            .call(move |c| {
                // One connection, so the count and the insert are not raced by another submit.
                let (all, mine) = store::pending(c, req.owner.as_deref())?;
                if all >= caps.total {
                    return Ok(Err(format!(
                        "The queue is full ({all} requests waiting or running); try again later"
                    )));
                }
                if mine >= caps.per_owner {
                    return Ok(Err(format!(
                        "You have {mine} requests waiting or running, the most one caller may; try again when some finish"
                    )));
                }
                store::insert(c, &req)?;
                let s = store::state(c, &req.id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                store::status_body(c, &s, None).map(Ok)
            })
            .await?
            .map_err(SubmitError::Full)?;
        self.inner.work.notify_one();
        // A normal request goes ahead of waiting low-priority ones; a low one behind everyone.
        if priority == QueuePriority::Normal {
            self.announce_move(&id);
        } else {
            self.announce(&id);
        }
        Ok(QueueStatus {
            gateway_request_id: Some(id),
            ..status
        })
    }

    /// Whether request `id` was submitted by `owner` (the same key, or both without one).
    pub async fn owned_by(&self, id: &str, owner: Option<&str>) -> Result<bool, DbError> {
        let (id, owner) = (id.to_owned(), owner.map(str::to_owned));
        self.inner
            .db
            .call(move |c| store::owned_by(c, &id, owner.as_deref()))
            .await
    }

    /// The status of request `id` of `app`, or `None` if there is no such request.
    pub async fn status(
        &self,
        app: &str,
        id: &str,
        logs: bool,
    ) -> Result<Option<QueueStatus>, DbError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.inner
            .db
            .call(move |c| {
                let Some(s) = store::state(c, &id)?.filter(|s| s.app == app) else {
                    return Ok(None);
                };
                let lines = if logs {
                    Some(store::logs_since(c, &id, 0)?)
                } else {
                    None
                };
                store::status_body(c, &s, lines).map(Some)
            })
            .await
    }

    /// The stored answer of a completed request.
    pub async fn result(&self, app: &str, id: &str) -> Result<ResultLookup, DbError> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.inner
            .db
            .call(move |c| {
                let Some(s) = store::state(c, &id)?.filter(|s| s.app == app) else {
                    return Ok(ResultLookup::NotFound);
                };
                if s.state != Status::Completed {
                    return Ok(ResultLookup::Pending(s.state));
                }
                Ok(match store::result(c, &id)? {
                    Some((status, body, timeout_type, error_type)) => ResultLookup::Done {
                        status,
                        body,
                        timeout_type,
                        error_type,
                    },
                    None => ResultLookup::NotFound,
                })
            })
            .await
    }

    /// Cancels a request: a queued one is removed at once, a running one is signalled.
    pub async fn cancel(&self, app: &str, id: &str) -> Result<CancelEffect, DbError> {
        let (app_s, id_s) = (app.to_owned(), id.to_owned());
        let effect = self
            .inner
            .db
            .call(move |c| store::cancel(c, &id_s, &app_s))
            .await?;
        match effect {
            CancelEffect::Requested => {
                if let Some(token) = self
                    .inner
                    .running
                    .lock()
                    .ok()
                    .and_then(|m| m.get(id).cloned())
                {
                    token.cancel();
                }
                self.announce(id);
            }
            CancelEffect::Removed => self.announce_move(id),
            _ => {}
        }
        Ok(effect)
    }

    async fn worker(&self, stop: CancellationToken) {
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.inner.db.call(store::claim_next).await {
                Ok(Some(job)) => {
                    // Other requests moved up one place.
                    self.announce_move(&job.id);
                    self.run(job).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.inner.work.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
                Err(e) => {
                    tracing::error!("could not claim a request: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn run(&self, job: store::ClaimedRequest) {
        let id = job.id.clone();
        tracing::info!(request_id = %id, endpoint = %job.endpoint, attempt = job.attempt, "request started");
        let token = CancellationToken::new();
        if let Ok(mut m) = self.inner.running.lock() {
            m.insert(id.clone(), token.clone());
        }
        // A cancel that arrived between the claim and now.
        let db = self.inner.db.clone();
        let id2 = id.clone();
        if matches!(
            db.call(move |c| store::cancel_requested(c, &id2)).await,
            Ok(true)
        ) {
            token.cancel();
        }

        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let logger = tokio::spawn(self.clone().persist_logs(id.clone(), job.log_count, log_rx));
        let started = Instant::now();
        let outcome = match (
            EndpointId::parse(&job.endpoint),
            self.inner.registry.get(&job.app),
        ) {
            (Ok(endpoint), Some(handler)) => {
                let input = serde_json::from_slice(&job.input).unwrap_or(serde_json::Value::Null);
                let mut ctx = JobContext::new(id.clone(), endpoint, log_tx, token.clone());
                if let Some(storage) = &self.inner.storage {
                    let lifecycle = job
                        .lifecycle
                        .as_deref()
                        .and_then(|l| serde_json::from_str(l).ok());
                    ctx = ctx.with_outputs(storage.clone(), job.base_url.clone(), lifecycle);
                }
                if let Some(policy) = &self.inner.policy {
                    ctx = ctx.with_policy(policy.clone());
                }
                match AssertUnwindSafe(handler.run(input, ctx))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok(output)) => {
                        Outcome::success(serde_json::to_vec(&output).unwrap_or_default())
                    }
                    Ok(Err(e)) => Outcome::of(&e),
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        tracing::error!(request_id = %id, "endpoint panicked");
                        Outcome::of(&crate::endpoints::hidden("The endpoint", msg))
                    }
                }
            }
            _ => {
                drop(log_tx);
                let served: Vec<&str> = self.inner.registry.app_ids().collect();
                Outcome::of(&Failure::not_served(&job.endpoint, &served))
            }
        };
        // Every log line is stored before the request is marked completed.
        let _ = logger.await;
        if let Ok(mut m) = self.inner.running.lock() {
            m.remove(&id);
        }
        let id2 = id.clone();
        match self
            .inner
            .db
            .call(move |c| store::complete(c, &id2, &outcome).map(|_| outcome.status))
            .await
        {
            Ok(status) => {
                tracing::info!(request_id = %id, status, ms = started.elapsed().as_millis() as u64, "request finished")
            }
            Err(e) => tracing::error!(request_id = %id, "could not store the result: {e}"),
        }
        self.announce(&id);
    }

    async fn persist_logs(
        self,
        id: String,
        first: u64,
        mut rx: mpsc::UnboundedReceiver<(LogLevel, String)>,
    ) {
        let mut idx = first;
        while let Some((level, message)) = rx.recv().await {
            let (id2, ts) = (id.clone(), timestamp());
            let i = idx;
            if let Err(e) = self
                .inner
                .db
                .call(move |c| store::append_log(c, &id2, i, level, &message, &ts))
                .await
            {
                tracing::error!(request_id = %id, "could not store a log line: {e}");
            }
            idx += 1;
            self.announce(&id);
        }
    }

    async fn sweeper(&self, ttl: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_cleanup = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match self.expire_start_timeouts().await {
                Ok(ids) => ids.iter().for_each(|id| self.announce_move(id)),
                Err(e) => tracing::error!("could not expire timed-out requests: {e}"),
            }
            if last_cleanup.elapsed() > Duration::from_secs(60) {
                last_cleanup = Instant::now();
                let secs = ttl.as_secs_f64();
                match self
                    .inner
                    .db
                    .call(move |c| store::delete_finished_before(c, secs))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("deleted {n} finished requests older than {secs} s"),
                    Err(e) => tracing::error!("could not delete old requests: {e}"),
                }
            }
        }
    }

    async fn expire_start_timeouts(&self) -> Result<Vec<String>, DbError> {
        self.inner
            .db
            .call(|c| {
                let ids = store::expired_queued(c)?;
                let mut done = Vec::new();
                for id in ids {
                    if store::complete(c, &id, &Outcome::start_timeout())? {
                        done.push(id);
                    }
                }
                Ok(done)
            })
            .await
    }

    /// How many attempts a request gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }
}

/// What `result` found.
#[derive(Debug)]
pub enum ResultLookup {
    NotFound,
    Pending(Status),
    Done {
        status: u16,
        body: Vec<u8>,
        timeout_type: Option<String>,
        error_type: Option<String>,
    },
}
