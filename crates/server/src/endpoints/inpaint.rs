//! `fal-ai/inpaint` (and, through `lora.rs`, `fal-ai/lora/*`) on this server's own engine: the
//! call is the engine's ([`fresco_diffusion::endpoints::run_call`]); this file is what the server
//! provides it ([`Host`]) — inputs read under the server's policy, models from the hub cache or
//! a URL, the generation on a blocking thread, outputs in the server's storage.

use std::sync::Arc;

use burn::tensor::Device;
use fresco_diffusion::endpoints::{self, Call, EncodedImage, Host, ModelSlot, Work};
use fresco_diffusion::pipeline::image::MAX_INPUT_PIXELS;
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::pipeline::{Generated, Pipeline, PipelineError};
use fresco_diffusion::weights::WeightsError;
use fresco_diffusion::weights::hub::{HubOptions, RepoFiles};
use fresco_diffusion::weights::progress::ProgressLines;
use fresco_diffusion::weights::repo::RepoLocation;
use fresco_diffusion::weights::store::Precision;
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
    /// The loaded model, kept for the next call that names it.
    models: ModelSlot<Arc<Pipeline>>,
    /// Held for the whole of a call: jobs run one at a time on the device.
    busy: Mutex<()>,
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
            models: ModelSlot::default(),
            busy: Mutex::new(()),
        })
    }
}

/// `fal-ai/inpaint`.
pub struct Inpaint {
    pub engine: Arc<Engine>,
}

/// A call on this server: inputs through [`JobContext::input_bytes`] (public URLs only unless
/// allowed, this server's own files from its storage), models from the hub cache or a URL, the
/// generation on a blocking thread, outputs in the server's storage.
struct ServerHost {
    engine: Arc<Engine>,
    ctx: Arc<JobContext>,
}

impl Host for ServerHost {
    type Model = Arc<Pipeline>;

    async fn input(&self, url: &str, field: &str) -> Result<Vec<u8>, Failure> {
        self.ctx.input_bytes(url, field).await
    }

    fn max_input_pixels(&self) -> u64 {
        self.ctx
            .policy()
            .map_or(MAX_INPUT_PIXELS, |p| p.max_input_pixels)
    }

    fn models(&self) -> &ModelSlot<Arc<Pipeline>> {
        &self.engine.models
    }

    async fn load(&self, call: &Call) -> Result<Arc<Pipeline>, Failure> {
        let (ctx, engine) = (&self.ctx, &self.engine);
        let policy = ctx.policy()?;
        let location = model_location(&call.model_name, policy)?;
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
        .map_err(|e| call.failure(e.into()))?;
        if is_url {
            files = files.with_http(policy.outbound.client().clone());
        }
        let options = LoadOptions {
            precision: engine.precision,
            variant: call.variant.clone(),
            buffer_limit: engine.buffer_limit,
            ..LoadOptions::default()
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
            e => call.failure(e),
        })?;
        let _ = forward.await;
        Ok(Arc::new(pipe))
    }

    async fn generate(&self, model: Arc<Pipeline>, work: Work) -> Result<Generated, PipelineError> {
        let ctx = self.ctx.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            handle.block_on(work.run(&model, &|line| ctx.info(line), &|| ctx.is_cancelled()))
        })
        .await
        .unwrap_or_else(|e| {
            Err(PipelineError::Internal(format!(
                "The generation failed {}",
                crate::http::logged_reference(&e)
            )))
        })
    }

    async fn store(&self, image: EncodedImage) -> Result<String, Failure> {
        self.ctx
            .save_output(&image.file_name, image.content_type, image.bytes)
            .await
    }

    fn log(&self, line: String) {
        self.ctx.info(line);
    }

    fn cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }
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

/// Runs one call of an endpoint the engine serves (`Call::parse` refuses the others), one at a
/// time on the engine's device.
pub(crate) async fn run_call(
    engine: Arc<Engine>,
    endpoint_id: String,
    input: Value,
    ctx: JobContext,
) -> Result<Value, Failure> {
    let _one_at_a_time = engine.busy.lock().await;
    let host = ServerHost {
        engine: engine.clone(),
        ctx: Arc::new(ctx),
    };
    endpoints::run_call(&host, &endpoint_id, input).await
}

impl Endpoint for Inpaint {
    fn run(&self, input: Value, ctx: JobContext) -> BoxFuture<'static, Result<Value, Failure>> {
        run_call(self.engine.clone(), ENDPOINT_ID.to_owned(), input, ctx).boxed()
    }
}
