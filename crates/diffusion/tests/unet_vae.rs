#![cfg(not(target_arch = "wasm32"))]
//! The UNets (9-channel SD1.5- and SDXL-inpaint-like, 4-channel SD2-like) and the VAEs against
//! diffusers' own outputs on the committed tiny models, on the CPU (burn-flex) and wgpu.

mod common;

use burn::tensor::Device;
use fresco_diffusion::models::unet::{AddedConditions, UNet2DConditionModel, UNetConfig};
use fresco_diffusion::models::vae::{AutoencoderKL, VaeConfig};
use fresco_diffusion::weights::store::{Precision, Weights};

const TOL: f32 = 1e-4;

fn weights(device: &Device, model_dir: &str, component: &str) -> Weights {
    let file = common::fixture(&format!(
        "{model_dir}/{component}/diffusion_pytorch_model.safetensors"
    ));
    let label = file.display().to_string();
    let mut w = Weights::new(device, Precision::F32, label.clone());
    w.read_safetensors(std::fs::File::open(&file).unwrap(), &label)
        .unwrap();
    w
}

fn config(model_dir: &str, component: &str) -> String {
    std::fs::read_to_string(common::fixture(&format!(
        "{model_dir}/{component}/config.json"
    )))
    .unwrap()
}

fn check_unet(model_dir: &str) {
    let refs = common::references(&format!("{model_dir}/references/unet.safetensors"));
    let cfg = UNetConfig::from_json(&config(model_dir, "unet")).unwrap();
    for (name, device) in common::devices() {
        let mut w = weights(&device, model_dir, "unet");
        let unet = UNet2DConditionModel::load(&cfg, &mut w).unwrap();
        w.finish(&[]).unwrap();
        let sample = refs["sample"].tensor::<4>(&device);
        let ehs = refs["encoder_hidden_states"].tensor::<3>(&device);
        let added = refs.get("time_ids").map(|t| AddedConditions {
            text_embeds: refs["text_embeds"].tensor::<2>(&device),
            time_ids: t.values.chunks(6).map(<[f32]>::to_vec).collect(),
        });
        let timesteps = refs["timestep"].values.clone();
        let out = unet
            .forward(sample.clone(), &timesteps, &ehs, added.as_ref())
            .unwrap();
        common::assert_close(
            &format!("{model_dir} unet on {name}"),
            out,
            &refs["out"],
            TOL,
        );
        let out = unet
            .forward(sample, &[500.0], &ehs, added.as_ref())
            .unwrap();
        common::assert_close(
            &format!("{model_dir} unet (t=500) on {name}"),
            out,
            &refs["out_t500"],
            TOL,
        );
    }
}

fn check_vae(model_dir: &str) {
    let refs = common::references(&format!("{model_dir}/references/vae.safetensors"));
    let cfg = VaeConfig::from_json(&config(model_dir, "vae")).unwrap();
    for (name, device) in common::devices() {
        let mut w = weights(&device, model_dir, "vae");
        let vae = AutoencoderKL::load(cfg.clone(), &mut w).unwrap();
        w.finish(&[]).unwrap();
        let dist = vae.encode(refs["image"].tensor::<4>(&device));
        common::assert_close(
            &format!("{model_dir} vae mean on {name}"),
            dist.mean,
            &refs["latent_mean"],
            TOL,
        );
        common::assert_close(
            &format!("{model_dir} vae logvar on {name}"),
            dist.logvar,
            &refs["latent_logvar"],
            TOL,
        );
        let decoded = vae.decode(refs["latents"].tensor::<4>(&device));
        common::assert_close(
            &format!("{model_dir} vae decode on {name}"),
            decoded,
            &refs["decoded"],
            TOL,
        );
    }
}

#[test]
fn sd15_inpaint_unet_9ch_matches_diffusers() {
    check_unet("tiny-sd15-inpaint");
}

#[test]
fn sdxl_inpaint_unet_9ch_with_text_time_matches_diffusers() {
    check_unet("tiny-sdxl-inpaint");
}

#[test]
fn sd2_unet_4ch_three_blocks_linear_projection_matches_diffusers() {
    check_unet("tiny-sd2-4ch");
}

#[test]
fn vaes_match_diffusers() {
    for m in ["tiny-sd15-inpaint", "tiny-sdxl-inpaint", "tiny-sd2-4ch"] {
        check_vae(m);
    }
}
