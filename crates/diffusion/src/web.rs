//! The engine in a browser: a WebGPU device, and weights streamed from `fetch` straight into it,
//! one tensor at a time (a response body is never held whole in wasm memory).

use burn::tensor::Device;
use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::weights::WeightsError;
use crate::weights::repo::RepoLocation;
use crate::weights::safetensors::SafetensorsStream;
use crate::weights::source::RepoSource;
use crate::weights::store::{Precision, Weights};

fn js_err(what: &str, e: JsValue) -> WeightsError {
    WeightsError::Network {
        url: what.to_owned(),
        message: format!("{e:?}"),
    }
}

thread_local! {
    /// Burn registers one runtime per adapter: the device is initialised once per page (or
    /// worker) and handed out again after that.
    static WEBGPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
}

/// Burn on the browser's WebGPU adapter, initialised on the first call and shared after it.
pub async fn webgpu_device() -> Result<Device, WeightsError> {
    if let Some(device) = WEBGPU.with(|d| d.borrow().clone()) {
        return Ok(device);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| WeightsError::Config(format!("WebGPU is not available: {e}")))?;
    WEBGPU.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}

/// `fetch(url)`'s response; `None` for a 404 (the file does not exist), an error naming the URL
/// for any other status outside 2xx.
async fn fetch_found(url: &str) -> Result<Option<JsValue>, WeightsError> {
    let global = js_sys::global();
    let fetch: js_sys::Function = Reflect::get(&global, &JsValue::from_str("fetch"))
        .and_then(|f| f.dyn_into())
        .map_err(|e| js_err(url, e))?;
    let response = JsFuture::from(js_sys::Promise::from(
        fetch
            .call1(&global, &JsValue::from_str(url))
            .map_err(|e| js_err(url, e))?,
    ))
    .await
    .map_err(|e| js_err(url, e))?;
    let status = Reflect::get(&response, &JsValue::from_str("status"))
        .ok()
        .and_then(|s| s.as_f64())
        .unwrap_or(0.0);
    if status == 404.0 {
        return Ok(None);
    }
    if !(200.0..300.0).contains(&status) {
        return Err(WeightsError::Network {
            url: url.to_owned(),
            message: format!("the server answered {status}"),
        });
    }
    Ok(Some(response))
}

/// `fetch(url)`'s response, or an error naming the URL unless the status is 2xx.
async fn fetch_ok(url: &str) -> Result<JsValue, WeightsError> {
    fetch_found(url)
        .await?
        .ok_or_else(|| WeightsError::Network {
            url: url.to_owned(),
            message: "the server answered 404".into(),
        })
}

/// `fetch(url)`, then its body read chunk by chunk into `weights`.
pub async fn fetch_safetensors(url: &str, weights: &mut Weights) -> Result<(), WeightsError> {
    read_safetensors_body(url, &fetch_ok(url).await?, weights).await
}

/// A response's body read chunk by chunk into `weights`: a tensor goes to the device as soon as
/// its last byte arrives, so the file is never held whole.
async fn read_safetensors_body(
    url: &str,
    response: &JsValue,
    weights: &mut Weights,
) -> Result<(), WeightsError> {
    let body = Reflect::get(response, &JsValue::from_str("body")).map_err(|e| js_err(url, e))?;
    let get_reader: js_sys::Function = Reflect::get(&body, &JsValue::from_str("getReader"))
        .and_then(|f| f.dyn_into())
        .map_err(|e| js_err(url, e))?;
    let reader = get_reader.call0(&body).map_err(|e| js_err(url, e))?;
    let read: js_sys::Function = Reflect::get(&reader, &JsValue::from_str("read"))
        .and_then(|f| f.dyn_into())
        .map_err(|e| js_err(url, e))?;
    let mut stream = SafetensorsStream::new(url);
    loop {
        let chunk = JsFuture::from(js_sys::Promise::from(
            read.call0(&reader).map_err(|e| js_err(url, e))?,
        ))
        .await
        .map_err(|e| js_err(url, e))?;
        if Reflect::get(&chunk, &JsValue::from_str("done"))
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true)
        {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &JsValue::from_str("value"))
            .and_then(|v| v.dyn_into())
            .map_err(|e| js_err(url, e))?;
        let bytes = value.to_vec();
        stream.feed(&bytes, &mut |t| weights.insert(t, url))?;
    }
    stream.finish()
}

/// A diffusers repository at a base URL, read with `fetch`: `{base}/{path}` — a Hugging Face
/// `https://huggingface.co/{id}/resolve/{revision}` or any static server with that layout.
pub struct UrlRepo {
    base: String,
}

impl UrlRepo {
    pub fn new(base: &str) -> Self {
        UrlRepo {
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The repository a `model_name` names, as the server reads it but over `fetch`: a Hugging
    /// Face id `owner/name[@revision]` resolves at `{hub_url}/{id}/resolve/{revision}` (the hub's
    /// layout, https://huggingface.co or any server laid out like it), an http(s) URL is the
    /// repository's base. A directory is an error: a page cannot read the server's disk.
    pub fn for_model(model_name: &str, hub_url: &str) -> Result<Self, WeightsError> {
        match RepoLocation::parse(model_name)? {
            RepoLocation::Hub { id, revision } => Ok(UrlRepo::new(&format!(
                "{}/{id}/resolve/{revision}",
                hub_url.trim_end_matches('/')
            ))),
            RepoLocation::Url(base) => Ok(UrlRepo::new(&base)),
            RepoLocation::Dir(dir) => Err(WeightsError::Config(format!(
                "model {model_name:?} is a directory ({}), which a browser cannot read: use a Hugging Face id or the URL of the model's folder",
                dir.display()
            ))),
        }
    }

    /// The base every file is read under.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }
}

impl RepoSource for UrlRepo {
    async fn text(&self, rel: &str) -> Result<Option<String>, WeightsError> {
        let url = self.url(rel);
        match fetch_found(&url).await? {
            Some(response) => String::from_utf8(body_bytes(&url, &response).await?)
                .map(Some)
                .map_err(|e| WeightsError::corrupt(&url, format!("not UTF-8: {e}"))),
            None => Ok(None),
        }
    }

    async fn read_safetensors(
        &self,
        rel: &str,
        weights: &mut Weights,
    ) -> Result<bool, WeightsError> {
        let url = self.url(rel);
        match fetch_found(&url).await? {
            Some(response) => read_safetensors_body(&url, &response, weights)
                .await
                .map(|()| true),
            None => Ok(false),
        }
    }
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

/// A whole small file (configs, reference tensors).
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, WeightsError> {
    body_bytes(url, &fetch_ok(url).await?).await
}

/// A response's whole body.
async fn body_bytes(url: &str, response: &JsValue) -> Result<Vec<u8>, WeightsError> {
    let buffer: js_sys::Function = Reflect::get(response, &JsValue::from_str("arrayBuffer"))
        .and_then(|f| f.dyn_into())
        .map_err(|e| js_err(url, e))?;
    let value = JsFuture::from(js_sys::Promise::from(
        buffer.call0(response).map_err(|e| js_err(url, e))?,
    ))
    .await
    .map_err(|e| js_err(url, e))?;
    Ok(Uint8Array::new(&value).to_vec())
}

/// A text file (configs).
pub async fn fetch_text(url: &str) -> Result<String, WeightsError> {
    String::from_utf8(fetch_bytes(url).await?)
        .map_err(|e| WeightsError::corrupt(url, format!("not UTF-8: {e}")))
}
