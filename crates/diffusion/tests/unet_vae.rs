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

/// Attention a block of query rows at a time (what keeps a GPU's score buffers bounded at the
/// real sizes) gives the unblocked result, with blocks that do not divide the queries, on every
/// device.
#[test]
fn blocked_attention_equals_the_whole_score_matrix() {
    use burn::tensor::{Tensor, TensorData};
    use fresco_diffusion::nn::{attention_blocked, attention_rows};

    let (b, n, m, heads, d) = (2, 37, 29, 3, 8);
    let values = |len: usize, seed: u32| -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    };
    for (name, device) in common::devices() {
        let t = |len: usize, seed: u32| {
            Tensor::<3>::from_data(
                TensorData::new(values(b * len * heads * d, seed), [b, len, heads * d]),
                &device,
            )
        };
        let (q, k, v) = (t(n, 1), t(m, 2), t(m, 3));
        let whole = attention_blocked(q.clone(), k.clone(), v.clone(), heads, false, u64::MAX);
        // 5 rows a block: 8 blocks, the last of 2 rows.
        let bound = (b * heads * 5 * m * 4) as u64;
        assert_eq!(attention_rows(b, heads, n, m, 4, bound), 5);
        let blocked = attention_blocked(q, k, v, heads, false, bound);
        let (whole, blocked): (Vec<f32>, Vec<f32>) = (
            whole.into_data().try_to_vec::<f32>().unwrap(),
            blocked.into_data().try_to_vec::<f32>().unwrap(),
        );
        let err = common::relative_error(&blocked, &whole);
        assert!(err < 1e-6, "{name}: blocked attention differs by {err}");
    }
}

/// diffusers' VAE tiling (`enable_vae_tiling`: tiles overlapping by a quarter, blended
/// linearly): our tiled encode and decode give diffusers' own tiled outputs
/// (`references/vae_tiling.safetensors`, from make_vae_tiling_references.py: the tiny
/// SDXL-inpainting VAE at 96×96 in 32-pixel tiles). Each tile normalises with its own statistics,
/// so tiled is near the whole pass, not equal: its PSNR against the untiled decode is printed and
/// must be diffusers' own.
#[test]
fn vae_tiling_gives_diffusers_tiled_outputs() {
    use fresco_diffusion::models::vae::Tiling;

    let refs = common::references("tiny-sdxl-inpaint/references/vae_tiling.safetensors");
    let cfg = VaeConfig::from_json(&config("tiny-sdxl-inpaint", "vae")).unwrap();
    let psnr = |got: &[f32], want: &[f32]| {
        let mse = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / got.len() as f64;
        // Values span [-1, 1]: a peak-to-peak of 2.
        10.0 * (4.0 / mse.max(1e-20)).log10()
    };
    for (name, device) in common::devices() {
        let mut w = weights(&device, "tiny-sdxl-inpaint", "vae");
        let vae = AutoencoderKL::load(cfg.clone(), &mut w).unwrap();
        w.finish(&[]).unwrap();
        let tiling = Tiling { tile: 32 };
        let tiled = vae.encode_tiled(refs["image"].tensor::<4>(&device), tiling);
        common::assert_close(
            &format!("tiled encode mean on {name}"),
            tiled.mean,
            &refs["tiled_mean"],
            TOL,
        );
        common::assert_close(
            &format!("tiled encode logvar on {name}"),
            tiled.logvar,
            &refs["tiled_logvar"],
            TOL,
        );
        let decoded = vae.decode_tiled(refs["latents"].tensor::<4>(&device), tiling);
        assert_eq!(decoded.dims(), [1, 3, 96, 96]);
        let values: Vec<f32> = decoded.clone().into_data().try_to_vec::<f32>().unwrap();
        common::assert_close(
            &format!("tiled decode on {name}"),
            decoded,
            &refs["tiled_decoded"],
            TOL,
        );
        let whole = &refs["decoded"].values;
        let ours = psnr(&values, whole);
        let theirs = psnr(&refs["tiled_decoded"].values, whole);
        println!(
            "{name}: tiled decode ({} tiles) {ours:.2} dB PSNR against the untiled one (diffusers' {theirs:.2} dB)",
            tiling.count(96, 96, 2)
        );
        // A random 2-block VAE in 16-latent tiles: far from the whole pass (11.3 dB), as
        // diffusers' is; a real VAE in its own 512-pixel tiles is much nearer (`bench real`).
        assert!(
            (ours - theirs).abs() < 0.05 && ours > 10.0,
            "{name}: {ours:.2} dB"
        );
    }
}

/// A feed-forward a chunk of tokens at a time (how the UNet's GEGLU stays within its bound on a
/// GPU at the real sizes) is the whole one, with chunks that do not divide the tokens.
#[test]
fn a_feed_forward_in_token_chunks_is_the_whole_one() {
    use burn::tensor::{Tensor, TensorData, activation, module::linear};
    use fresco_diffusion::nn::{feed_forward_rows, in_token_chunks};

    let (b, n, dim) = (2, 23, 16);
    for (name, device) in common::devices() {
        let t = |shape: [usize; 3], seed: usize| {
            let len = shape.iter().product::<usize>();
            let v: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 + seed) % 211) as f32 / 105.0 - 1.0)
                .collect();
            Tensor::<3>::from_data(TensorData::new(v, shape), &device)
        };
        let x = t([b, n, dim], 1);
        let weight = t([1, dim, 8 * dim], 2).reshape([dim, 8 * dim]);
        let ff = |x: Tensor<3>| {
            let h = linear(x, weight.clone(), None);
            let half = 4 * dim;
            h.clone().narrow(2, 0, half) * activation::gelu(h.narrow(2, half, half))
        };
        let whole: Vec<f32> = ff(x.clone()).into_data().try_to_vec::<f32>().unwrap();
        let chunked: Vec<f32> = in_token_chunks(x, 5, ff)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(chunked.len(), whole.len());
        assert!(
            common::relative_error(&chunked, &whole) < 1e-6,
            "{name}: chunked feed-forward differs"
        );
    }
    // SDXL at 1024², guidance's batch of 2, 640 channels over 64² tokens in f16: 80 MiB whole,
    // so 3276 tokens a chunk.
    assert_eq!(feed_forward_rows(2, 4096, 640, 2), 3276);
}
