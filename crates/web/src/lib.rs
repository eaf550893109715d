//! The npm module `@fresco/client` (WebAssembly + a JavaScript driver): a mirror of
//! `@fal-ai/client` 1.10.1, and, with the `webgpu` feature, the browser side of the local engine.
//!
//! Two builds of this crate, so that a page that only calls the API never downloads the engine:
//! the client (default features, `wasm-client` profile; `cargo xtask bench size` holds it to
//! `@fal-ai/client`'s 21 KB gzipped) and the GPU side (`webgpu`: the local engine's
//! worker module, [`engine`]).
//!
//! The client is split by what each language is for. [`client`] holds the rules — URLs, retry
//! policy and backoff, multipart layout, upload names, lifecycle names, server-sent events — and
//! they are `fresco-protocol`'s, the same code the server runs. `js/` is the driver, in fal-js's
//! files (`index.js` loads the wasm and exports): the `fal` singleton and `createFalClient`,
//! `fetch` with its headers and retry loop, polling and streaming, uploads,
//! `ApiError`/`ValidationError` as real classes (`instanceof` must work
//! across the module boundary, and JavaScript owns the prototypes). It asks the wasm for every
//! decision above and does the I/O itself. Why the I/O is not in Rust too: measured (README,
//! "The client's size"), `wasm-bindgen-futures` with one retrying fetch is 14.5 KB gzipped,
//! serde_json 31 KB and the `url` crate 80 KB, against a whole budget of 21 KB. So the client
//! links neither: JSON and objects stay JavaScript's, and the rules stay synchronous.

// The client build is `no_std`: std's panic machinery formats messages (and links `core::fmt`)
// for a wasm that has nowhere to print them. Here a panic is a trap, which the JavaScript side
// sees as a `RuntimeError`.
#![cfg_attr(all(target_arch = "wasm32", not(feature = "webgpu")), no_std)]

extern crate alloc;

#[cfg(all(target_arch = "wasm32", feature = "webgpu"))]
pub mod engine;

pub mod client;

#[cfg(all(target_arch = "wasm32", not(feature = "webgpu")))]
mod allocator;

#[cfg(all(target_arch = "wasm32", not(feature = "webgpu")))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

use wasm_bindgen::prelude::*;

/// `parseEndpointId(id)`, as `@fal-ai/client` exports it: `{owner, alias, path?, namespace?}`.
#[wasm_bindgen(js_name = parseEndpointId)]
pub fn parse_endpoint_id(id: &str) -> Result<JsValue, JsError> {
    let parsed = fresco_protocol::EndpointId::parse(id).map_err(|e| JsError::new(&e.message()))?;
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
