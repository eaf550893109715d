//! The protocol rules the client shares with fresco's server, for the module's JavaScript driver
//! (`js/`): endpoint ids, every URL the client calls, and server-sent events — the code of
//! `fresco-protocol` that the server runs, exported as plain synchronous functions.
//!
//! The rest of the client is JavaScript, for size (README, "The client's size", has the
//! measurements): driving fetch, timers and streams from Rust takes `wasm-bindgen-futures`, whose
//! executor and one retrying fetch weigh 14.5 KB gzipped, two thirds of the budget; and behaviour
//! that only the client has (retry timing, option names, upload naming) costs about twice as
//! much as wasm as it does as JavaScript. None of these names is part of the package's API.

use alloc::string::String;
use alloc::vec::Vec;
use fresco_protocol::sse::SseParser;
use fresco_protocol::urls;
use wasm_bindgen::prelude::*;

fn invalid_app_id(e: fresco_protocol::InvalidAppId) -> JsError {
    JsError::new(&e.message())
}

/// `buildUrl(id, {path, subdomain})` with the query already merged and encoded by the caller
/// (`URLSearchParams`' `toString()`, empty for none).
#[wasm_bindgen(js_name = buildUrl)]
pub fn build_url(
    id: &str,
    path: Option<String>,
    subdomain: Option<String>,
    query: &str,
) -> Result<String, JsError> {
    urls::url_with_query(id, path.as_deref(), subdomain.as_deref(), query).map_err(invalid_app_id)
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

/// `https://rest.fal.ai/tokens/`.
#[wasm_bindgen(js_name = tokenUrl)]
pub fn token_url() -> String {
    urls::token_url()
}

/// Where multipart part `part` (1-based) goes, derived from the initiate's `upload_url`; part 0
/// is where the upload is completed.
#[wasm_bindgen(js_name = multipartUrl)]
pub fn multipart_url(upload_url: &str, part: u32) -> Result<String, JsError> {
    match part {
        0 => urls::multipart_complete_url(upload_url),
        n => urls::multipart_part_url(upload_url, n),
    }
    .map_err(|e| JsError::new(&e.message()))
}

/// Server-sent events from a response body's chunks: `feed` a chunk, then take the `data` of each
/// event it completed with `next` until it returns `undefined`. (One string per call: returning
/// them as an array costs the client half a kilobyte of marshalling.)
#[wasm_bindgen]
#[derive(Default)]
pub struct SseDecoder {
    parser: SseParser,
    /// Complete events not taken yet, the oldest last.
    ready: Vec<String>,
}

#[wasm_bindgen]
impl SseDecoder {
    #[wasm_bindgen(constructor)]
    pub fn new() -> SseDecoder {
        SseDecoder::default()
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut ready: Vec<String> = self
            .parser
            .feed(chunk)
            .into_iter()
            .map(|e| e.data)
            .collect();
        ready.reverse();
        ready.append(&mut self.ready);
        self.ready = ready;
    }

    #[allow(clippy::should_implement_trait)] // exported to JavaScript, where it is the natural name
    pub fn next(&mut self) -> Option<String> {
        self.ready.pop()
    }
}
