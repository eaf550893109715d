//! The registry of endpoints this server runs itself. Each is a handler that turns a JSON input
//! into a JSON output, logging as it goes and stopping when cancelled; the queue, the synchronous
//! run path and the proxy all reach the same handlers.

pub mod echo;
pub mod inpaint;
pub mod input;
pub mod lora;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use fresco_protocol::EndpointId;
use fresco_protocol::queue::LogLevel;
use fresco_protocol::storage::ObjectLifecycle;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::outbound::Outbound;
use crate::storage::Storage;

/// How a handler fails: the status and body the result replays (fal-api.md §8.4), worded once
/// for the server and the engine.
pub use fresco_protocol::failure::Failure;

/// `what` failed inside the server: the caller reads `"{what} failed (reference …)"`, the
/// detail (which may name the server's files) goes to the log only.
pub fn hidden(what: &str, detail: impl std::fmt::Display) -> Failure {
    Failure::Internal(format!(
        "{what} failed {}",
        crate::http::logged_reference(&detail)
    ))
}

/// What a handler gets besides its input.
pub struct JobContext {
    pub request_id: String,
    /// The full endpoint id the request was sent to (with its sub-path, if any).
    pub endpoint: EndpointId,
    logs: mpsc::UnboundedSender<(LogLevel, String)>,
    cancel: CancellationToken,
    outputs: Option<Outputs>,
    policy: Option<Policy>,
}

/// What this server allows a call besides its input: URLs through `outbound` (public hosts only
/// unless the server allows private ones), local models only under `models_dir`, input images up
/// to `max_input_pixels`.
#[derive(Clone)]
pub struct Policy {
    pub outbound: Outbound,
    /// Where `model_name` may name local folders; `None`: nowhere (models by id or URL only).
    pub models_dir: Option<PathBuf>,
    /// The server's configured public URL: its `/files/` URLs are read from the storage too.
    pub public_url: Option<String>,
    /// The most pixels an input image may have (checked from its header, before decoding).
    pub max_input_pixels: u64,
}

/// Where a request's output files go: the server's storage, under the URL the client used.
struct Outputs {
    storage: Storage,
    base_url: String,
    lifecycle: Option<ObjectLifecycle>,
}

impl JobContext {
    pub fn new(
        request_id: String,
        endpoint: EndpointId,
        logs: mpsc::UnboundedSender<(LogLevel, String)>,
        cancel: CancellationToken,
    ) -> Self {
        JobContext {
            request_id,
            endpoint,
            logs,
            cancel,
            outputs: None,
            policy: None,
        }
    }

    /// Lets the handler fetch inputs and load models (see [`Policy`]).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// What this server allows the call; a context without it fetches and loads nothing.
    pub fn policy(&self) -> Result<&Policy, Failure> {
        self.policy
            .as_ref()
            .ok_or_else(|| Failure::Internal("this server fetches no inputs".into()))
    }

    /// Lets the handler store output files (see [`JobContext::save_output`]).
    pub fn with_outputs(
        mut self,
        storage: Storage,
        base_url: String,
        lifecycle: Option<ObjectLifecycle>,
    ) -> Self {
        self.outputs = Some(Outputs {
            storage,
            base_url,
            lifecycle,
        });
        self
    }

    /// Stores an output file and answers its URL (kept as long as the request's
    /// `x-fal-object-lifecycle-preference` says, forever without one).
    pub async fn save_output(
        &self,
        file_name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, Failure> {
        let out = self
            .outputs
            .as_ref()
            .ok_or_else(|| Failure::Internal("this server has no storage for outputs".into()))?;
        out.storage
            .save(
                &out.base_url,
                file_name,
                content_type,
                bytes,
                out.lifecycle.clone(),
            )
            .await
            .map_err(|e| crate::endpoints::hidden("Storing the output", e.detail()))
    }

    /// Adds a line to the request's logs (seen by `status?logs=1` and the status stream at once).
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        // The receiver lives until the job is finished; a send can only fail after that.
        let _ = self.logs.send((level, message.into()));
    }

    pub fn info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the request is cancelled; race it against long work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

/// An endpoint implementation.
pub trait Endpoint: Send + Sync + 'static {
    fn run(&self, input: Value, ctx: JobContext) -> BoxFuture<'static, Result<Value, Failure>>;
}

/// Endpoints by app id (`[namespace/]owner/alias`).
#[derive(Clone, Default)]
pub struct Registry {
    endpoints: HashMap<String, Arc<dyn Endpoint>>,
}

impl Registry {
    /// The built-in endpoints.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        r.register(echo::ENDPOINT_ID, echo::Echo);
        r
    }

    /// Registers the endpoints that run on the engine (`fal-ai/inpaint`,
    /// `fal-ai/lora/image-to-image`, `fal-ai/lora/inpaint`), sharing `engine`.
    pub fn register_engine(&mut self, engine: Arc<inpaint::Engine>) {
        use fresco_protocol::endpoints::inpaint as fal_inpaint;
        self.register(
            fal_inpaint::ENDPOINT_ID,
            inpaint::Inpaint {
                engine: engine.clone(),
            },
        );
        self.register(lora::APP_ID, lora::Lora { engine });
    }

    /// Registers `endpoint` under `app_id` (e.g. `fal-ai/inpaint`); sub-paths reach it too.
    pub fn register(&mut self, app_id: &str, endpoint: impl Endpoint) {
        self.endpoints.insert(app_id.to_owned(), Arc::new(endpoint));
    }

    pub fn get(&self, app_id: &str) -> Option<Arc<dyn Endpoint>> {
        self.endpoints.get(app_id).cloned()
    }

    pub fn contains(&self, app_id: &str) -> bool {
        self.endpoints.contains_key(app_id)
    }

    pub fn app_ids(&self) -> impl Iterator<Item = &str> {
        self.endpoints.keys().map(String::as_str)
    }
}
