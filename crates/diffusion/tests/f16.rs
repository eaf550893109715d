#![cfg(not(target_arch = "wasm32"))]
//! f16 on a native adapter with `shader-f16` (lavapipe in CI): weights stored and computed in
//! f16 (normalisations and the VAE's attention in f32), outputs within f16's precision of
//! diffusers' f32 references; and the engine picks f16 exactly where the adapter has it.

mod common;

use burn::tensor::{Device, DeviceKind};
use fresco_diffusion::device::preferred_precision;
use fresco_diffusion::models::clip::{ClipTextConfig, ClipTextModel, IGNORABLE};
use fresco_diffusion::models::unet::{AddedConditions, UNet2DConditionModel, UNetConfig};
use fresco_diffusion::models::vae::{AutoencoderKL, VaeConfig};
use fresco_diffusion::weights::store::{Precision, Weights};

/// f16 has an 11-bit significand (≈ 5e-4 relative per operation); through a UNet's convolutions,
/// attention and residual sums the error grows to a few 1e-3.
const F16_TOL: f32 = 2e-2;

fn load(device: &Device, rel: &str) -> Weights {
    let file = common::fixture(rel);
    let label = file.display().to_string();
    let mut w = Weights::new(device, Precision::F16, label.clone());
    w.read_safetensors(std::fs::File::open(&file).unwrap(), &label)
        .unwrap();
    w
}

fn config(rel: &str) -> String {
    std::fs::read_to_string(common::fixture(rel)).unwrap()
}

#[test]
fn precision_follows_the_adapter() {
    let gpu = Device::wgpu(DeviceKind::DefaultDevice);
    assert_eq!(
        preferred_precision(&gpu),
        Precision::F16,
        "the wgpu adapter here (lavapipe in CI) has shader-f16; without it this test is wrong, not skipped"
    );
    let cpu = Device::flex();
    assert_eq!(
        preferred_precision(&cpu),
        Precision::F32,
        "the CPU reference computes in f32"
    );
}

#[test]
fn sdxl_inpaint_components_in_f16_match_diffusers_within_f16_precision() {
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    let m = "tiny-sdxl-inpaint";

    let refs = common::references(&format!("{m}/references/text_encoder_2.safetensors"));
    let cfg =
        ClipTextConfig::from_json(&config(&format!("{m}/text_encoder_2/config.json"))).unwrap();
    let mut w = load(&device, &format!("{m}/text_encoder_2/model.safetensors"));
    let te = ClipTextModel::load(cfg, &mut w).unwrap();
    w.finish(&IGNORABLE).unwrap();
    let out = te.forward(&refs["input_ids"].int_rows(), &device).unwrap();
    assert_eq!(
        out.last_hidden_state.dtype(),
        burn::tensor::DType::F16,
        "computed in f16"
    );
    common::assert_close(
        "text encoder 2 in f16",
        out.last_hidden_state.cast(burn::tensor::FloatDType::F32),
        &refs["last_hidden_state"],
        F16_TOL,
    );
    common::assert_close(
        "text_embeds in f16",
        out.pooled.cast(burn::tensor::FloatDType::F32),
        &refs["text_embeds"],
        F16_TOL,
    );

    let refs = common::references(&format!("{m}/references/unet.safetensors"));
    let cfg = UNetConfig::from_json(&config(&format!("{m}/unet/config.json"))).unwrap();
    let mut w = load(
        &device,
        &format!("{m}/unet/diffusion_pytorch_model.safetensors"),
    );
    let unet = UNet2DConditionModel::load(&cfg, &mut w).unwrap();
    w.finish(&[]).unwrap();
    let added = AddedConditions {
        text_embeds: refs["text_embeds"].tensor::<2>(&device),
        time_ids: refs["time_ids"]
            .values
            .chunks(6)
            .map(<[f32]>::to_vec)
            .collect(),
    };
    let out = unet
        .forward(
            refs["sample"].tensor::<4>(&device),
            &refs["timestep"].values,
            &refs["encoder_hidden_states"].tensor::<3>(&device),
            Some(&added),
        )
        .unwrap();
    assert_eq!(out.dtype(), burn::tensor::DType::F16);
    common::assert_close(
        "SDXL-inpaint UNet in f16",
        out.cast(burn::tensor::FloatDType::F32),
        &refs["out"],
        F16_TOL,
    );

    let refs = common::references(&format!("{m}/references/vae.safetensors"));
    let cfg = VaeConfig::from_json(&config(&format!("{m}/vae/config.json"))).unwrap();
    let mut w = load(
        &device,
        &format!("{m}/vae/diffusion_pytorch_model.safetensors"),
    );
    let vae = AutoencoderKL::load(cfg, &mut w).unwrap();
    w.finish(&[]).unwrap();
    let dist = vae.encode(refs["image"].tensor::<4>(&device));
    common::assert_close(
        "VAE mean in f16",
        dist.mean.cast(burn::tensor::FloatDType::F32),
        &refs["latent_mean"],
        F16_TOL,
    );
    let decoded = vae.decode(refs["latents"].tensor::<4>(&device));
    common::assert_close(
        "VAE decode in f16",
        decoded.cast(burn::tensor::FloatDType::F32),
        &refs["decoded"],
        F16_TOL,
    );
}
