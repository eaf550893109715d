//! Weights and files over `fetch` in a browser: a response's status, headers and length, its
//! body read chunk by chunk, and safetensors streamed from it tensor by tensor straight onto the
//! device (a file is never held whole in wasm memory).

use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue};

use super::WeightsError;
use super::js::{call, call_async, describe, get, get_opt, object};
use super::safetensors::{SafetensorsStream, TensorBytes};
use super::store::{Precision, Weights};
use burn::tensor::Device;

pub(super) fn network(url: &str, e: &JsValue) -> WeightsError {
    WeightsError::Network {
        url: url.to_owned(),
        message: describe(e),
    }
}

/// `fetch(url)` (with a `Range` header when given), answered whatever its status.
pub(super) async fn fetch_response(
    url: &str,
    range: Option<&str>,
) -> Result<JsValue, WeightsError> {
    let global = js_sys::global();
    let init = match range {
        Some(range) => object(&[("headers", object(&[("Range", JsValue::from_str(range))]))]),
        None => JsValue::UNDEFINED,
    };
    call_async(&global, "fetch", &[&JsValue::from_str(url), &init])
        .await
        .map_err(|e| network(url, &e))
}

pub(super) fn status(response: &JsValue) -> u16 {
    get(response, "status")
        .ok()
        .and_then(|s| s.as_f64())
        .unwrap_or(0.0) as u16
}

/// A response header, if the response has it (and CORS lets the page see it).
pub(super) fn header(response: &JsValue, name: &str) -> Option<String> {
    let headers = get_opt(response, "headers")?;
    call(&headers, "get", &[&JsValue::from_str(name)])
        .ok()?
        .as_string()
}

/// The `Content-Length` of a response, if it has one.
pub(super) fn content_length(response: &JsValue) -> Option<u64> {
    header(response, "content-length")?.trim().parse().ok()
}

/// `fetch(url)`'s response; `None` for a 404 (the file does not exist), an error naming the URL
/// for any other status outside 2xx.
pub(super) async fn fetch_found(url: &str) -> Result<Option<JsValue>, WeightsError> {
    let response = fetch_response(url, None).await?;
    match status(&response) {
        404 => Ok(None),
        200..=299 => Ok(Some(response)),
        other => Err(WeightsError::Network {
            url: url.to_owned(),
            message: format!("the server answered {other}"),
        }),
    }
}

/// `fetch(url)`'s response, or an error naming the URL unless the status is 2xx.
pub(super) async fn fetch_ok(url: &str) -> Result<JsValue, WeightsError> {
    fetch_found(url)
        .await?
        .ok_or_else(|| WeightsError::Network {
            url: url.to_owned(),
            message: "the server answered 404".into(),
        })
}

/// A response body's reader, chunk by chunk.
pub(super) struct BodyReader {
    url: String,
    reader: JsValue,
}

impl BodyReader {
    pub(super) fn new(url: &str, response: &JsValue) -> Result<Self, WeightsError> {
        let body = get(response, "body").map_err(|e| network(url, &e))?;
        let reader = call(&body, "getReader", &[]).map_err(|e| network(url, &e))?;
        Ok(BodyReader {
            url: url.to_owned(),
            reader,
        })
    }

    /// The next chunk as the `Uint8Array` the stream gave, `None` at the end.
    pub(super) async fn next_js(&mut self) -> Result<Option<JsValue>, WeightsError> {
        let chunk = call_async(&self.reader, "read", &[])
            .await
            .map_err(|e| network(&self.url, &e))?;
        if get(&chunk, "done")
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true)
        {
            return Ok(None);
        }
        get(&chunk, "value")
            .map(Some)
            .map_err(|e| network(&self.url, &e))
    }

    /// Stops the body (the rest is not wanted).
    pub(super) fn cancel(self) {
        let _ = call(&self.reader, "cancel", &[]);
    }

    /// The next chunk copied into wasm memory.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<u8>>, WeightsError> {
        Ok(self.next_js().await?.map(|v| {
            v.dyn_into::<Uint8Array>()
                .map(|a| a.to_vec())
                .unwrap_or_default()
        }))
    }
}

/// `fetch(url)`, then its body read chunk by chunk into `weights`.
pub async fn fetch_safetensors(url: &str, weights: &mut Weights) -> Result<(), WeightsError> {
    read_safetensors_body(url, &fetch_ok(url).await?, &mut |t| weights.insert(t, url)).await
}

/// A response's body read chunk by chunk, each tensor handed to `insert` as soon as its last
/// byte arrives, so the file is never held whole.
pub(super) async fn read_safetensors_body(
    url: &str,
    response: &JsValue,
    insert: &mut dyn FnMut(TensorBytes) -> Result<(), WeightsError>,
) -> Result<(), WeightsError> {
    let mut body = BodyReader::new(url, response)?;
    let mut stream = SafetensorsStream::new(url);
    while let Some(bytes) = body.next().await? {
        stream.feed(&bytes, insert)?;
    }
    stream.finish()
}

/// A component's weights from `{base}/{component}/…safetensors` on `device`.
pub async fn fetch_weights(
    base: &str,
    file: &str,
    device: &Device,
    precision: Precision,
) -> Result<Weights, WeightsError> {
    let url = format!("{}/{file}", base.trim_end_matches('/'));
    let mut w = Weights::new(device, precision, url.clone());
    fetch_safetensors(&url, &mut w).await?;
    Ok(w)
}

/// A whole small file (configs, reference tensors, input images).
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, WeightsError> {
    body_bytes(url, &fetch_ok(url).await?).await
}

/// A response's whole body.
pub(super) async fn body_bytes(url: &str, response: &JsValue) -> Result<Vec<u8>, WeightsError> {
    let buffer = call_async(response, "arrayBuffer", &[])
        .await
        .map_err(|e| network(url, &e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A text file (configs).
pub async fn fetch_text(url: &str) -> Result<String, WeightsError> {
    String::from_utf8(fetch_bytes(url).await?)
        .map_err(|e| WeightsError::corrupt(url, format!("not UTF-8: {e}")))
}
