//! The npm module (WebAssembly). This first piece carries what the browser side needs before the
//! client and the local engine arrive: endpoint-id parsing from `fresco-protocol` (the same code
//! the server runs), and, with the `webgpu` feature, a WebGPU capability probe.
//!
//! Two builds of this crate, so that a page that only calls the API never downloads the engine:
//! the client (default features, `wasm-client` profile; `cargo xtask bench size` holds it to
//! `@fal-ai/client`'s 21 KB gzipped) and the GPU side (`webgpu`: the probe now, the local engine's
//! worker module later).
//!
//! What the budget means for the client (measured, README "The client's size"): serde_json alone
//! would cost 31 KB and the `url` crate 80 KB, so neither is linked into the client: JSON and JS
//! objects go through the browser's own `JSON` and `Reflect` (js-sys), and `fresco-protocol`
//! contributes only its serde-free rules (endpoint ids, URLs, retry policy), written once for the
//! server and the client.

#[cfg(all(target_arch = "wasm32", feature = "webgpu"))]
pub mod gpu;

use wasm_bindgen::prelude::*;

/// `parseEndpointId(id)`, as `@fal-ai/client` exports it: `{owner, alias, path?, namespace?}`.
#[wasm_bindgen(js_name = parseEndpointId)]
pub fn parse_endpoint_id(id: &str) -> Result<JsValue, JsError> {
    let parsed =
        fresco_protocol::EndpointId::parse(id).map_err(|e| JsError::new(&e.to_string()))?;
    let obj = js_sys::Object::new();
    let set =
        |k: &str, v: &str| js_sys::Reflect::set(&obj, &JsValue::from_str(k), &JsValue::from_str(v));
    set("owner", &parsed.owner).map_err(|_| JsError::new("could not build the result"))?;
    set("alias", &parsed.alias).map_err(|_| JsError::new("could not build the result"))?;
    if let Some(p) = &parsed.path {
        set("path", p).map_err(|_| JsError::new("could not build the result"))?;
    }
    if let Some(ns) = &parsed.namespace {
        set("namespace", ns).map_err(|_| JsError::new("could not build the result"))?;
    }
    Ok(obj.into())
}

/// What the browser's WebGPU adapter offers (`{name, vendor, device_type, backend, shader_f16,
/// max_buffer_size, …}`); rejects with a clear message where WebGPU is missing.
#[cfg(all(target_arch = "wasm32", feature = "webgpu"))]
#[wasm_bindgen(js_name = webgpuCapabilities)]
pub async fn webgpu_capabilities() -> Result<JsValue, JsError> {
    let gpu = gpu::Gpu::open()
        .await
        .map_err(|e| JsError::new(&e.to_string()))?;
    let json =
        serde_json::to_string(&gpu.capabilities).map_err(|e| JsError::new(&e.to_string()))?;
    js_sys::JSON::parse(&json).map_err(|_| JsError::new("could not build the result"))
}
