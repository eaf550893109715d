//! The whole inpainting pipeline on WebGPU in a dedicated Web Worker of headless Chromium
//! (SwiftShader, f32), where the local mode runs it: the tiny SDXL-inpaint model loaded by its
//! Hugging Face id from a hub on 127.0.0.1 (the fixture server, `tests/fixtures/hub`), against
//! diffusers' image. `cargo xtask test` serves the fixtures and passes their URL in
//! FRESCO_FIXTURES_URL at compile time.
#![cfg(target_arch = "wasm32")]

use std::cell::Cell;
use std::rc::Rc;

use fresco_diffusion::device::webgpu_device;
use fresco_diffusion::pipeline::image::{decode, psnr};
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::pipeline::{Pipeline, Request, Task};
use fresco_diffusion::weights::fetch::fetch_bytes;
use fresco_diffusion::weights::store::Precision;
use fresco_diffusion::weights::url_repo::UrlRepo;
use js_sys::Reflect;
use wasm_bindgen::closure::Closure;
use wasm_bindgen_test::*;

mod in_browser;
use in_browser::{FIXTURES, web_log};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// The whole SDXL inpainting pipeline in a dedicated worker, as the local mode will run it: the model
/// named by its Hugging Face id and loaded over `fetch` from a hub on 127.0.0.1
/// (`Pipeline::load` on a [`UrlRepo`]), generated on WebGPU, against diffusers' image for the same case of
/// `pipelines/cases.json` (`sdxl_inpaint_euler`: seed 1234, 10 Euler steps, guidance 7.5).
#[wasm_bindgen_test]
async fn the_whole_sdxl_inpainting_pipeline_paints_what_diffusers_paints_on_webgpu() {
    let device = webgpu_device().await.unwrap();
    let mut log = Vec::new();
    // By Hugging Face id, from a hub: tests/fixtures/hub lays the tiny model out as
    // huggingface.co does (`{id}/resolve/{revision}/…`).
    let repo = UrlRepo::for_model("fresco/tiny-sdxl-inpaint", &format!("{FIXTURES}/hub")).unwrap();
    assert_eq!(
        repo.base(),
        format!("{FIXTURES}/hub/fresco/tiny-sdxl-inpaint/resolve/main")
    );
    let pipe = Pipeline::load(
        &repo,
        &device,
        &LoadOptions {
            precision: Some(Precision::F32),
            ..LoadOptions::default()
        },
        &mut |line| log.push(line),
    )
    .await
    .expect("the tiny model loads over fetch");
    assert_eq!(
        log,
        [
            "loading the text encoder",
            "loading the second text encoder",
            "loading the UNet",
            "loading the VAE"
        ]
    );
    let png = |name: &'static str| async move {
        let bytes = fetch_bytes(&format!("{FIXTURES}/pipelines/{name}"))
            .await
            .unwrap();
        decode(&bytes, name).unwrap()
    };
    let (image, mask) = (png("image32.png").await, png("mask32.png").await);
    let mut req = Request::new("a red fox sitting in fresh snow, photo", 1234);
    req.num_inference_steps = 10;
    req.guidance_scale = 7.5;
    // A timer that ticks whenever the event loop runs: it must tick between steps (the worker
    // stays responsive during a generation, so an abort can arrive between steps).
    let ticks = Rc::new(Cell::new(0u32));
    let counter = ticks.clone();
    let tick = Closure::<dyn FnMut()>::new(move || counter.set(counter.get() + 1));
    let global = js_sys::global();
    let set_interval =
        js_sys::Function::from(Reflect::get(&global, &"setInterval".into()).unwrap());
    let timer = set_interval
        .call2(&global, tick.as_ref(), &0.into())
        .unwrap();
    let mut ticks_at_step = Vec::new();
    let mut last = None;
    let out = pipe
        .generate(
            Task::Inpaint {
                image: &image,
                mask: &mask,
            },
            &req,
            &mut |p, _| {
                ticks_at_step.push(ticks.get());
                last = Some(p);
                true
            },
        )
        .await
        .expect("the pipeline runs on WebGPU");
    let clear_interval =
        js_sys::Function::from(Reflect::get(&global, &"clearInterval".into()).unwrap());
    clear_interval.call1(&global, &timer).unwrap();
    assert!(
        ticks_at_step.windows(2).all(|w| w[1] > w[0]),
        "the event loop ran between every two steps: {ticks_at_step:?}"
    );
    // Inpainting's default strength (0.9999) leaves 9 of the 10 steps, as in diffusers.
    let last = last.expect("progress is reported");
    assert_eq!((last.step, last.total), (9, 9));
    let want = png("sdxl_inpaint_euler.0.png").await.to_rgb8();
    let got = psnr(&out.images[0], &want);
    web_log(&format!(
        "whole pipeline on WebGPU: PSNR {got:.1} dB against diffusers"
    ));
    assert!(got >= 40.0, "PSNR {got:.1} dB < 40 dB against diffusers");
}
