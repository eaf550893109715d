//! The SQLite database behind the queue, results, webhooks and uploaded files.
//!
//! One connection behind a mutex, used from blocking threads. WAL mode with `synchronous=FULL`:
//! a request the server has acknowledged survives a SIGKILL or a power cut.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Join(String),
    #[error("database mutex poisoned")]
    Poisoned,
}

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS requests (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    endpoint       TEXT NOT NULL,
    app            TEXT NOT NULL,
    input          BLOB NOT NULL,
    priority       INTEGER NOT NULL,
    state          TEXT NOT NULL,
    created_at     REAL NOT NULL,
    started_at     REAL,
    finished_at    REAL,
    start_deadline REAL,
    webhook_url    TEXT,
    base_url       TEXT NOT NULL,
    hint           TEXT,
    lifecycle      TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result_status  INTEGER,
    result_body    BLOB,
    error          TEXT,
    error_type     TEXT,
    timeout_type   TEXT,
    owner          TEXT,
    expires_at     REAL
);
CREATE INDEX IF NOT EXISTS requests_queue ON requests (state, priority, seq);
CREATE INDEX IF NOT EXISTS requests_finished ON requests (finished_at);

CREATE TABLE IF NOT EXISTS logs (
    request_id TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    level      TEXT NOT NULL,
    message    TEXT NOT NULL,
    timestamp  TEXT NOT NULL,
    PRIMARY KEY (request_id, idx)
);

CREATE TABLE IF NOT EXISTS webhooks (
    request_id   TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    body         BLOB NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    delivered_at REAL,
    failed       INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (delivered_at, failed, next_at);

CREATE TABLE IF NOT EXISTS files (
    key          TEXT PRIMARY KEY,
    upload_token TEXT NOT NULL UNIQUE,
    file_name    TEXT NOT NULL,
    content_type TEXT NOT NULL,
    multipart    INTEGER NOT NULL,
    size         INTEGER,
    complete     INTEGER NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    expires_at   REAL
);
CREATE INDEX IF NOT EXISTS files_expiry ON files (expires_at);

CREATE TABLE IF NOT EXISTS file_parts (
    key    TEXT NOT NULL,
    part   INTEGER NOT NULL,
    etag   TEXT NOT NULL,
    size   INTEGER NOT NULL,
    PRIMARY KEY (key, part)
);
"#;

impl Db {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| DbError::Poisoned)?;
            f(&mut guard).map_err(DbError::from)
        })
        .await
        .map_err(|e| DbError::Join(e.to_string()))?
    }
}

/// Brings a database made by an earlier version up to [`SCHEMA`]: columns added since.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has_owner = conn
        .prepare("SELECT 1 FROM pragma_table_info('requests') WHERE name = 'owner'")?
        .exists([])?;
    if !has_owner {
        conn.execute_batch("ALTER TABLE requests ADD COLUMN owner TEXT")?;
    }
    let has_expiry = conn
        .prepare("SELECT 1 FROM pragma_table_info('requests') WHERE name = 'expires_at'")?
        .exists([])?;
    if !has_expiry {
        conn.execute_batch("ALTER TABLE requests ADD COLUMN expires_at REAL")?;
    }
    // After the columns exist: an index on a column an old database lacks cannot be in SCHEMA.
    conn.execute_batch("CREATE INDEX IF NOT EXISTS requests_expiry ON requests (expires_at)")?;
    Ok(())
}

/// Seconds since the Unix epoch, as stored in the database.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// ISO 8601 UTC with milliseconds, as fal's log timestamps.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
