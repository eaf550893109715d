//! fal's endpoints on the engine — `fal-ai/inpaint`, `fal-ai/lora/image-to-image` and
//! `fal-ai/lora/inpaint` — written once for every place a call runs: `fresco serve` (on its CPU or
//! GPU) and the browser's local engine (WebGPU, in a worker).
//!
//! [`run_call`] is the call: fal's input checked ([`Call::parse`]), the image and mask fetched and
//! decoded, the model loaded or reused by name, the generation with a log line per step and the
//! cancel read between steps, the images encoded, stored and answered as fal answers. What differs
//! between the places is the [`Host`]'s: how an input URL is read (the server refuses private
//! addresses and reads its own files from disk; the browser `fetch`es `blob:` URLs too), how a
//! model's files are opened (the hub cache or `fetch` + the origin's cache), where the generation
//! runs (a blocking thread, or the worker itself), and where an output goes (the server's storage,
//! or bytes for the page's `blob:` URLs).

mod call;

use std::future::Future;
use std::sync::Mutex;

use image::DynamicImage;
use serde_json::Value;

pub use call::{Call, ENDPOINT_IDS, EncodedImage, output_file_name};
pub use fresco_protocol::failure::Failure;

use crate::pipeline::image::decode_at_most;
use crate::pipeline::{Generated, Pipeline, PipelineError, Request, StepProgress, Task};

/// The largest input file accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 << 20;

/// The 422 for an input over [`MAX_INPUT_BYTES`].
pub fn too_big(field: &str) -> Failure {
    Failure::field(field, format!("the image is over {MAX_INPUT_BYTES} bytes"))
}

/// `Send` natively, where hosts run calls on a multi-threaded runtime; nothing in a browser,
/// whose engine lives on one thread with JavaScript's values.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` natively; nothing in a browser.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` natively; nothing in a browser.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}
/// `Sync` natively; nothing in a browser.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}

/// What a place that runs calls provides.
pub trait Host: MaybeSync {
    /// A loaded model as the host shares it (`Arc<Pipeline>` natively, `Rc<Pipeline>` in a
    /// browser).
    type Model: std::ops::Deref<Target = Pipeline> + Clone + MaybeSend;

    /// The bytes of the input `url` that the caller gave in `field` (`image_url`, `mask_url`), at
    /// most [`MAX_INPUT_BYTES`]; a failure names the field.
    fn input(
        &self,
        url: &str,
        field: &str,
    ) -> impl Future<Output = Result<Vec<u8>, Failure>> + MaybeSend;

    /// The most pixels an input image may have (checked from its header, before decoding).
    fn max_input_pixels(&self) -> u64;

    /// Whether input images may be `blob:` URLs: only where the call runs in the browser that
    /// made them.
    fn takes_blob_urls(&self) -> bool {
        false
    }

    /// Where the loaded model is kept between calls.
    fn models(&self) -> &ModelSlot<Self::Model>;

    /// Loads the call's model (`model_name`, `variant`) onto the device.
    fn load(&self, call: &Call) -> impl Future<Output = Result<Self::Model, Failure>> + MaybeSend;

    /// Runs `work` on `model` ([`Work::run`]), logging each step and stopping when cancelled.
    fn generate(
        &self,
        model: Self::Model,
        work: Work,
    ) -> impl Future<Output = Result<Generated, PipelineError>> + MaybeSend;

    /// Stores an output image; answers the URL it is served at.
    fn store(
        &self,
        image: EncodedImage,
    ) -> impl Future<Output = Result<String, Failure>> + MaybeSend;

    /// Adds a line to the call's logs.
    fn log(&self, line: String);

    /// Whether the caller cancelled the call.
    fn cancelled(&self) -> bool;
}

/// The model on the device and the key it was loaded under ([`Call::model_key`]): the next call
/// with the same key reuses it; another key drops it before its own model loads, so two models
/// never share the device.
pub struct ModelSlot<M> {
    loaded: Mutex<Option<(String, M)>>,
}

impl<M> Default for ModelSlot<M> {
    fn default() -> Self {
        ModelSlot {
            loaded: Mutex::new(None),
        }
    }
}

impl<M: Clone> ModelSlot<M> {
    /// The loaded model if it was loaded under `key`; else the slot is emptied.
    fn take_or_clear(&self, key: &str) -> Option<M> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        match loaded.as_ref() {
            Some((k, model)) if k == key => Some(model.clone()),
            _ => {
                *loaded = None;
                None
            }
        }
    }

    fn keep(&self, key: String, model: M) {
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, model));
    }

    /// The key of the loaded model, if one is.
    pub fn key(&self) -> Option<String> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.as_ref().map(|(k, _)| k.clone())
    }
}

/// A generation, owned, so that a host can move it to the thread it runs on.
pub struct Work {
    pub image: DynamicImage,
    /// Present for inpainting.
    pub mask: Option<DynamicImage>,
    pub request: Request,
}

impl Work {
    /// Runs on `pipe`: `log` gets a line per denoising step, `cancelled` is asked after each.
    pub async fn run(
        &self,
        pipe: &Pipeline,
        log: &dyn Fn(String),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generated, PipelineError> {
        let task = match &self.mask {
            Some(mask) => Task::Inpaint {
                image: &self.image,
                mask,
            },
            None => Task::ImageToImage { image: &self.image },
        };
        let memory = pipe.plan_call(&task, &self.request)?;
        log(format!("memory: {memory}"));
        pipe.generate(task, &self.request, &mut |p: StepProgress, _| {
            log(format!("step {}/{}", p.step, p.total));
            !cancelled()
        })
        .await
    }
}

/// Runs one call of `endpoint_id` (one of [`ENDPOINT_IDS`]) on `input` at `host`: fal's output,
/// or fal's answer for why there is none.
pub async fn run_call<H: Host>(
    host: &H,
    endpoint_id: &str,
    input: Value,
) -> Result<Value, Failure> {
    let call = Call::parse_with(endpoint_id, &input, host.takes_blob_urls())?;
    drop(input);
    let err = |e: PipelineError| call.failure(e);

    // The inputs, decoded (their bytes dropped before the model loads: a browser's memory).
    let image_bytes = host.input(&call.image_url, "image_url");
    let (image_bytes, mask_bytes) = match &call.mask_url {
        Some(mask) => {
            let (image, mask) = both(image_bytes, host.input(mask, "mask_url")).await;
            (image?, Some(mask?))
        }
        None => (image_bytes.await?, None),
    };
    let max_pixels = host.max_input_pixels();
    let image = decode_at_most(&image_bytes, "image_url", max_pixels).map_err(err)?;
    let mask = mask_bytes
        .map(|m| decode_at_most(&m, "mask_url", max_pixels))
        .transpose()
        .map_err(err)?;
    drop(image_bytes);

    // The model: kept from the last call with the same name and variant, else loaded now.
    let key = call.model_key();
    let model = match host.models().take_or_clear(&key) {
        Some(model) => model,
        None => {
            host.log(format!("loading {}", call.model_name));
            let model = host.load(&call).await?;
            host.models().keep(key, model.clone());
            model
        }
    };
    if host.cancelled() {
        return Err(Failure::Cancelled);
    }

    host.log(format!("seed {}", call.request.seed));
    let work = Work {
        image,
        mask,
        request: call.request.clone(),
    };
    let out = host.generate(model, work).await.map_err(err)?;

    let mut images = Vec::with_capacity(out.images.len());
    for encoded in call.encode(&out)? {
        // Described before the bytes move to the host, which gives the URL.
        let mut image = encoded.image(String::new());
        image.url = host.store(encoded).await?;
        images.push(image);
    }
    call.output(images)
}

/// Awaits two futures together (the image and the mask arrive side by side).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    use std::pin::pin;
    use std::task::Poll;
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().expect("ready"), rb.take().expect("ready")))
        } else {
            Poll::Pending
        }
    })
    .await
}
