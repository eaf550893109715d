//! `fal-ai/inpaint` on this server's own engine: inputs fetched from http(s) URLs or `data:` URIs,
//! the model loaded once and kept while requests ask for it, one generation at a time, a log line
//! per step, the image stored in the server's storage and returned as fal returns it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use burn::tensor::Device;
use fresco_diffusion::pipeline::endpoint::{Call, Failure};
use fresco_diffusion::pipeline::image::decode;
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::pipeline::{Generated, Pipeline, PipelineError, Task};
use fresco_diffusion::weights::hub::{HubOptions, Progress, RepoFiles};
use fresco_diffusion::weights::repo::RepoLocation;
use fresco_diffusion::weights::store::Precision;
use fresco_protocol::endpoints::Image;
use fresco_protocol::endpoints::inpaint::ENDPOINT_ID;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Mutex;

use super::{Endpoint, JobContext, JobError};

/// The largest input image accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 << 20;

/// The engine the endpoints share: one device, one loaded model at a time, one job at a time.
pub struct Engine {
    device: Device,
    precision: Option<Precision>,
    /// The largest buffer the device binds (a GPU's): larger models are refused up front.
    buffer_limit: Option<u64>,
    pub(crate) http: reqwest::Client,
    /// The loaded model and its name; the lock also makes jobs run one at a time.
    loaded: Mutex<Option<(String, Arc<Pipeline>)>>,
}

impl Engine {
    pub fn new(
        device: Device,
        precision: Option<Precision>,
        buffer_limit: Option<u64>,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Engine {
            device,
            precision,
            buffer_limit,
            http,
            loaded: Mutex::new(None),
        })
    }
}

/// `fal-ai/inpaint`.
pub struct Inpaint {
    pub engine: Arc<Engine>,
}

pub(crate) fn field_error(field: &str, msg: impl Into<String>) -> JobError {
    Failure::field(field, msg).into()
}

impl From<Failure> for JobError {
    fn from(f: Failure) -> Self {
        JobError {
            status: StatusCode::from_u16(f.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: f.body(),
            message: f.message(),
            error_type: f.error_type(),
        }
    }
}

/// The bytes of an input: a `data:` URI or an http(s) URL.
pub(crate) async fn fetch(
    http: &reqwest::Client,
    url: &str,
    field: &str,
) -> Result<Vec<u8>, JobError> {
    let bad = |message: String| field_error(field, message);
    let too_big = || bad(format!("the image is over {MAX_INPUT_BYTES} bytes"));
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("a data: URI needs a comma before its data".into()))?;
        let bytes = if meta.ends_with(";base64") {
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| bad(format!("the base64 data does not decode: {e}")))?
        } else {
            percent_encoding::percent_decode_str(data).collect()
        };
        if bytes.len() > MAX_INPUT_BYTES {
            return Err(too_big());
        }
        return Ok(bytes);
    }
    let mut res = http
        .get(url)
        .send()
        .await
        .map_err(|e| bad(format!("could not fetch {url}: {}", e.without_url())))?;
    if !res.status().is_success() {
        return Err(bad(format!("fetching {url} answered {}", res.status())));
    }
    if res
        .content_length()
        .is_some_and(|n| n as usize > MAX_INPUT_BYTES)
    {
        return Err(too_big());
    }
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| {
        bad(format!(
            "the download of {url} broke off: {}",
            e.without_url()
        ))
    })? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_INPUT_BYTES {
            return Err(too_big());
        }
    }
    Ok(out)
}

/// Download progress as log lines, every 10 % of a file.
struct LogProgress(tokio::sync::mpsc::UnboundedSender<String>);

impl Progress for LogProgress {
    fn start(&self, file: &str, total: Option<u64>) {
        let size = total.map_or_else(String::new, |t| format!(" ({:.1} MB)", t as f64 / 1e6));
        let _ = self.0.send(format!("downloading {file}{size}"));
    }
    fn advance(&self, file: &str, done: u64, total: Option<u64>) {
        if let Some(t) = total.filter(|&t| t > 0) {
            let before = (done.saturating_sub(1 << 20)) * 10 / t;
            if done * 10 / t > before {
                let _ = self
                    .0
                    .send(format!("downloading {file}: {}%", done * 100 / t));
            }
        }
    }
    fn finish(&self, file: &str, bytes: u64) {
        let _ = self
            .0
            .send(format!("downloaded {file} ({:.1} MB)", bytes as f64 / 1e6));
    }
}

/// The engine's side of a call: the model loaded (or reused), inputs fetched and decoded, the
/// generation run on a blocking thread with a log line per step and the queue's cancel between
/// steps.
pub(crate) async fn generate(
    engine: &Engine,
    ctx: &Arc<JobContext>,
    call: &Call,
) -> Result<Generated, JobError> {
    let image_bytes = fetch(&engine.http, &call.image_url, "image_url");
    let (image_bytes, mask_bytes) = match &call.mask_url {
        Some(m) => {
            let (i, m) = tokio::try_join!(image_bytes, fetch(&engine.http, m, "mask_url"))?;
            (i, Some(m))
        }
        None => (image_bytes.await?, None),
    };
    let err = |e: PipelineError| JobError::from(call.failure(e));
    let image = decode(&image_bytes, "image_url").map_err(err)?;
    let mask = mask_bytes
        .map(|m| decode(&m, "mask_url"))
        .transpose()
        .map_err(err)?;

    // One job at a time on the device; the model stays loaded for the next request.
    let key = call.model_key();
    let model_name = call.model_name.as_str();
    let mut loaded = engine.loaded.lock().await;
    let pipe = match loaded.as_ref() {
        Some((name, pipe)) if *name == key => pipe.clone(),
        _ => {
            *loaded = None;
            ctx.info(format!("loading {model_name}"));
            let location = RepoLocation::parse(model_name)
                .map_err(|e| field_error("model_name", e.to_string()))?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let forward = {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    while let Some(line) = rx.recv().await {
                        ctx.info(line);
                    }
                })
            };
            let files = RepoFiles::new(
                location,
                HubOptions::from_env(),
                Box::new(LogProgress(tx.clone())),
            )
            .map_err(|e| err(e.into()))?;
            let options = LoadOptions {
                precision: engine.precision,
                variant: call.variant.clone(),
                buffer_limit: engine.buffer_limit,
            };
            let device = engine.device.clone();
            let handle = tokio::runtime::Handle::current();
            let pipe = tokio::task::spawn_blocking(move || {
                handle.block_on(async move {
                    Pipeline::load(&files, &device, &options, &mut |line| {
                        let _ = tx.send(line);
                    })
                    .await
                })
            })
            .await
            .map_err(|e| JobError::internal(format!("loading the model crashed: {e}")))?
            .map_err(err)?;
            let _ = forward.await;
            let pipe = Arc::new(pipe);
            *loaded = Some((key, pipe.clone()));
            pipe
        }
    };

    ctx.info(format!("seed {}", call.request.seed));
    let job = ctx.clone();
    let req = call.request.clone();
    let handle = tokio::runtime::Handle::current();
    let out = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let task = match &mask {
                Some(mask) => Task::Inpaint {
                    image: &image,
                    mask,
                },
                None => Task::ImageToImage { image: &image },
            };
            pipe.generate(task, &req, &mut |p, _| {
                job.info(format!("step {}/{}", p.step, p.total));
                !job.is_cancelled()
            })
            .await
        })
    })
    .await
    .map_err(|e| JobError::internal(format!("the generation crashed: {e}")))?
    .map_err(err)?;
    drop(loaded);
    Ok(out)
}

/// Encodes and stores each image; answers them as fal's `Image`s.
pub(crate) async fn store_images(
    ctx: &JobContext,
    call: &Call,
    out: &Generated,
) -> Result<Vec<Image>, JobError> {
    let mut images = Vec::with_capacity(out.images.len());
    for encoded in call.encode(out)? {
        // Described before the bytes move into storage, which gives the URL.
        let mut image = encoded.image(String::new());
        image.url = ctx
            .save_output(&encoded.file_name, encoded.content_type, encoded.bytes)
            .await?;
        images.push(image);
    }
    Ok(images)
}

/// Runs one call of an endpoint the engine serves (`Call::parse` refuses the others).
pub(crate) async fn run_call(
    engine: Arc<Engine>,
    endpoint_id: String,
    input: Value,
    ctx: JobContext,
) -> Result<Value, JobError> {
    let call = Call::parse(&endpoint_id, &input)?;
    let ctx = Arc::new(ctx);
    let out = generate(&engine, &ctx, &call).await?;
    let images = store_images(&ctx, &call, &out).await?;
    Ok(call.output(images)?)
}

impl Endpoint for Inpaint {
    fn run(&self, input: Value, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        run_call(self.engine.clone(), ENDPOINT_ID.to_owned(), input, ctx).boxed()
    }
}
