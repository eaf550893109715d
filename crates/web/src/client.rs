//! The client's rules, for the module's JavaScript driver (`js/index.js`): which URL, which retry,
//! which delay, which events — every decision of `@fal-ai/client` 1.10.1 that
//! `fresco-protocol` already makes for the server, exported as plain synchronous functions.
//!
//! The I/O (fetch, timers, `AbortSignal`, response streams, user callbacks) stays in JavaScript:
//! driving it from Rust needs `wasm-bindgen-futures`, whose executor and a single retrying fetch
//! measured 14.5 KB gzipped on their own, two thirds of the whole budget (README, "The client's
//! size"). None of these names is part of the package's API; `index.js` re-exports what is.

use fresco_protocol::retry::{Operation, RETRYABLE_NETWORK_CODES, RetryOptions};
use fresco_protocol::sse::SseParser;
use fresco_protocol::{storage, urls};
use wasm_bindgen::prelude::*;

fn invalid_app_id(e: fresco_protocol::InvalidAppId) -> JsError {
    JsError::new(&e.message())
}

fn invalid_url(e: urls::InvalidUrl) -> JsError {
    JsError::new(&e.message())
}

/// `buildUrl(id, {path, subdomain})` with the query already merged and stringified by the caller
/// (`params` is `[key, value, key, value, …]`, in order).
#[wasm_bindgen(js_name = buildUrl)]
pub fn build_url(
    id: &str,
    path: Option<String>,
    subdomain: Option<String>,
    params: Vec<String>,
) -> Result<String, JsError> {
    let mut pairs = Vec::with_capacity(params.len() / 2);
    let mut items = params.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        pairs.push((k, v));
    }
    urls::url_with_params(id, path.as_deref(), subdomain.as_deref(), &pairs).map_err(invalid_app_id)
}

/// The queue's per-request URLs: `suffix` is `""` (result), `"/status"`, `"/status/stream"` or
/// `"/cancel"`; `logs` adds `?logs=0|1`.
#[wasm_bindgen(js_name = queueUrl)]
pub fn queue_url(
    id: &str,
    request_id: &str,
    suffix: &str,
    logs: Option<bool>,
) -> Result<String, JsError> {
    urls::queue_request_url(id, request_id, suffix, logs).map_err(invalid_app_id)
}

/// `resolveEndpointPath(app, path, defaultPath)`.
#[wasm_bindgen(js_name = resolveEndpointPath)]
pub fn resolve_endpoint_path(
    app: &str,
    path: Option<String>,
    default_path: &str,
) -> Option<String> {
    urls::resolve_endpoint_path(app, path.as_deref(), default_path)
}

/// `https://rest.fal.ai/storage/upload/initiate[-multipart]?storage_type=fal-cdn-v3`.
#[wasm_bindgen(js_name = storageInitiateUrl)]
pub fn storage_initiate_url(multipart: bool) -> String {
    urls::storage_initiate_url(multipart)
}

/// Where multipart part `part` (1-based) goes, derived from the initiate's `upload_url`; part 0
/// is where the upload is completed.
#[wasm_bindgen(js_name = multipartUrl)]
pub fn multipart_url(upload_url: &str, part: u32) -> Result<String, JsError> {
    match part {
        0 => urls::multipart_complete_url(upload_url),
        n => urls::multipart_part_url(upload_url, n),
    }
    .map_err(invalid_url)
}

/// `https://rest.fal.ai/tokens/`.
#[wasm_bindgen(js_name = tokenUrl)]
pub fn token_url() -> String {
    urls::token_url()
}

/// How a file of `size` bytes is uploaded: 0 for one `PUT`, otherwise its number of parts.
#[wasm_bindgen(js_name = uploadParts)]
pub fn upload_parts(size: f64) -> u32 {
    let size = size.max(0.0) as u64;
    if size > storage::MULTIPART_THRESHOLD {
        storage::multipart_part_count(size) as u32
    } else {
        0
    }
}

/// The size of every multipart part but the last, in bytes.
#[wasm_bindgen(js_name = uploadPartSize)]
pub fn upload_part_size() -> f64 {
    storage::MULTIPART_CHUNK_SIZE as f64
}

/// The name of an upload whose `File` has none (`{now}.{subtype}`).
#[wasm_bindgen(js_name = defaultFileName)]
pub fn default_file_name(content_type: &str, now_ms: f64) -> Result<String, JsError> {
    storage::default_file_name(content_type, now_ms.max(0.0) as u64).ok_or_else(|| {
        JsError::new(
            &[
                "cannot name an upload of content type \"",
                content_type,
                "\": it has no '/'",
            ]
            .concat(),
        )
    })
}

/// A `StorageSettings.expiresIn` name in seconds (`undefined` for `never`).
#[wasm_bindgen(js_name = expirationSeconds)]
pub fn expiration_seconds(name: &str) -> Result<Option<f64>, JsError> {
    match storage::expiration_seconds(name) {
        Some(seconds) => Ok(seconds.map(|s| s as f64)),
        None => Err(JsError::new(
            &[
                "unknown expiresIn \"",
                name,
                "\": use never, immediate, 1h, 1d, 7d, 30d, 1y or a number of seconds",
            ]
            .concat(),
        )),
    }
}

/// Whether a network error `code` (Node's, undici's) anywhere in an error's cause chain makes it
/// worth retrying.
#[wasm_bindgen(js_name = isRetryableNetworkCode)]
pub fn is_retryable_network_code(code: &str) -> bool {
    RETRYABLE_NETWORK_CODES.contains(&code)
}

/// A client's retry options (`DEFAULT_RETRY_OPTIONS` merged with `config.retry`) and the
/// per-operation settings derived from them.
#[wasm_bindgen]
pub struct RetryPolicy(RetryOptions);

#[wasm_bindgen]
impl RetryPolicy {
    /// Absent fields keep their defaults.
    #[wasm_bindgen(constructor)]
    pub fn new(
        max_retries: Option<u32>,
        base_delay: Option<f64>,
        max_delay: Option<f64>,
        backoff_multiplier: Option<f64>,
        retryable_status_codes: Option<Vec<u16>>,
        enable_jitter: Option<bool>,
    ) -> RetryPolicy {
        let d = RetryOptions::default();
        RetryPolicy(RetryOptions {
            max_retries: max_retries.unwrap_or(d.max_retries),
            base_delay: base_delay.unwrap_or(d.base_delay),
            max_delay: max_delay.unwrap_or(d.max_delay),
            backoff_multiplier: backoff_multiplier.unwrap_or(d.backoff_multiplier),
            retryable_status_codes: retryable_status_codes.unwrap_or(d.retryable_status_codes),
            enable_jitter: enable_jitter.unwrap_or(d.enable_jitter),
        })
    }

    /// The settings of one operation: `run`, `submit`, `result`, `status`, anything else as
    /// configured.
    #[wasm_bindgen(js_name = forOperation)]
    pub fn for_operation(&self, operation: &str) -> RetryPolicy {
        let op = match operation {
            "run" => Operation::Run,
            "submit" => Operation::Submit,
            "result" => Operation::Result,
            "status" => Operation::Status,
            _ => Operation::Other,
        };
        RetryPolicy(self.0.for_operation(op))
    }

    #[wasm_bindgen(getter, js_name = maxRetries)]
    pub fn max_retries(&self) -> u32 {
        self.0.max_retries
    }

    /// Whether an HTTP error with this status (and `x-fal-request-timeout-type`) is retried.
    #[wasm_bindgen(js_name = retriesStatus)]
    pub fn retries_status(&self, status: u16, timeout_type: Option<String>) -> bool {
        self.0.is_retryable_status(status, timeout_type.as_deref())
    }

    /// The delay before retry `attempt` (0-based) in ms; `unit` is a uniform sample in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> f64 {
        self.0.backoff_delay(attempt, unit)
    }
}

/// Server-sent events from a response body's chunks: the `data` of each complete event.
#[wasm_bindgen]
#[derive(Default)]
pub struct SseDecoder(SseParser);

#[wasm_bindgen]
impl SseDecoder {
    #[wasm_bindgen(constructor)]
    pub fn new() -> SseDecoder {
        SseDecoder::default()
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.0.feed(chunk).into_iter().map(|e| e.data).collect()
    }
}
