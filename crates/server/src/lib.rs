//! `fresco serve`: a self-hosted, fal-compatible server.
//!
//! - the **queue** at queue.fal.run's paths (`POST /{id}`, `…/requests/{id}/status[/stream]`,
//!   `…/requests/{id}`, `…/requests/{id}/cancel`) and the synchronous run path (`POST /run/{id}`),
//!   backed by SQLite, run by workers that call the registered endpoints;
//! - **storage** with rest.fal.ai's upload protocol (`/storage/upload/initiate[-multipart]`), files
//!   on disk under the data directory, served at `/files/…`;
//! - the **proxy** at `/api/fal/proxy` that `@fal-ai/client`'s `proxyUrl` points at: local
//!   endpoints and storage are served here, everything else is forwarded to fal with `FAL_KEY`;
//! - the demo site (`www/`) at `/`.

pub mod access;
pub mod config;
pub mod db;
pub mod endpoints;
pub mod http;
pub mod listen;
pub mod outbound;
pub mod proxy;
pub mod queue;
pub mod router;
pub mod storage;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, StorageMode};
pub use endpoints::Registry;
use tokio_util::sync::CancellationToken;

/// Everything a route needs.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub queue: queue::Queue,
    pub storage: storage::Storage,
    /// The proxy's outgoing HTTP, to fal's hosts (or `upstream_override`). Never follows
    /// redirects. (Requests to callers' URLs go through [`outbound::Outbound`].)
    pub http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Db(#[from] db::DbError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("--storage fal forwards uploads to fal, which needs FAL_KEY in the environment")]
    StorageNeedsKey,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The `http://host:port` the server listens on.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets the ones in flight finish and stops the workers.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.task.await.map_err(std::io::Error::other)?
    }

    /// Waits until the server stops (on its own, or because `shutdown` was called elsewhere).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// The HTTP client for outgoing requests: rustls with the system's roots, no redirects.
pub fn http_client() -> Result<reqwest::Client, StartError> {
    // Installing twice is harmless; the first provider wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| StartError::Http(e.to_string()))
}

/// Opens the data directory, recovers the queue, binds and starts serving.
pub async fn start(config: Config, registry: Registry) -> Result<Server, StartError> {
    if config.storage == StorageMode::Fal && config.fal_key.is_none() {
        return Err(StartError::StorageNeedsKey);
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let db = db::Db::open(&config.database_path())?;
    let storage = storage::Storage::open(db.clone(), &config.data_dir, config.max_file_bytes)
        .map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
    let outbound = outbound::Outbound::new(config.allow_private_urls).map_err(StartError::Http)?;
    let policy = endpoints::Policy {
        outbound: outbound.clone(),
        models_dir: config.models_dir.clone(),
        public_url: config.public_url.clone(),
        max_input_pixels: config.max_input_pixels,
    };
    let queue = queue::Queue::open(
        db.clone(),
        registry,
        config.max_attempts,
        Some(storage.clone()),
        Some(policy),
        queue::Caps {
            total: config.max_queued,
            per_owner: config.max_queued_per_key,
        },
    )
    .await?;
    let http = http_client()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;

    let shutdown = CancellationToken::new();
    queue.start(config.workers, config.result_ttl, shutdown.clone());
    tokio::spawn(webhook::run(
        db.clone(),
        outbound,
        config.webhook_retry_base,
        config.webhook_max_attempts,
        shutdown.clone(),
    ));
    let sweeper_storage = storage.clone();
    let sweeper_stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            match sweeper_storage.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("deleted {n} expired or abandoned files"),
                Err(e) => tracing::error!("file sweep failed: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = sweeper_stop.cancelled() => return,
            }
        }
    });

    let header_read_timeout = config.header_read_timeout;
    let state = AppState {
        config: Arc::new(config),
        queue,
        storage,
        http,
    };
    let app = router::app(state);
    let stop = shutdown.clone();
    let task = tokio::spawn(listen::serve(listener, app, header_read_timeout, stop));
    Ok(Server {
        addr,
        shutdown,
        task,
    })
}
