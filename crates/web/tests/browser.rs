//! Runs in headless Chromium (`wasm-bindgen-test-runner`, see `webdriver.json`): proves the wasm
//! build works in a real browser and that the engine's WebGPU device opens there.
#![cfg(target_arch = "wasm32")]

use fresco_protocol::urls;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn protocol_urls_are_built_in_the_browser_as_natively() {
    assert_eq!(
        urls::queue_status_url("fal-ai/flux/dev", "rid", true).unwrap(),
        "https://queue.fal.run/fal-ai/flux/requests/rid/status?logs=1"
    );
    let parsed = fresco_web::parse_endpoint_id("workflows/me/wf/sub")
        .map_err(JsValue::from)
        .unwrap();
    let get = |k: &str| {
        js_sys::Reflect::get(&parsed, &JsValue::from_str(k))
            .unwrap()
            .as_string()
    };
    assert_eq!(get("namespace").as_deref(), Some("workflows"));
    assert_eq!(get("owner").as_deref(), Some("me"));
    assert_eq!(get("alias").as_deref(), Some("wf"));
    assert_eq!(get("path").as_deref(), Some("sub"));
    assert!(fresco_web::parse_endpoint_id("lora").is_err());
}

#[cfg(feature = "webgpu")]
#[wasm_bindgen_test]
async fn the_engines_webgpu_device_opens_and_computes() {
    use burn::tensor::{Tensor, TensorData};
    let (device, limits) = fresco_diffusion::device::webgpu()
        .await
        .expect("headless Chromium with --enable-unsafe-webgpu has an adapter");
    web_sys_log(&format!("WebGPU: {limits:?}"));
    assert!(limits.buffer_limit >= 128 << 20, "{limits:?}");
    // Opened once a worker: the second ask hands out the same device.
    let (again, _) = fresco_diffusion::device::webgpu().await.unwrap();
    assert_eq!(again, device);

    let input: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 100.0).collect();
    let x = Tensor::<1>::from_data(TensorData::new(input.clone(), [1000]), &device);
    let out = (x * 3.0 + 0.25).into_data_async().await.expect("readback");
    let expected: Vec<f32> = input.iter().map(|x| 3.0 * x + 0.25).collect();
    assert_eq!(out.convert::<f32>().try_to_vec::<f32>().unwrap(), expected);
}

#[cfg(feature = "webgpu")]
fn web_sys_log(s: &str) {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("console"))
        .ok()
        .and_then(|console| {
            let log = js_sys::Reflect::get(&console, &JsValue::from_str("log")).ok()?;
            js_sys::Function::from(log)
                .call1(&console, &JsValue::from_str(s))
                .ok()
        });
}
