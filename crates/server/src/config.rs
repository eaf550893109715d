//! What `fresco serve` is configured with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where `/storage/upload/*` requests that arrive through the proxy are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    /// Files live on this server's disk and are served from it.
    Local,
    /// Storage requests are forwarded to fal (needed when fal's cloud must fetch the files).
    Fal,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// SQLite database, files and uploads live here.
    pub data_dir: PathBuf,
    /// SQLite database path; `None` means `{data_dir}/fresco.sqlite3`.
    pub database: Option<PathBuf>,
    /// Absolute base of the URLs handed out (file URLs, status URLs). `None`: from the request's
    /// `Host` header.
    pub public_url: Option<String>,
    pub storage: StorageMode,
    /// The key the proxy adds for requests to fal (`FAL_KEY`). Never logged, never returned.
    pub fal_key: Option<String>,
    /// When non-empty, the proxy refuses requests that do not carry `Authorization: Key <token>`
    /// (or `Bearer <token>`) with one of these tokens, and sends `FAL_KEY` upstream instead.
    pub proxy_tokens: Vec<String>,
    /// Sends every request the proxy forwards to this base URL instead of the fal host (the path
    /// and query are kept; `x-fal-target-url` still names the original). For tests and benchmarks
    /// against a local upstream.
    pub upstream_override: Option<String>,
    /// Origins allowed to call the proxy and queue from a browser on another origin.
    pub cors_origins: Vec<String>,
    /// The demo site served at `/`.
    pub www_dir: Option<PathBuf>,
    /// How many queued requests run at once.
    pub workers: usize,
    /// Largest JSON body accepted by the queue, run and proxy routes.
    pub max_body_bytes: usize,
    /// Largest file accepted by storage (single or multipart).
    pub max_file_bytes: u64,
    /// How long finished requests (and their results) are kept.
    pub result_ttl: Duration,
    /// Delay before the first webhook retry; doubles each attempt.
    pub webhook_retry_base: Duration,
    /// Webhook deliveries are attempted this many times in all.
    pub webhook_max_attempts: u32,
    /// How many times a request interrupted by a server crash is run in all before it fails.
    pub max_attempts: u32,
    /// Whether the URLs callers name (inputs, model URLs, webhooks) may point at loopback,
    /// private, link-local and other non-public addresses. Off: fal's behaviour, and what a
    /// server others can reach needs; on for development and tests on one machine.
    pub allow_private_urls: bool,
    /// The folder whose model folders `model_name` may name; `None`: models by id or URL only.
    pub models_dir: Option<PathBuf>,
    /// API keys (`Authorization: Key <key>`) asked on every route but `/health`, the site and
    /// `/files`; none: every caller is let in (and `fresco serve` binds only to loopback).
    pub api_keys: Vec<String>,
    /// Whether `/files` downloads need a key too (their URLs are unguessable capabilities, so
    /// by default they do not: an `<img>` cannot send a key).
    pub files_need_key: bool,
    /// Host names this server answers to besides the public URL's (DNS rebinding); empty and
    /// no public URL: loopback names on a loopback server, any name elsewhere.
    pub allowed_hosts: Vec<String>,
    /// The most pixels an input image may have, read from its header before it is decoded.
    pub max_input_pixels: u64,
    /// Requests that may wait or run at once (more: 429).
    pub max_queued: u64,
    /// Requests one API key may have waiting or running at once (without keys: everyone's).
    pub max_queued_per_key: u64,
    /// How long a client may take to send a request's headers before the connection is closed.
    pub header_read_timeout: Duration,
}

impl Config {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data_dir.into(),
            database: None,
            public_url: None,
            storage: StorageMode::Local,
            fal_key: None,
            proxy_tokens: Vec::new(),
            upstream_override: None,
            cors_origins: Vec::new(),
            www_dir: None,
            workers: 1,
            max_body_bytes: 32 * 1024 * 1024,
            max_file_bytes: 2 * 1024 * 1024 * 1024,
            result_ttl: Duration::from_secs(24 * 3600),
            webhook_retry_base: Duration::from_secs(1),
            webhook_max_attempts: 10,
            max_attempts: 2,
            allow_private_urls: false,
            models_dir: None,
            api_keys: Vec::new(),
            files_need_key: false,
            allowed_hosts: Vec::new(),
            max_input_pixels: fresco_diffusion::pipeline::image::MAX_INPUT_PIXELS,
            max_queued: 1000,
            max_queued_per_key: 100,
            header_read_timeout: Duration::from_secs(20),
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.data_dir.join("fresco.sqlite3"))
    }
}
