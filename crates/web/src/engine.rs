//! The local engine: the endpoints `fresco serve` runs on its own engine (`fal-ai/inpaint`, and
//! `fal-ai/lora/image-to-image` / `fal-ai/lora/inpaint`), run on the browser's WebGPU.
//!
//! It lives in a dedicated Web Worker (`js/engine-worker.js`), never on a page's main thread: a
//! generation waits for the device between steps, and Chromium's renderer stops answering when
//! its main thread does that. The worker runs one call at a time and hands each to [`LocalEngine::run`].
//!
//! A call is the engine's own ([`endpoints::run_call`], the same as on the server: fal's schema
//! and its 422s, the inputs, the model kept by name, a log line per step, the cancel read between
//! steps); this file is what the worker provides it ([`WorkerHost`]): input images fetched
//! (`http(s):`, `data:` and `blob:` URLs alike), the model loaded by `model_name` from a Hugging
//! Face-layout hub over `fetch` through the origin's cache, and the images handed back as bytes for
//! the page to wrap in `blob:` URLs: the output's image URLs are `local:0`, `local:1`, … in the
//! order of the files.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use fresco_diffusion::device::{device_lost, on_device_lost, webgpu};
use fresco_diffusion::endpoints::{
    self, Call, EncodedImage, Failure, Host, MAX_INPUT_BYTES, ModelSlot, Work, too_big,
};
use fresco_diffusion::pipeline::image::MAX_INPUT_PIXELS;
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::pipeline::{Generated, Pipeline, PipelineError};
use fresco_diffusion::weights::cache::Cache;
use fresco_diffusion::weights::fetch::fetch_bytes;
use fresco_diffusion::weights::lock::{self, LockError};
use fresco_diffusion::weights::progress::{Fetch, Observer, ProgressLines, megabytes};
use fresco_diffusion::weights::url_repo::UrlRepo;
use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use serde_json::Value;
use wasm_bindgen::prelude::*;

#[derive(Default)]
struct State {
    /// The model on the GPU, kept for the next call that names it.
    models: ModelSlot<Rc<Pipeline>>,
    busy: Cell<bool>,
}

/// What the worker passes in: `log(line)` for each log line, `cancelled()` asked between steps,
/// and `progress(file, loaded, total)` as model files download.
struct Hooks {
    log: Function,
    cancelled: Function,
    progress: Function,
}

impl Hooks {
    fn from_js(hooks: &JsValue) -> Result<Self, Failure> {
        let get = |name: &str| {
            Reflect::get(hooks, &JsValue::from_str(name))
                .ok()
                .and_then(|f| f.dyn_into::<Function>().ok())
                .ok_or_else(|| Failure::Internal(format!("the engine's hooks lack `{name}`")))
        };
        Ok(Hooks {
            log: get("log")?,
            cancelled: get("cancelled")?,
            progress: get("progress")?,
        })
    }

    fn log(&self, line: &str) {
        let _ = self.log.call1(&JsValue::NULL, &JsValue::from_str(line));
    }

    fn cancelled(&self) -> bool {
        self.cancelled
            .call0(&JsValue::NULL)
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

/// The engine of one worker: the WebGPU device (opened on the first call) and the loaded model.
#[wasm_bindgen]
pub struct LocalEngine {
    state: Rc<State>,
}

#[wasm_bindgen]
impl LocalEngine {
    /// `on_lost(message)` is called when the GPU device is lost, whether or not a call
    /// runs: this engine cannot run anything after that, and its worker should be replaced.
    #[wasm_bindgen(constructor)]
    pub fn new(on_lost: Option<Function>) -> LocalEngine {
        install_panic_hook();
        if let Some(listener) = on_lost {
            on_device_lost(move |reason| {
                let message = Failure::DeviceLost(reason.to_owned()).message();
                let _ = listener.call1(&JsValue::NULL, &JsValue::from_str(&message));
            });
        }
        LocalEngine {
            state: Rc::new(State::default()),
        }
    }

    /// Runs one call of `endpoint_id` on `input` (JSON text whose image fields are URLs) with
    /// models from `hub_url`. `hooks` is `{log(line), cancelled()}`.
    ///
    /// Resolves with `{output, files}`: `output` fal's output as JSON text, `files` its images
    /// as `{bytes: Uint8Array, content_type, file_name}`. Rejects with `{status, body, message,
    /// error_type, fatal}` — fal's answer for the failure (`body` as JSON text); `fatal` when the
    /// device was lost, so that this engine can run nothing more.
    pub fn run(
        &self,
        endpoint_id: String,
        input: String,
        hub_url: String,
        hooks: JsValue,
    ) -> js_sys::Promise {
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            if state.busy.replace(true) {
                return Err(failure_js(&Failure::Internal(
                    "the local engine runs one call at a time".into(),
                )));
            }
            let outcome = async {
                let hooks = Hooks::from_js(&hooks)?;
                run(&state, &endpoint_id, &input, &hub_url, &hooks).await
            }
            .await;
            state.busy.set(false);
            match outcome {
                Ok((output, files)) => outcome_js(&output, files).map_err(|e| failure_js(&e)),
                Err(e) => Err(failure_js(&e)),
            }
        })
    }

    /// The loaded model's `model_name` (and variant, after a NUL), if any.
    #[wasm_bindgen(getter, js_name = loadedModel)]
    pub fn loaded_model(&self) -> Option<String> {
        self.state.models.key()
    }
}

thread_local! {
    /// The message of the last panic, for [`take_panic`]: a panic is a trap, which JavaScript
    /// sees as a bare `RuntimeError: unreachable`.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.to_string();
            let global = js_sys::global();
            if let Ok(console) = Reflect::get(&global, &JsValue::from_str("console"))
                && let Ok(error) = Reflect::get(&console, &JsValue::from_str("error"))
                && let Ok(error) = error.dyn_into::<Function>()
            {
                let _ = error.call1(&console, &JsValue::from_str(&message));
            }
            PANIC.with(|p| *p.borrow_mut() = Some(message));
        }));
    });
}

/// The message of the panic that ended the last call, if one did (once).
#[wasm_bindgen(js_name = takePanic)]
pub fn take_panic() -> Option<String> {
    PANIC.with(|p| p.borrow_mut().take())
}

async fn run(
    state: &State,
    endpoint_id: &str,
    input: &str,
    hub_url: &str,
    hooks: &Hooks,
) -> Result<(Value, Vec<EncodedImage>), Failure> {
    if let Some(reason) = device_lost() {
        return Err(Failure::DeviceLost(reason));
    }
    let input: Value = serde_json::from_str(input)
        .map_err(|e| Failure::Internal(format!("the input is not JSON: {e}")))?;
    let host = WorkerHost {
        state,
        hub_url,
        hooks,
        files: RefCell::new(Vec::new()),
    };
    let output = endpoints::run_call(&host, endpoint_id, input).await?;
    Ok((output, host.files.into_inner()))
}

/// A call in this worker: inputs from any URL `fetch` reads (`blob:` included), models from the
/// hub over `fetch` through the origin's cache, the generation on WebGPU here, the images handed
/// back as bytes (`local:0`, `local:1`, … in the output until the page makes `blob:` URLs).
struct WorkerHost<'a> {
    state: &'a State,
    hub_url: &'a str,
    hooks: &'a Hooks,
    files: RefCell<Vec<EncodedImage>>,
}

impl Host for WorkerHost<'_> {
    type Model = Rc<Pipeline>;

    async fn input(&self, url: &str, field: &str) -> Result<Vec<u8>, Failure> {
        fetch_input(url, field).await
    }

    fn max_input_pixels(&self) -> u64 {
        MAX_INPUT_PIXELS
    }

    fn takes_blob_urls(&self) -> bool {
        true
    }

    fn models(&self) -> &ModelSlot<Rc<Pipeline>> {
        &self.state.models
    }

    async fn load(&self, call: &Call) -> Result<Rc<Pipeline>, Failure> {
        load(call, self.hub_url, self.hooks).await.map(Rc::new)
    }

    async fn generate(&self, model: Rc<Pipeline>, work: Work) -> Result<Generated, PipelineError> {
        let hooks = self.hooks;
        work.run(&model, &|line| hooks.log(&line), &|| hooks.cancelled())
            .await
    }

    async fn store(&self, image: EncodedImage) -> Result<String, Failure> {
        let mut files = self.files.borrow_mut();
        files.push(image);
        Ok(format!("local:{}", files.len() - 1))
    }

    fn log(&self, line: String) {
        self.hooks.log(&line);
    }

    fn cancelled(&self) -> bool {
        self.hooks.cancelled()
    }
}

/// Loads the call's model onto this worker's WebGPU device: every file's header first (the
/// cache, or a `Range` request each), so that a model this device or this site's storage cannot
/// hold is refused before any weights download; then the weights, through the cache.
async fn load(call: &Call, hub_url: &str, hooks: &Hooks) -> Result<Pipeline, Failure> {
    let repo = UrlRepo::for_model(&call.model_name, hub_url)
        .map_err(|e| Failure::field("model_name", e.to_string()))?
        .observed(download_reporter(hooks));
    let (device, limits) = webgpu()
        .await
        .map_err(|e| Failure::Internal(e.to_string()))?;
    let buffer_limit = limits.buffer_limit;
    // One tab or worker of the site at a time loads through the cache (its files' handles are
    // exclusive to one of them); the others wait here, held until this function returns.
    let (repo, _cache_lock) = match Cache::open().await {
        Some(cache) => {
            let waiting = || {
                hooks.log("waiting for another tab of this site, which is loading a model through the cache")
            };
            let held = lock::acquire(&waiting, &|| hooks.cancelled())
                .await
                .map_err(|e| match e {
                    LockError::Cancelled => Failure::Cancelled,
                    LockError::Failed(m) => {
                        Failure::Internal(format!("could not take the model cache's lock: {m}"))
                    }
                })?;
            (repo.cached(Rc::new(cache)), held)
        }
        None => {
            hooks.log("no model cache here (this browser has no origin-private file system in workers): the files are downloaded on every load");
            (repo, None)
        }
    };
    hooks.log(&format!(
        "WebGPU: {}, largest buffer {} MB",
        if limits.shader_f16 {
            "f16"
        } else {
            "f32 (no shader-f16)"
        },
        buffer_limit >> 20
    ));
    // fp16 files where the repository has them (half the download; f32 devices widen them),
    // unless the call names a variant.
    let options = LoadOptions {
        precision: None,
        variant: Some(call.variant.clone().unwrap_or_else(|| "fp16".into())),
        buffer_limit: Some(buffer_limit),
        ..LoadOptions::default()
    };
    let plan = Pipeline::plan(&repo, &device, &options)
        .await
        .map_err(|e| call.failure(e))?;
    let files = plan.files();
    hooks.log(&format!(
        "{} weight files, {} in all",
        files.len(),
        megabytes(files.iter().map(|(_, size)| size).sum())
    ));
    repo.check_room(&files)
        .await
        .map_err(|e| call.failure(e.into()))?;
    Pipeline::load_planned(&repo, &plan, &device, &options, &mut |line| {
        hooks.log(&line)
    })
    .await
    .map_err(|e| call.failure(e))
}

/// Model downloads as the call's log lines (the engine's one wording, [`ProgressLines`]) and as
/// `progress(file, loaded, total)` calls for the page.
fn download_reporter(hooks: &Hooks) -> Observer {
    let log = hooks.log.clone();
    let progress = hooks.progress.clone();
    let lines = ProgressLines::new();
    Rc::new(move |step: Fetch<'_>| {
        let report = |file: &str, done: u64, total: Option<u64>| {
            let total = total.map_or(JsValue::NULL, |t| JsValue::from_f64(t as f64));
            let _ = progress.call3(
                &JsValue::NULL,
                &JsValue::from_str(file),
                &JsValue::from_f64(done as f64),
                &total,
            );
        };
        match step {
            Fetch::Download { file, total, from } => report(file, from, total),
            Fetch::Progress { file, done, total } => report(file, done, total),
            Fetch::Downloaded { file, bytes } | Fetch::Cached { file, bytes } => {
                report(file, bytes, Some(bytes))
            }
            Fetch::Retry { .. } => {}
        }
        if let Some(line) = lines.line(step) {
            let _ = log.call1(&JsValue::NULL, &JsValue::from_str(&line));
        }
    })
}

/// A URL for messages: `data:` URIs can be megabytes long.
fn shown(url: &str) -> String {
    if url.len() > 96 {
        let cut = (0..=64)
            .rev()
            .find(|&i| url.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}…", &url[..cut])
    } else {
        url.to_owned()
    }
}

/// An input image's bytes, from any URL `fetch` reads (`http(s):`, `data:`, `blob:`).
async fn fetch_input(url: &str, field: &str) -> Result<Vec<u8>, Failure> {
    let bytes = fetch_bytes(url).await.map_err(|e| {
        let message = e.to_string().replace(url, &shown(url));
        Failure::field(field, format!("could not fetch {}: {message}", shown(url)))
    })?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(too_big(field));
    }
    Ok(bytes)
}

fn set(obj: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

fn outcome_js(output: &Value, files: Vec<EncodedImage>) -> Result<JsValue, Failure> {
    let out = Object::new();
    let text = serde_json::to_string(output).map_err(|e| Failure::Internal(e.to_string()))?;
    set(&out, "output", &JsValue::from_str(&text));
    let list = Array::new();
    for file in files {
        let f = Object::new();
        set(&f, "bytes", &Uint8Array::from(file.bytes.as_slice()).into());
        set(&f, "content_type", &JsValue::from_str(file.content_type));
        set(&f, "file_name", &JsValue::from_str(&file.file_name));
        list.push(&f);
    }
    set(&out, "files", &list);
    Ok(out.into())
}

fn failure_js(f: &Failure) -> JsValue {
    let out = Object::new();
    set(&out, "status", &JsValue::from_f64(f64::from(f.status())));
    set(&out, "body", &JsValue::from_str(&f.body().to_string()));
    set(&out, "message", &JsValue::from_str(&f.message()));
    if let Some(kind) = f.error_type() {
        set(&out, "error_type", &JsValue::from_str(kind));
    }
    if f.is_device_lost() {
        set(&out, "fatal", &JsValue::TRUE);
    }
    out.into()
}
