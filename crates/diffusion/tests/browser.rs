//! The engine on WebGPU in headless Chromium (SwiftShader, f32): the tiny SDXL-inpaint UNet and
//! VAE, streamed over HTTP from the committed fixtures, against diffusers' reference outputs. (The
//! whole pipeline runs in a dedicated worker, as the local mode runs it: `browser_worker.rs`.)
//!
//! The fixtures are served by `fresco serve --www tests/fixtures --cors-origin '*'`; `cargo xtask
//! test` starts it and passes its URL in FRESCO_FIXTURES_URL at compile time.
#![cfg(target_arch = "wasm32")]

use std::collections::HashMap;

use burn::tensor::{Device, Tensor, TensorData};
use fresco_diffusion::device::webgpu_device;
use fresco_diffusion::models::unet::{AddedConditions, UNet2DConditionModel, UNetConfig};
use fresco_diffusion::models::vae::{AutoencoderKL, VaeConfig};
use fresco_diffusion::weights::WeightsError;
use fresco_diffusion::weights::convert::to_f32;
use fresco_diffusion::weights::fetch::{fetch_bytes, fetch_text, fetch_weights};
use fresco_diffusion::weights::safetensors::SafetensorsStream;
use fresco_diffusion::weights::store::Precision;
use fresco_diffusion::weights::url_repo::UrlRepo;
use wasm_bindgen_test::*;

mod in_browser;
use in_browser::{FIXTURES, web_log};

wasm_bindgen_test_configure!(run_in_browser);

const MODEL: &str = "tiny-sdxl-inpaint";
const TOL: f32 = 1e-4;

struct Reference {
    shape: Vec<usize>,
    values: Vec<f32>,
}

async fn references(file: &str) -> HashMap<String, Reference> {
    let bytes = fetch_bytes(&format!("{FIXTURES}/{MODEL}/references/{file}"))
        .await
        .expect("references are served");
    let mut out = HashMap::new();
    let mut s = SafetensorsStream::new(file);
    s.feed(&bytes, &mut |t| {
        out.insert(
            t.info.name.clone(),
            Reference {
                shape: t.info.shape.clone(),
                values: to_f32(&t.bytes, t.info.dtype),
            },
        );
        Ok::<_, WeightsError>(())
    })
    .unwrap();
    out
}

fn tensor<const D: usize>(r: &Reference, device: &Device) -> Tensor<D> {
    let shape: [usize; D] = r.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(r.values.clone(), shape), device)
}

async fn assert_close<const D: usize>(what: &str, got: Tensor<D>, want: &Reference) {
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let data = got.into_data_async().await.expect("readback");
    let got: Vec<f32> = data.convert::<f32>().try_to_vec().unwrap();
    let scale = want.values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want.values)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let err = diff / scale;
    web_log(&format!("{what}: relative error {err:.2e}"));
    assert!(
        got.iter().all(|v| v.is_finite()) && err <= TOL,
        "{what}: relative error {err:.3e} > {TOL:.0e}"
    );
}

#[wasm_bindgen_test]
async fn sdxl_inpaint_unet_and_vae_match_diffusers_on_webgpu() {
    let device = webgpu_device()
        .await
        .expect("WebGPU in headless Chromium with --enable-unsafe-webgpu");
    let base = format!("{FIXTURES}/{MODEL}");

    let config = UNetConfig::from_json(
        &fetch_text(&format!("{base}/unet/config.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    let mut w = fetch_weights(
        &base,
        "unet/diffusion_pytorch_model.safetensors",
        &device,
        Precision::F32,
    )
    .await
    .unwrap();
    let unet = UNet2DConditionModel::load(&config, &mut w).unwrap();
    w.finish(&[]).unwrap();
    let refs = references("unet.safetensors").await;
    let added = AddedConditions {
        text_embeds: tensor::<2>(&refs["text_embeds"], &device),
        time_ids: refs["time_ids"]
            .values
            .chunks(6)
            .map(<[f32]>::to_vec)
            .collect(),
    };
    let out = unet
        .forward(
            tensor::<4>(&refs["sample"], &device),
            &refs["timestep"].values,
            &tensor::<3>(&refs["encoder_hidden_states"], &device),
            Some(&added),
        )
        .unwrap();
    assert_close("9-channel SDXL-inpaint UNet on WebGPU", out, &refs["out"]).await;

    let config = VaeConfig::from_json(
        &fetch_text(&format!("{base}/vae/config.json"))
            .await
            .unwrap(),
    )
    .unwrap();
    let mut w = fetch_weights(
        &base,
        "vae/diffusion_pytorch_model.safetensors",
        &device,
        Precision::F32,
    )
    .await
    .unwrap();
    let vae = AutoencoderKL::load(config, &mut w).unwrap();
    w.finish(&[]).unwrap();
    let refs = references("vae.safetensors").await;
    let dist = vae.encode(tensor::<4>(&refs["image"], &device));
    assert_close("VAE encode mean on WebGPU", dist.mean, &refs["latent_mean"]).await;
    let decoded = vae.decode(tensor::<4>(&refs["latents"], &device));
    assert_close("VAE decode on WebGPU", decoded, &refs["decoded"]).await;
}

#[wasm_bindgen_test]
fn a_model_directory_is_refused_in_the_browser() {
    let err = UrlRepo::for_model("./models/sdxl", "https://huggingface.co")
        .err()
        .unwrap();
    assert!(err.to_string().contains("a browser cannot read"), "{err}");
    let url = UrlRepo::for_model("https://example.com/m/", "https://huggingface.co").unwrap();
    assert_eq!(url.base(), "https://example.com/m");
    let pinned = UrlRepo::for_model("owner/name@v2", "https://hub.test/").unwrap();
    assert_eq!(pinned.base(), "https://hub.test/owner/name/resolve/v2");
}

#[wasm_bindgen_test]
async fn a_missing_weight_file_is_a_clear_error() {
    let device = webgpu_device().await.unwrap();
    let err = fetch_weights(
        &format!("{FIXTURES}/{MODEL}"),
        "unet/nope.safetensors",
        &device,
        Precision::F32,
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("404"), "{err}");
}
