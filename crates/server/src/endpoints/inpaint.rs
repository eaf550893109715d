//! `fal-ai/inpaint` on this server's own engine: inputs fetched from http(s) URLs or `data:` URIs,
//! the model loaded once and kept while requests ask for it, one generation at a time, a log line
//! per step, the image stored in the server's storage and returned as fal returns it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use burn::tensor::Device;
use fresco_diffusion::pipeline::image::{OutputFormat, decode, encode};
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::pipeline::{Generated, Pipeline, PipelineError, Request, Task};
use fresco_diffusion::rng::random_seed;
use fresco_diffusion::weights::WeightsError;
use fresco_diffusion::weights::hub::{HubOptions, Progress, RepoFiles};
use fresco_diffusion::weights::repo::RepoLocation;
use fresco_diffusion::weights::store::Precision;
use fresco_protocol::endpoints::Image;
use fresco_protocol::endpoints::inpaint::{InpaintInput, InpaintOutput};
use fresco_protocol::error::{ValidationErrorBody, ValidationErrorItem};
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
    pub(crate) http: reqwest::Client,
    /// The loaded model and its name; the lock also makes jobs run one at a time.
    loaded: Mutex<Option<(String, Arc<Pipeline>)>>,
}

impl Engine {
    pub fn new(device: Device, precision: Option<Precision>) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Engine {
            device,
            precision,
            http,
            loaded: Mutex::new(None),
        })
    }
}

/// `fal-ai/inpaint`.
pub struct Inpaint {
    pub engine: Arc<Engine>,
}

pub(crate) fn field_error(field: &str, msg: impl Into<String>, kind: &str) -> JobError {
    JobError::validation(ValidationErrorBody {
        detail: vec![ValidationErrorItem::new(
            vec!["body".into(), field.into()],
            msg,
            kind,
        )],
    })
}

/// How an endpoint names the engine's request fields (`fal-ai/lora/*` call strength
/// `noise_strength`).
#[derive(Default)]
pub(crate) struct FieldNames {
    pub strength: Option<&'static str>,
}

/// A pipeline error as the answer fal would give: 422 on the field at fault, 400 on a cancel.
pub(crate) fn pipeline_error(e: PipelineError, names: &FieldNames) -> JobError {
    match e {
        PipelineError::Input { field, message } => {
            let field = match (field.as_str(), names.strength) {
                ("strength", Some(name)) => name.to_owned(),
                _ => field,
            };
            field_error(&field, message, "value_error")
        }
        PipelineError::Cancelled => JobError::cancelled(),
        PipelineError::Weights(w @ (WeightsError::Network { .. } | WeightsError::Config(_))) => {
            field_error(
                "model_name",
                format!("the model could not be loaded: {w}"),
                "value_error",
            )
        }
        other => JobError::internal(other.to_string()),
    }
}

/// The bytes of an input: a `data:` URI or an http(s) URL.
pub(crate) async fn fetch(
    http: &reqwest::Client,
    url: &str,
    field: &str,
) -> Result<Vec<u8>, JobError> {
    let bad = |message: String| field_error(field, message, "value_error");
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

/// A short random file name, as fal names outputs.
fn output_name(ext: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}.{ext}", &id[..12])
}

/// What a job runs on: the model and the fetched input files.
pub(crate) struct Inputs<'a> {
    pub model_name: &'a str,
    pub variant: Option<&'a str>,
    pub image: Vec<u8>,
    pub mask: Option<Vec<u8>>,
}

/// The engine's side of a job: the model loaded (or reused), inputs decoded, the generation run
/// on a blocking thread with a log line per step and the queue's cancel between steps.
pub(crate) async fn generate(
    engine: &Engine,
    ctx: &Arc<JobContext>,
    inputs: Inputs<'_>,
    req: Request,
    fields: &FieldNames,
) -> Result<Generated, JobError> {
    let Inputs {
        model_name,
        variant,
        image: image_bytes,
        mask: mask_bytes,
    } = inputs;
    let err = |e: PipelineError| pipeline_error(e, fields);
    let image = decode(&image_bytes, "image_url").map_err(err)?;
    let mask = mask_bytes
        .map(|m| decode(&m, "mask_url"))
        .transpose()
        .map_err(err)?;

    // One job at a time on the device; the model stays loaded for the next request.
    let key = format!("{model_name}\u{0}{}", variant.unwrap_or(""));
    let mut loaded = engine.loaded.lock().await;
    let pipe = match loaded.as_ref() {
        Some((name, pipe)) if *name == key => pipe.clone(),
        _ => {
            *loaded = None;
            ctx.info(format!("loading {model_name}"));
            let location = RepoLocation::parse(model_name)
                .map_err(|e| field_error("model_name", e.to_string(), "value_error"))?;
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
                variant: variant.map(str::to_owned),
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

    ctx.info(format!("seed {}", req.seed));
    let job = ctx.clone();
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
    out: &Generated,
    format: OutputFormat,
) -> Result<Vec<Image>, JobError> {
    let mut images = Vec::with_capacity(out.images.len());
    for img in &out.images {
        let bytes = encode(img, format).map_err(|e| pipeline_error(e, &FieldNames::default()))?;
        let file_name = output_name(format.extension());
        let size = bytes.len() as u64;
        let url = ctx
            .save_output(&file_name, format.content_type(), bytes)
            .await?;
        images.push(Image {
            url,
            content_type: Some(format.content_type().into()),
            file_name: Some(file_name),
            file_size: Some(size),
            width: Some(out.width),
            height: Some(out.height),
        });
    }
    Ok(images)
}

async fn run(engine: Arc<Engine>, input: Value, ctx: JobContext) -> Result<Value, JobError> {
    let input = InpaintInput::from_json(&input).map_err(JobError::validation)?;
    let (image_bytes, mask_bytes) = tokio::try_join!(
        fetch(&engine.http, &input.image_url, "image_url"),
        fetch(&engine.http, &input.mask_url, "mask_url"),
    )?;
    let ctx = Arc::new(ctx);
    let seed = input.seed.unwrap_or_else(random_seed);
    let mut req = Request::new(input.prompt.clone(), seed);
    // fal's schema default is "", which is encoded like any prompt.
    req.negative_prompt = Some(input.negative_prompt.clone());
    req.num_inference_steps = input.num_inference_steps as usize;
    req.guidance_scale = input.guidance_scale as f32;
    let inputs = Inputs {
        model_name: &input.model_name,
        variant: None,
        image: image_bytes,
        mask: Some(mask_bytes),
    };
    let out = generate(&engine, &ctx, inputs, req, &FieldNames::default()).await?;
    let mut images = store_images(&ctx, &out, OutputFormat::Png).await?;
    let image = images
        .drain(..)
        .next()
        .ok_or_else(|| JobError::internal("the pipeline made no image"))?;
    serde_json::to_value(InpaintOutput { image, seed }).map_err(|e| {
        JobError::with_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            Value::String(e.to_string()),
        )
    })
}

impl Endpoint for Inpaint {
    fn run(&self, input: Value, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        run(self.engine.clone(), input, ctx).boxed()
    }
}
