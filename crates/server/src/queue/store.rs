//! The queue's rows in SQLite: inserting, claiming, completing and reading requests. Synchronous
//! functions over a connection; `Queue` runs them on blocking threads.

use fresco_protocol::error::{ErrorBody, error_type};
use fresco_protocol::failure::Failure;
use fresco_protocol::queue::{
    LogLevel, Metrics, QueuePriority, QueueStatus, RequestLog, Status, WebhookPayload,
    WebhookStatus,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::now;

/// A request as submitted.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    /// Full endpoint id (with sub-path).
    pub endpoint: String,
    /// `[namespace/]owner/alias`.
    pub app: String,
    pub input: Vec<u8>,
    pub priority: QueuePriority,
    /// Seconds the request may wait before it starts (`x-fal-request-timeout`).
    pub start_timeout: Option<f64>,
    pub webhook_url: Option<String>,
    pub base_url: String,
    pub hint: Option<String>,
    pub lifecycle: Option<String>,
    /// The API key's owner id that submitted it (`access::owner_of`); `None` on a server
    /// without keys.
    pub owner: Option<String>,
}

/// A request a worker has claimed.
#[derive(Debug, Clone)]
pub struct ClaimedRequest {
    pub id: String,
    pub endpoint: String,
    pub app: String,
    pub input: Vec<u8>,
    pub attempt: u32,
    pub log_count: u64,
    /// The server's URL as the client reached it (outputs are stored under it).
    pub base_url: String,
    /// `x-fal-object-lifecycle-preference`, as sent.
    pub lifecycle: Option<String>,
}

/// How a request ended: the HTTP answer its result replays.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u16,
    pub body: Vec<u8>,
    pub error: Option<String>,
    pub error_type: Option<String>,
    /// `user` for an expired start timeout.
    pub timeout_type: Option<String>,
}

impl Outcome {
    pub fn success(body: Vec<u8>) -> Self {
        Outcome {
            status: 200,
            body,
            error: None,
            error_type: None,
            timeout_type: None,
        }
    }

    pub fn failure(status: u16, body: Vec<u8>, error: String, error_type: Option<&str>) -> Self {
        Outcome {
            status,
            body,
            error: Some(error),
            error_type: error_type.map(str::to_owned),
            timeout_type: None,
        }
    }

    /// A failed call's answer.
    pub fn of(f: &Failure) -> Self {
        Self::failure(
            f.status(),
            serde_json::to_vec(&f.body()).unwrap_or_default(),
            f.message(),
            f.error_type(),
        )
    }

    fn from_error_body(status: u16, e: ErrorBody) -> Self {
        let body = serde_json::to_vec(&e).unwrap_or_default();
        Outcome {
            status,
            body,
            error: Some(e.detail),
            error_type: e.error_type,
            timeout_type: None,
        }
    }

    /// The request did not start within its start timeout.
    pub fn start_timeout() -> Self {
        let mut o = Self::from_error_body(
            504,
            ErrorBody::typed(
                "Request timed out: it did not start within its x-fal-request-timeout",
                error_type::REQUEST_TIMEOUT,
            ),
        );
        o.timeout_type = Some("user".into());
        o
    }

    /// The request was cancelled before it started.
    pub fn cancelled() -> Self {
        Self::of(&Failure::Cancelled)
    }

    /// The server died under the request too many times.
    pub fn abandoned(attempts: u32) -> Self {
        Self::from_error_body(
            503,
            ErrorBody::typed(
                format!(
                    "The server stopped while this request was running, {attempts} time(s); it is not retried again"
                ),
                error_type::RUNNER_DISCONNECTED,
            ),
        )
    }
}

/// The columns a status needs.
#[derive(Debug, Clone)]
pub struct RequestState {
    pub id: String,
    pub app: String,
    pub state: Status,
    pub seq: i64,
    pub priority: i64,
    pub base_url: String,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub error: Option<String>,
    pub error_type: Option<String>,
}

pub fn insert(conn: &Connection, r: &NewRequest) -> rusqlite::Result<()> {
    let created = now();
    conn.execute(
        "INSERT INTO requests (id, endpoint, app, input, priority, state, created_at, start_deadline,
                               webhook_url, base_url, hint, lifecycle, owner)
         VALUES (?1, ?2, ?3, ?4, ?5, 'IN_QUEUE', ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            r.id,
            r.endpoint,
            r.app,
            r.input,
            priority_rank(r.priority),
            created,
            r.start_timeout.map(|t| created + t),
            r.webhook_url,
            r.base_url,
            r.hint,
            r.lifecycle,
            r.owner
        ],
    )?;
    Ok(())
}

/// Requests waiting or running: in all, and those of `owner`.
pub fn pending(conn: &Connection, owner: Option<&str>) -> rusqlite::Result<(u64, u64)> {
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(owner IS ?1), 0) FROM requests
         WHERE state IN ('IN_QUEUE', 'IN_PROGRESS')",
        params![owner],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
}

/// Whether request `id` exists and belongs to `owner` (`None`: submitted without a key).
pub fn owned_by(conn: &Connection, id: &str, owner: Option<&str>) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM requests WHERE id = ?1 AND owner IS ?2",
        params![id, owner],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

pub fn priority_rank(p: QueuePriority) -> i64 {
    match p {
        QueuePriority::Normal => 0,
        QueuePriority::Low => 1,
    }
}

pub fn state(conn: &Connection, id: &str) -> rusqlite::Result<Option<RequestState>> {
    conn.query_row(
        "SELECT id, app, state, seq, priority, base_url, started_at, finished_at, error, error_type
         FROM requests WHERE id = ?1",
        [id],
        |r| {
            let state: String = r.get(2)?;
            Ok(RequestState {
                id: r.get(0)?,
                app: r.get(1)?,
                state: Status::parse(&state).unwrap_or(Status::Completed),
                seq: r.get(3)?,
                priority: r.get(4)?,
                base_url: r.get(5)?,
                started_at: r.get(6)?,
                finished_at: r.get(7)?,
                error: r.get(8)?,
                error_type: r.get(9)?,
            })
        },
    )
    .optional()
}

/// Requests ahead of this one: queued ones of higher priority, or of the same priority and older.
pub fn queue_position(conn: &Connection, s: &RequestState) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COUNT(*) FROM requests WHERE state = 'IN_QUEUE'
           AND (priority < ?1 OR (priority = ?1 AND seq < ?2))",
        params![s.priority, s.seq],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// Log lines from index `from` on.
pub fn logs_since(conn: &Connection, id: &str, from: u64) -> rusqlite::Result<Vec<RequestLog>> {
    let mut stmt =
        conn.prepare_cached("SELECT level, message, timestamp FROM logs WHERE request_id = ?1 AND idx >= ?2 ORDER BY idx")?;
    let rows = stmt.query_map(params![id, from as i64], |r| {
        let level: String = r.get(0)?;
        Ok(RequestLog {
            level: LogLevel::parse(&level).unwrap_or(LogLevel::Info),
            message: r.get(1)?,
            source: "USER".into(),
            timestamp: r.get(2)?,
        })
    })?;
    rows.collect()
}

pub fn append_log(
    conn: &Connection,
    id: &str,
    idx: u64,
    level: LogLevel,
    message: &str,
    ts: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO logs (request_id, idx, level, message, timestamp) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![id, idx as i64, level.as_str(), message, ts])?;
    Ok(())
}

/// The status body of a request; `logs` is `Some(lines)` to include those lines, `None` for null.
pub fn status_body(
    conn: &Connection,
    s: &RequestState,
    logs: Option<Vec<RequestLog>>,
) -> rusqlite::Result<QueueStatus> {
    let base = format!("{}/{}/requests/{}", s.base_url, s.app, s.id);
    let queue_position = if s.state == Status::InQueue {
        Some(queue_position(conn, s)?)
    } else {
        None
    };
    let metrics = (s.state == Status::Completed).then(|| Metrics {
        inference_time: match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => Some(((b - a).max(0.0) * 1000.0).round() / 1000.0),
            _ => None,
        },
    });
    Ok(QueueStatus {
        status: s.state,
        request_id: s.id.clone(),
        response_url: base.clone(),
        status_url: format!("{base}/status"),
        cancel_url: format!("{base}/cancel"),
        queue_position,
        logs,
        metrics,
        error: s.error.clone(),
        error_type: s.error_type.clone(),
        gateway_request_id: None,
    })
}

/// Claims the next queued request (normal priority first, then oldest) for a worker.
pub fn claim_next(conn: &mut Connection) -> rusqlite::Result<Option<ClaimedRequest>> {
    let tx = conn.transaction()?;
    let next = tx
        .query_row(
            "SELECT id, endpoint, app, input, attempts, base_url, lifecycle FROM requests
             WHERE state = 'IN_QUEUE' ORDER BY priority, seq LIMIT 1",
            [],
            |r| {
                Ok(ClaimedRequest {
                    id: r.get(0)?,
                    endpoint: r.get(1)?,
                    app: r.get(2)?,
                    input: r.get(3)?,
                    attempt: r.get::<_, i64>(4)? as u32 + 1,
                    log_count: 0,
                    base_url: r.get(5)?,
                    lifecycle: r.get(6)?,
                })
            },
        )
        .optional()?;
    let Some(mut job) = next else { return Ok(None) };
    tx.execute(
        "UPDATE requests SET state = 'IN_PROGRESS', started_at = ?2, attempts = attempts + 1 WHERE id = ?1",
        params![job.id, now()],
    )?;
    job.log_count = tx.query_row(
        "SELECT COUNT(*) FROM logs WHERE request_id = ?1",
        [&job.id],
        |r| r.get::<_, i64>(0),
    )? as u64;
    tx.commit()?;
    Ok(Some(job))
}

/// Marks a request completed with `outcome`, and queues its webhook in the same transaction.
/// Returns `false` when it was already completed (nothing is changed then).
pub fn complete(conn: &mut Connection, id: &str, outcome: &Outcome) -> rusqlite::Result<bool> {
    let tx = conn.transaction()?;
    let row: Option<(Option<String>, Option<String>)> = tx
        .query_row(
            "SELECT webhook_url, lifecycle FROM requests WHERE id = ?1 AND state != 'COMPLETED'",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((webhook, lifecycle)) = row else {
        return Ok(false);
    };
    let finished = now();
    let expires_at = result_lifetime(lifecycle.as_deref()).map(|secs| finished + secs);
    tx.execute(
        // The input is no longer needed once the request is done (a cancelled one never ran):
        // dropped at once, so the database holds inputs only of requests waiting or running.
        "UPDATE requests SET state = 'COMPLETED', finished_at = ?2, started_at = COALESCE(started_at, ?2),
                result_status = ?3, result_body = ?4, error = ?5, error_type = ?6, timeout_type = ?7,
                input = x'', expires_at = ?8
         WHERE id = ?1",
        params![id, finished, outcome.status, outcome.body, outcome.error, outcome.error_type, outcome.timeout_type, expires_at],
    )?;
    if let Some(url) = webhook {
        let body = serde_json::to_vec(&webhook_payload(id, outcome)).unwrap_or_default();
        tx.execute(
            "INSERT OR REPLACE INTO webhooks (request_id, url, body, attempts, next_at) VALUES (?1, ?2, ?3, 0, ?4)",
            params![id, url, body, finished],
        )?;
    }
    tx.commit()?;
    Ok(true)
}

/// The webhook body for an outcome (fal's documented shape).
pub fn webhook_payload(id: &str, outcome: &Outcome) -> WebhookPayload {
    let ok = (200..300).contains(&outcome.status);
    let (payload, payload_error) = match serde_json::from_slice(&outcome.body) {
        Ok(v) => (v, None),
        Err(e) => (
            serde_json::Value::Null,
            Some(format!("The result is not valid JSON: {e}")),
        ),
    };
    WebhookPayload {
        request_id: id.to_owned(),
        gateway_request_id: id.to_owned(),
        status: if ok {
            WebhookStatus::Ok
        } else {
            WebhookStatus::Error
        },
        payload,
        error: (!ok).then(|| format!("Invalid status code: {}", outcome.status)),
        payload_error,
    }
}

/// The stored answer of a completed request: status, body, timeout type, error type.
pub type StoredResult = (u16, Vec<u8>, Option<String>, Option<String>);

pub fn result(conn: &Connection, id: &str) -> rusqlite::Result<Option<StoredResult>> {
    conn.query_row(
        "SELECT result_status, result_body, timeout_type, error_type FROM requests WHERE id = ?1 AND state = 'COMPLETED'",
        [id],
        |r| Ok((r.get::<_, i64>(0)? as u16, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelEffect {
    /// It was queued and is now completed as cancelled.
    Removed,
    /// It is running; its worker must be told.
    Requested,
    AlreadyCompleted,
    NotFound,
}

pub fn cancel(conn: &mut Connection, id: &str, app: &str) -> rusqlite::Result<CancelEffect> {
    let state: Option<String> = conn
        .query_row(
            "SELECT state FROM requests WHERE id = ?1 AND app = ?2",
            params![id, app],
            |r| r.get(0),
        )
        .optional()?;
    match state.as_deref().and_then(Status::parse) {
        None => Ok(CancelEffect::NotFound),
        Some(Status::Completed) => Ok(CancelEffect::AlreadyCompleted),
        Some(Status::InQueue) => {
            complete(conn, id, &Outcome::cancelled())?;
            Ok(CancelEffect::Removed)
        }
        Some(Status::InProgress) => {
            conn.execute(
                "UPDATE requests SET cancel_requested = 1 WHERE id = ?1",
                [id],
            )?;
            Ok(CancelEffect::Requested)
        }
    }
}

pub fn cancel_requested(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT cancel_requested FROM requests WHERE id = ?1",
        [id],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v == Some(1))
}

/// After a crash: requests that were running go back to the queue (keeping their place), or fail
/// when they have used all their attempts. Returns (requeued, failed) ids.
pub fn recover(
    conn: &mut Connection,
    max_attempts: u32,
) -> rusqlite::Result<(Vec<String>, Vec<String>)> {
    let running: Vec<(String, u32, bool)> = {
        let mut stmt = conn.prepare(
            "SELECT id, attempts, cancel_requested FROM requests WHERE state = 'IN_PROGRESS'",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as u32,
                r.get::<_, i64>(2)? == 1,
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let (mut requeued, mut failed) = (Vec::new(), Vec::new());
    for (id, attempts, cancel_requested) in running {
        if cancel_requested {
            complete(conn, &id, &Outcome::cancelled())?;
            failed.push(id);
        } else if attempts < max_attempts {
            conn.execute(
                "UPDATE requests SET state = 'IN_QUEUE', started_at = NULL WHERE id = ?1",
                [&id],
            )?;
            requeued.push(id);
        } else {
            complete(conn, &id, &Outcome::abandoned(attempts))?;
            failed.push(id);
        }
    }
    Ok((requeued, failed))
}

/// Queued requests whose start timeout has passed.
pub fn expired_queued(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM requests WHERE state = 'IN_QUEUE' AND start_deadline IS NOT NULL AND start_deadline < ?1",
    )?;
    let rows = stmt.query_map([now()], |r| r.get(0))?;
    rows.collect()
}

/// How long a finished request's result is kept when its submit asked for a lifecycle
/// (`x-fal-object-lifecycle-preference`): as long as its output files, which expire then too.
/// `None` without one; the server's result TTL applies alone then.
fn result_lifetime(lifecycle: Option<&str>) -> Option<f64> {
    let l: fresco_protocol::storage::ObjectLifecycle = serde_json::from_str(lifecycle?).ok()?;
    l.expiration_duration_seconds.map(|s| s as f64)
}

/// Deletes finished requests whose time is up, with their logs and delivered or failed webhooks:
/// those finished more than `ttl_secs` ago, and those whose own lifecycle ended sooner.
/// Returns how many requests went.
pub fn delete_finished_before(conn: &mut Connection, ttl_secs: f64) -> rusqlite::Result<usize> {
    let now = now();
    let cutoff = now - ttl_secs;
    const DONE: &str = "SELECT id FROM requests WHERE state = 'COMPLETED' AND (finished_at < ?1 OR expires_at < ?2)";
    let tx = conn.transaction()?;
    tx.execute(
        &format!("DELETE FROM logs WHERE request_id IN ({DONE})"),
        params![cutoff, now],
    )?;
    // A webhook still being delivered keeps its row; the request goes all the same.
    tx.execute(
        &format!(
            "DELETE FROM webhooks WHERE (delivered_at IS NOT NULL OR failed = 1) AND request_id IN ({DONE})"
        ),
        params![cutoff, now],
    )?;
    let n = tx.execute(
        "DELETE FROM requests WHERE state = 'COMPLETED' AND (finished_at < ?1 OR expires_at < ?2)",
        params![cutoff, now],
    )?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::db::SCHEMA).unwrap();
        crate::db::migrate(&conn).unwrap();
        conn
    }

    fn submit(conn: &Connection, id: &str, lifecycle: Option<&str>) {
        insert(
            conn,
            &NewRequest {
                id: id.into(),
                endpoint: "fresco/echo".into(),
                app: "fresco/echo".into(),
                input: b"{}".to_vec(),
                priority: QueuePriority::Normal,
                start_timeout: None,
                webhook_url: None,
                base_url: "http://127.0.0.1".into(),
                hint: None,
                lifecycle: lifecycle.map(str::to_owned),
                owner: None,
            },
        )
        .unwrap();
    }

    fn ids(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT id FROM requests ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_result_goes_when_its_lifecycle_ends_before_the_servers_ttl() {
        let mut conn = db();
        submit(&conn, "short", Some(r#"{"expiration_duration_seconds":0}"#));
        submit(
            &conn,
            "long",
            Some(r#"{"expiration_duration_seconds":86400}"#),
        );
        submit(&conn, "none", None);
        submit(
            &conn,
            "waiting",
            Some(r#"{"expiration_duration_seconds":0}"#),
        );
        for id in ["short", "long", "none"] {
            assert!(complete(&mut conn, id, &Outcome::cancelled()).unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(delete_finished_before(&mut conn, 3600.0).unwrap(), 1);
        assert_eq!(ids(&conn), ["long", "none", "waiting"]);
        // The server's TTL still bounds the rest; a request not finished is never swept.
        assert_eq!(delete_finished_before(&mut conn, 0.0).unwrap(), 2);
        assert_eq!(ids(&conn), ["waiting"]);
    }

    #[test]
    fn a_finished_request_keeps_no_input() {
        let mut conn = db();
        submit(&conn, "a", None);
        complete(&mut conn, "a", &Outcome::cancelled()).unwrap();
        let input: Vec<u8> = conn
            .query_row("SELECT input FROM requests WHERE id = 'a'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(input.is_empty());
    }

    #[test]
    fn a_database_from_before_owners_and_expiry_is_brought_up_to_date() {
        let conn = Connection::open_in_memory().unwrap();
        let old = crate::db::SCHEMA.replace(
            "    owner          TEXT,\n    expires_at     REAL\n",
            "    timeout_type2  TEXT\n",
        );
        assert_ne!(old, crate::db::SCHEMA, "the old schema must differ");
        conn.execute_batch(&old).unwrap();
        crate::db::migrate(&conn).unwrap();
        crate::db::migrate(&conn).unwrap();
        for col in ["owner", "expires_at"] {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('requests') WHERE name = ?1",
                    [col],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{col}");
        }
    }
}
