//! `fresco serve`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use fresco_server::{Config, Registry, StorageMode};

#[derive(Clone, Copy, ValueEnum)]
enum Storage {
    /// Files are stored on this server's disk (the default without FAL_KEY).
    Local,
    /// Storage requests through the proxy go to fal (the default with FAL_KEY): fal's cloud
    /// workers can then fetch the files.
    Fal,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Where fal-ai/inpaint runs: the CPU (Burn's burn-flex backend with our sgemm kernels), or
    /// wgpu (Vulkan, Metal, DX12).
    #[arg(long, value_enum, default_value = "cpu")]
    device: crate::generate::DeviceArg,
    /// Weights and maths in f16 on wgpu adapters with shader-f16.
    #[arg(long)]
    f16: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Where the queue database and the stored files live.
    #[arg(long, default_value = ".fresco")]
    data_dir: PathBuf,
    /// The SQLite database (default: DATA_DIR/fresco.sqlite3).
    #[arg(long)]
    database: Option<PathBuf>,
    /// Absolute base URL of this server as callers reach it (default: from each request's Host).
    #[arg(long)]
    public_url: Option<String>,
    /// Where uploads made through the proxy are stored.
    #[arg(long, value_enum)]
    storage: Option<Storage>,
    /// Tokens the proxy requires (Authorization: Key <token>); comma-separated. Without any, the
    /// proxy is open like @fal-ai/server-proxy's default.
    #[arg(
        long,
        env = "FRESCO_PROXY_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    proxy_tokens: Vec<String>,
    /// Send forwarded requests to this base URL instead of fal's hosts (tests, benchmarks, mocks).
    #[arg(long)]
    upstream_override: Option<String>,
    /// Origins whose pages may call the proxy, queue and storage (`*` for any); repeatable.
    /// A page of another origin is refused any request that changes state.
    #[arg(long = "allow-origin", alias = "cors-origin")]
    cors_origins: Vec<String>,
    /// A file of API keys, one a line (blank lines and `#` comments skipped). Callers send
    /// `Authorization: Key <key>`, as to fal. With FRESCO_API_KEYS (comma-separated), both count.
    #[arg(long)]
    api_keys: Option<PathBuf>,
    /// Serve without API keys on an address other than loopback: anyone who reaches it may run
    /// models, store files and read every request. Never on a network you do not control.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Ask for a key on /files downloads too (their URLs are unguessable; an <img> cannot send a
    /// key, so by default they need none).
    #[arg(long)]
    files_need_key: bool,
    /// A host name this server answers to (the Host header), besides --public-url's;
    /// repeatable. Without either, a server on loopback answers only to loopback names.
    #[arg(long = "allow-host")]
    allowed_hosts: Vec<String>,
    /// Serve `fresco/echo`, the queue's test endpoint (it returns its input, after `delay_ms`):
    /// for demos and tests, not for a server others use.
    #[arg(long)]
    echo: bool,
    /// The most pixels an input image may have (read from its header, before it is decoded).
    #[arg(long, default_value_t = fresco_diffusion::pipeline::image::MAX_INPUT_PIXELS)]
    max_input_pixels: u64,
    /// Requests that may wait or run at once; more are answered 429 (fal's clients retry).
    #[arg(long, default_value_t = 1000)]
    max_queued: u64,
    /// Requests one API key may have waiting or running at once (without keys: all callers').
    #[arg(long, default_value_t = 100)]
    max_queued_per_key: u64,
    /// The site served at / (default: the repository's www/ when it exists).
    #[arg(long)]
    www: Option<PathBuf>,
    /// Requests run at once.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Largest JSON body accepted, in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Largest stored file, in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    max_file_bytes: u64,
    /// How long finished requests and their results are kept, in seconds (less where the
    /// submit's x-fal-object-lifecycle-preference expires its outputs sooner).
    #[arg(long, default_value_t = 24 * 3600)]
    result_ttl_secs: u64,
    /// Delay before the first webhook retry, in milliseconds (doubling each attempt).
    #[arg(long, default_value_t = 1000)]
    webhook_retry_base_ms: u64,
    /// Webhook delivery attempts in all.
    #[arg(long, default_value_t = 10)]
    webhook_max_attempts: u32,
    /// Let the URLs callers name (image_url, mask_url, a model_name URL, fal_webhook) point at
    /// loopback, private and link-local addresses. Off by default, as on fal: only public hosts
    /// are fetched. For development and tests on one machine.
    #[arg(long)]
    allow_private_urls: bool,
    /// The folder of model folders that model_name may name (a relative name resolves inside
    /// it). Without it, models load by Hugging Face id or URL only.
    #[arg(long)]
    models_dir: Option<PathBuf>,
}

/// The API keys from `--api-keys FILE` (one a line; blank lines and `#` comments skipped) and
/// `FRESCO_API_KEYS` (comma-separated).
fn api_keys(file: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--api-keys {}", file.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        anyhow::ensure!(
            !keys.is_empty(),
            "--api-keys {}: no key in it",
            file.display()
        );
    }
    if let Ok(list) = std::env::var("FRESCO_API_KEYS") {
        keys.extend(
            list.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        );
    }
    for key in &keys {
        anyhow::ensure!(
            key.len() >= 16 && key.bytes().all(|b| b.is_ascii_graphic()),
            "an API key must be at least 16 printable characters without spaces"
        );
    }
    Ok(keys)
}

fn default_www() -> Option<PathBuf> {
    let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../www"));
    repo.is_dir().then_some(repo)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let fal_key = std::env::var("FAL_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .or_else(
            || match (std::env::var("FAL_KEY_ID"), std::env::var("FAL_KEY_SECRET")) {
                (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => {
                    Some(format!("{id}:{secret}"))
                }
                _ => None,
            },
        );
    let storage = match args.storage {
        Some(Storage::Local) => StorageMode::Local,
        Some(Storage::Fal) => StorageMode::Fal,
        None if fal_key.is_some() => StorageMode::Fal,
        None => StorageMode::Local,
    };
    let (args_device, args_f16) = (args.device, args.f16);
    let mut config = Config::new(&args.data_dir);
    config.listen = SocketAddr::new(args.host, args.port);
    config.database = args.database;
    config.public_url = args.public_url;
    config.storage = storage;
    config.fal_key = fal_key;
    config.proxy_tokens = args
        .proxy_tokens
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    config.upstream_override = args.upstream_override;
    config.cors_origins = args.cors_origins;
    config.www_dir = args.www.or_else(default_www);
    config.workers = args.workers.max(1);
    config.max_body_bytes = args.max_body_bytes;
    config.max_file_bytes = args.max_file_bytes;
    config.result_ttl = Duration::from_secs(args.result_ttl_secs);
    config.webhook_retry_base = Duration::from_millis(args.webhook_retry_base_ms);
    config.webhook_max_attempts = args.webhook_max_attempts.max(1);
    config.allow_private_urls = args.allow_private_urls;
    config.api_keys = api_keys(args.api_keys.as_deref())?;
    config.files_need_key = args.files_need_key;
    config.max_input_pixels = args.max_input_pixels;
    config.max_queued = args.max_queued;
    config.max_queued_per_key = args.max_queued_per_key;
    config.allowed_hosts = args.allowed_hosts;
    if config.api_keys.is_empty() && !args.host.is_loopback() && !args.insecure_no_auth {
        anyhow::bail!(
            "--host {} would let anyone who reaches this machine use the server: give it API keys \
             (--api-keys FILE or FRESCO_API_KEYS), or say --insecure-no-auth",
            args.host
        );
    }
    if let Some(dir) = &args.models_dir {
        anyhow::ensure!(
            dir.is_dir(),
            "--models-dir {}: no such folder",
            dir.display()
        );
    }
    config.models_dir = args.models_dir;

    let summary = format!(
        "API keys: {}; storage: {}; proxy: {}; FAL_KEY: {}; URLs callers name: {}; local models: {}",
        match config.api_keys.len() {
            0 if args.host.is_loopback() => "none (loopback only)".to_owned(),
            0 => "NONE (--insecure-no-auth)".to_owned(),
            n => format!("{n}"),
        },
        match storage {
            StorageMode::Local => "local",
            StorageMode::Fal => "fal",
        },
        if config.proxy_tokens.is_empty() && config.api_keys.is_empty() {
            "open"
        } else {
            "token or key required"
        },
        if config.fal_key.is_some() {
            "set"
        } else {
            "not set (only local endpoints and storage)"
        },
        if config.allow_private_urls {
            "any address (--allow-private-urls)"
        } else {
            "public addresses only"
        },
        config.models_dir.as_ref().map_or_else(
            || "none (no --models-dir)".into(),
            |d| d.display().to_string()
        ),
    );
    let compute = crate::generate::device(args_device, args_f16)?;
    tracing::info!(
        "engine device: {}, {:?}",
        compute.adapter,
        compute.precision
    );
    let mut registry = if args.echo {
        Registry::builtin()
    } else {
        Registry::default()
    };
    registry.register_engine(std::sync::Arc::new(
        fresco_server::endpoints::inpaint::Engine::new(
            compute.device,
            Some(compute.precision),
            compute.buffer_limit,
        )
        .map_err(|e| anyhow::anyhow!("the engine: {e}"))?,
    ));
    let server = fresco_server::start(config, registry)
        .await
        .context("could not start the server")?;
    // Scripts (and the tests) read this line to learn the port.
    println!("fresco serving on {}", server.url());
    tracing::info!("{summary}");
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down; a request still running will run again at the next start");
        stop.cancel();
    });
    server
        .wait()
        .await
        .context("the server stopped with an error")
}

/// Ctrl-C, or SIGTERM (what service managers and containers send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
