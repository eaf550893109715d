//! `fal-ai/inpaint` on this server's own engine: inputs fetched from http(s) URLs or `data:` URIs,
//! the model loaded once and kept while requests ask for it, one generation at a time, a log line
//! per step, the image stored in the server's storage and returned as fal returns it.

use std::sync::Arc;

use burn::tensor::Device;
use fresco_diffusion::pipeline::endpoint::Call;
use fresco_diffusion::pipeline::image::decode_at_most;
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::pipeline::{Generated, Pipeline, PipelineError, Task};
use fresco_diffusion::weights::WeightsError;
use fresco_diffusion::weights::hub::{HubOptions, RepoFiles};
use fresco_diffusion::weights::progress::ProgressLines;
use fresco_diffusion::weights::repo::RepoLocation;
use fresco_diffusion::weights::store::Precision;
use fresco_protocol::endpoints::Image;
use fresco_protocol::endpoints::inpaint::ENDPOINT_ID;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Mutex;

use super::{Endpoint, Failure, JobContext, Policy};

/// The engine the endpoints share: one device, one loaded model at a time, one job at a time.
pub struct Engine {
    device: Device,
    precision: Option<Precision>,
    /// The largest buffer the device binds (a GPU's): larger models are refused up front.
    buffer_limit: Option<u64>,
    /// The loaded model and its name; the lock also makes jobs run one at a time.
    loaded: Mutex<Option<(String, Arc<Pipeline>)>>,
}

impl Engine {
    pub fn new(
        device: Device,
        precision: Option<Precision>,
        buffer_limit: Option<u64>,
    ) -> Result<Self, String> {
        Ok(Engine {
            device,
            precision,
            buffer_limit,
            loaded: Mutex::new(None),
        })
    }
}

/// `fal-ai/inpaint`.
pub struct Inpaint {
    pub engine: Arc<Engine>,
}

/// The engine's side of a call: the model loaded (or reused), inputs fetched and decoded, the
/// generation run on a blocking thread with a log line per step and the queue's cancel between
/// steps.
pub(crate) async fn generate(
    engine: &Engine,
    ctx: &Arc<JobContext>,
    call: &Call,
) -> Result<Generated, Failure> {
    let image_bytes = ctx.input_bytes(&call.image_url, "image_url");
    let (image_bytes, mask_bytes) = match &call.mask_url {
        Some(m) => {
            let (i, m) = tokio::try_join!(image_bytes, ctx.input_bytes(m, "mask_url"))?;
            (i, Some(m))
        }
        None => (image_bytes.await?, None),
    };
    let err = |e: PipelineError| call.failure(e);
    let max_pixels = ctx.policy()?.max_input_pixels;
    let image = decode_at_most(&image_bytes, "image_url", max_pixels).map_err(err)?;
    let mask = mask_bytes
        .map(|m| decode_at_most(&m, "mask_url", max_pixels))
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
            let policy = ctx.policy()?;
            let location = model_location(model_name, policy)?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let forward = {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    while let Some(line) = rx.recv().await {
                        ctx.info(line);
                    }
                })
            };
            // A model URL is the caller's: fetched like its inputs (public hosts only unless
            // allowed). A Hugging Face id goes to the hub the operator configured.
            let is_url = matches!(location, RepoLocation::Url(_));
            let mut files = RepoFiles::new(location, HubOptions::from_env(), {
                // Download progress as the request's log lines.
                let (tx, lines) = (tx.clone(), ProgressLines::new());
                Box::new(move |step| {
                    if let Some(line) = lines.line(step) {
                        let _ = tx.send(line);
                    }
                })
            })
            .map_err(|e| err(e.into()))?;
            if is_url {
                files = files.with_http(policy.outbound.client().clone());
            }
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
            .map_err(|e| crate::endpoints::hidden("Loading the model", e))?
            .map_err(|e| match e {
                // As for the inputs: why a caller's URL did not answer is for the log only.
                PipelineError::Weights(WeightsError::Network { url, message }) if is_url => {
                    tracing::warn!(request_id = %ctx.request_id, url, "could not fetch the model: {message}");
                    Failure::field("model_name", MODEL_NOT_FETCHED)
                }
                e => err(e),
            })?;
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
    .map_err(|e| crate::endpoints::hidden("The generation", e))?
    .map_err(err)?;
    drop(loaded);
    Ok(out)
}

/// What a caller hears when a model URL is refused or does not answer (the reason is logged).
const MODEL_NOT_FETCHED: &str = "the model could not be loaded: could not fetch model_name";

/// Where `model_name` points, as this server allows it: a Hugging Face id; an http(s) URL that
/// [`Outbound::check`](crate::outbound::Outbound::check) passes; a folder only inside the
/// server's `--models-dir` (a relative name resolves inside it, an absolute path must resolve
/// inside it; links are followed before the check). Without `--models-dir`, no local folder.
pub(crate) fn model_location(model_name: &str, policy: &Policy) -> Result<RepoLocation, Failure> {
    let name = model_name.trim();
    let refused = |why: String| Failure::field("model_name", why);
    if name.starts_with("http://") || name.starts_with("https://") {
        return match policy.outbound.check(name) {
            Ok(_) => Ok(RepoLocation::Url(name.trim_end_matches('/').to_owned())),
            Err(e) => {
                tracing::warn!(model_name = name, "refused a model URL: {e}");
                Err(refused(MODEL_NOT_FETCHED.into()))
            }
        };
    }
    if let Some(dir) = &policy.models_dir {
        let path = std::path::Path::new(name);
        let candidate = if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        };
        // Resolved (links and `..` included) before it is compared with the models folder.
        if let (Ok(real), Ok(root)) = (candidate.canonicalize(), dir.canonicalize())
            && real.is_dir()
        {
            return if real.starts_with(&root) {
                Ok(RepoLocation::Dir(real))
            } else {
                Err(refused(format!(
                    "{name:?} is outside the folder this server serves models from"
                )))
            };
        }
    }
    if ['/', '.', '~', '\\'].iter().any(|c| name.starts_with(*c)) {
        return Err(refused(match &policy.models_dir {
            Some(_) => format!("{name:?} is not a model folder of this server"),
            None => "this server loads models by Hugging Face id or URL, not from local folders \
                     (start fresco serve with --models-dir to serve a folder of models)"
                .into(),
        }));
    }
    RepoLocation::parse_hub_id(name).map_err(|e| refused(e.to_string()))
}

/// Encodes and stores each image; answers them as fal's `Image`s.
pub(crate) async fn store_images(
    ctx: &JobContext,
    call: &Call,
    out: &Generated,
) -> Result<Vec<Image>, Failure> {
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
) -> Result<Value, Failure> {
    let call = Call::parse(&endpoint_id, &input)?;
    let ctx = Arc::new(ctx);
    let out = generate(&engine, &ctx, &call).await?;
    let images = store_images(&ctx, &call, &out).await?;
    Ok(call.output(images)?)
}

impl Endpoint for Inpaint {
    fn run(&self, input: Value, ctx: JobContext) -> BoxFuture<'static, Result<Value, Failure>> {
        run_call(self.engine.clone(), ENDPOINT_ID.to_owned(), input, ctx).boxed()
    }
}
