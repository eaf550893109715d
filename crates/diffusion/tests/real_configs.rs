//! The real repositories' component configs, byte for byte (`tests/fixtures/real/<model>/`, from
//! `../shared/reference/real-models/`), parse and plan as diffusers reads them: their `null`s
//! (`"upcast_attention": null` in SDXL's UNet) are defaults, their training keys are ignored.

use fresco_diffusion::models::clip::ClipTextConfig;
use fresco_diffusion::models::unet::UNetConfig;
use fresco_diffusion::models::vae::VaeConfig;

fn config(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/real")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn sdxl_inpaintings_configs_parse_and_plan() {
    let unet = UNetConfig::from_json(&config("sdxl-inpaint/unet/config.json")).unwrap();
    assert!(!unet.upcast_attention, "null reads as diffusers' default");
    let plan = unet.plan().unwrap();
    assert_eq!(plan.in_channels, 9);
    assert_eq!(plan.channels, [320, 640, 1280]);
    assert!(plan.text_time.is_some(), "SDXL's added conditioning");
    let vae = VaeConfig::from_json(&config("sdxl-inpaint/vae/config.json")).unwrap();
    assert_eq!(vae.latent_channels, 4);
    let one = ClipTextConfig::from_json(&config("sdxl-inpaint/text_encoder/config.json")).unwrap();
    let two =
        ClipTextConfig::from_json(&config("sdxl-inpaint/text_encoder_2/config.json")).unwrap();
    assert_eq!((one.hidden_size, two.hidden_size), (768, 1280));
}

#[test]
fn sd15_inpaintings_configs_parse_and_plan() {
    let plan = UNetConfig::from_json(&config("sd15-inpaint/unet/config.json"))
        .unwrap()
        .plan()
        .unwrap();
    assert_eq!(plan.in_channels, 9);
    assert_eq!(plan.channels, [320, 640, 1280, 1280]);
    VaeConfig::from_json(&config("sd15-inpaint/vae/config.json")).unwrap();
    let clip = ClipTextConfig::from_json(&config("sd15-inpaint/text_encoder/config.json")).unwrap();
    assert_eq!(clip.hidden_size, 768);
}

#[test]
fn a_null_mid_block_is_diffusers_no_mid_block_not_the_default() {
    let mut json: serde_json::Value =
        serde_json::from_str(&config("sd15-inpaint/unet/config.json")).unwrap();
    json["mid_block_type"] = serde_json::Value::Null;
    let unet = UNetConfig::from_json(&json.to_string()).unwrap();
    assert_eq!(unet.mid_block_type, None);
    let e = unet.plan().unwrap_err().to_string();
    assert!(e.contains("mid_block_type"), "{e}");
}

#[test]
fn heads_that_do_not_divide_the_channels_are_built_as_diffusers_builds_them() {
    use burn::tensor::{Device, Tensor, TensorData};
    use fresco_diffusion::models::unet::UNet2DConditionModel;
    use fresco_diffusion::weights::store::{Precision, Weights};

    // The tiny SD1.5-inpainting UNet (16 and 32 channels) with 3 heads: 16 / 3 → heads of 5,
    // an inner width of 15; 32 / 3 → 10, 30.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-sd15-inpaint/unet/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["attention_head_dim"] = serde_json::json!(3);
    let config = UNetConfig::from_json(&json.to_string()).unwrap();
    let plan = config.plan().unwrap();
    assert_eq!(plan.heads, [3, 3]);

    let device = Device::flex();
    let mut w = Weights::synthetic(&device, Precision::F32, 7);
    let unet = UNet2DConditionModel::load(&config, &mut w).unwrap();
    let shape = |name: &str| {
        w.synthesized()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
    };
    // As diffusers' Transformer2DModel: proj_in takes the channels to the inner width
    // heads × (channels / heads), the blocks run at that width, proj_out goes back ([out, in]).
    let first_two = |name: &str| shape(name).map(|s| s[..2].to_vec());
    assert_eq!(
        first_two("down_blocks.1.attentions.0.proj_in.weight"),
        Some(vec![30, 32])
    );
    assert_eq!(
        shape("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"),
        Some(vec![30, 30])
    );
    assert_eq!(
        first_two("down_blocks.1.attentions.0.proj_out.weight"),
        Some(vec![32, 30])
    );
    let sample = Tensor::<4>::from_data(
        TensorData::new(vec![0.1f32; 9 * 8 * 8], [1, 9, 8, 8]),
        &device,
    );
    let context =
        Tensor::<3>::from_data(TensorData::new(vec![0.2f32; 4 * 32], [1, 4, 32]), &device);
    let out = unet.forward(sample, &[10.0], &context, None).unwrap();
    assert_eq!(out.dims(), [1, 4, 8, 8]);
    let values: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
}

/// The tensors a real component's file holds (`*.tensors.tsv`: name, shape, and a note for
/// buffers that are no weights), without those buffers.
fn real_tensors(name: &str) -> std::collections::BTreeMap<String, Vec<usize>> {
    config(name)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("buffer"))
        .map(|l| {
            let mut cols = l.split('\t');
            let name = cols.next().unwrap().to_owned();
            let shape: Vec<usize> = serde_json::from_str(cols.next().unwrap()).unwrap();
            (name, shape)
        })
        .collect()
}

/// The tensors our model of a component asks for, built from its real config.
fn asked(
    build: impl FnOnce(&mut fresco_diffusion::weights::store::Weights),
) -> std::collections::BTreeMap<String, Vec<usize>> {
    let mut w =
        fresco_diffusion::weights::store::Weights::shapes_only(&burn::tensor::Device::flex());
    build(&mut w);
    w.synthesized().iter().cloned().collect()
}

fn assert_same_layout(
    what: &str,
    ours: std::collections::BTreeMap<String, Vec<usize>>,
    real: std::collections::BTreeMap<String, Vec<usize>>,
) {
    let missing: Vec<_> = real
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = ours
        .keys()
        .filter(|k| !real.contains_key(*k))
        .take(5)
        .collect();
    let shapes: Vec<_> = real
        .iter()
        .filter(|(k, s)| ours.get(*k).is_some_and(|o| o != *s))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && shapes.is_empty(),
        "{what}: tensors of the real file we do not take {missing:?}; tensors we ask for that it lacks {extra:?}; shapes that differ {shapes:?}"
    );
    assert_eq!(ours.len(), real.len(), "{what}");
}

/// Every tensor of the real repositories' files, by name and shape, is one our models take,
/// and every one they take is there: the real layouts load with nothing left over or missing.
#[test]
fn our_models_take_exactly_the_real_files_tensors() {
    use fresco_diffusion::models::clip::ClipTextModel;
    use fresco_diffusion::models::unet::UNet2DConditionModel;
    use fresco_diffusion::models::vae::AutoencoderKL;

    for repo in ["sdxl-inpaint", "sd15-inpaint", "sdxl-base"] {
        let unet = UNetConfig::from_json(&config(&format!("{repo}/unet/config.json"))).unwrap();
        assert_same_layout(
            &format!("{repo} unet"),
            asked(|w| drop(UNet2DConditionModel::load(&unet, w).unwrap())),
            real_tensors(&format!("{repo}/tensors/unet.tensors.tsv")),
        );
        let vae = VaeConfig::from_json(&config(&format!("{repo}/vae/config.json"))).unwrap();
        assert_same_layout(
            &format!("{repo} vae"),
            asked(|w| drop(AutoencoderKL::load(vae, w).unwrap())),
            real_tensors(&format!("{repo}/tensors/vae.tensors.tsv")),
        );
        let encoders: &[&str] = if repo.starts_with("sdxl") {
            &["text_encoder", "text_encoder_2"]
        } else {
            &["text_encoder"]
        };
        for enc in encoders {
            let clip =
                ClipTextConfig::from_json(&config(&format!("{repo}/{enc}/config.json"))).unwrap();
            let real = real_tensors(&format!("{repo}/tensors/{enc}.tensors.tsv"));
            // The model takes its tensors under `text_model.` when the file has them there
            // (transformers 4's layout, the real files'), bare otherwise (transformers 5's); an
            // empty shapes-only store gets the bare names.
            assert!(real.contains_key("text_model.embeddings.token_embedding.weight"));
            let ours = asked(|w| drop(ClipTextModel::load(clip, w).unwrap()))
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "text_projection.weight" => (k, v),
                    _ => (format!("text_model.{k}"), v),
                })
                .collect();
            assert_same_layout(&format!("{repo} {enc}"), ours, real);
        }
    }
}

/// The memory planner on the real SDXL- and SD1.5-inpainting configs at 1024² and 2048², in f16
/// and f32, under a 1 GiB and a 256 MiB buffer limit: every plan it makes keeps every buffer
/// within the limit (the VAE going image by image, then into tiles, as needed), and what cannot
/// fit is refused naming the size and the limit.
#[test]
fn the_memory_planner_fits_the_real_models_to_a_buffer_limit_or_says_why_not() {
    use fresco_diffusion::pipeline::memory::{DeviceLimits, ModelShape, VaeSplit, plan};

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    let unet = |m: &str| {
        UNetConfig::from_json(&config(&format!("{m}/unet/config.json")))
            .unwrap()
            .plan()
            .unwrap()
    };
    let vae = |m: &str| VaeConfig::from_json(&config(&format!("{m}/vae/config.json"))).unwrap();
    let (sdxl_unet, sdxl_vae) = (unet("sdxl-inpaint"), vae("sdxl-inpaint"));
    let (sd15_unet, sd15_vae) = (unet("sd15-inpaint"), vae("sd15-inpaint"));
    let shape = |unet, vae, value: u64, weights_f16: u64| ModelShape {
        unet,
        vae,
        unet_value: value,
        upcast_attention: false,
        weights: weights_f16 / 2 * value,
    };
    // Weights in f16: the real files' sizes (UNet + text encoders + VAE).
    let sdxl_f16 = 5_135_178_560 + 246_144_867 + 1_389_382_884 + 167_335_338;
    let sd15_f16 = 1_719_154_104 + 246_144_864 + 167_335_342;

    let mut table = Vec::new();
    for (name, unet, vae, weights) in [
        ("SDXL-inpainting", &sdxl_unet, &sdxl_vae, sdxl_f16),
        ("SD1.5-inpainting", &sd15_unet, &sd15_vae, sd15_f16),
    ] {
        for value in [2u64, 4] {
            let model = shape(unet, vae, value, weights);
            for side in [1024u32, 2048] {
                for limit in [GIB, 256 * MIB] {
                    let limits = DeviceLimits {
                        buffer: Some(limit),
                        memory: None,
                    };
                    match plan(&model, side, side, 1, true, limits) {
                        Ok(p) => {
                            assert!(
                                p.largest().bytes <= limit,
                                "{name} {side}² f{}: {p}",
                                value * 8
                            );
                            table.push(format!(
                                "{name} {side}² f{} ≤{} MiB: {p}",
                                value * 8,
                                limit / MIB
                            ));
                        }
                        Err(e) => {
                            let e = e.to_string();
                            assert!(
                                e.contains(&format!("{side}×{side}"))
                                    && e.contains(&format!("{} MiB", limit / MIB)),
                                "{e}"
                            );
                            table.push(format!(
                                "{name} {side}² f{} ≤{} MiB: refused: {e}",
                                value * 8,
                                limit / MIB
                            ));
                        }
                    }
                }
            }
        }
    }
    println!("{}", table.join("\n"));

    // SDXL-inpainting at its own 1024² fits both limits in f16 and f32; its VAE decodes whole
    // under 1 GiB (256 channels × 1024² × 4 bytes is exactly 1 GiB) and in tiles under 256 MiB.
    for value in [2, 4] {
        let model = shape(&sdxl_unet, &sdxl_vae, value, sdxl_f16);
        let big = DeviceLimits {
            buffer: Some(GIB),
            memory: None,
        };
        let small = DeviceLimits {
            buffer: Some(256 * MIB),
            memory: None,
        };
        let p = plan(&model, 1024, 1024, 1, true, big).unwrap();
        assert_eq!(p.decode.split, VaeSplit::Whole, "{p}");
        let p = plan(&model, 1024, 1024, 1, true, small).unwrap();
        let VaeSplit::Tiled(t) = p.decode.split else {
            panic!("{p}")
        };
        assert!(t.tile < 1024 && t.tile % 64 == 0, "{p}");
        assert!(matches!(p.encode.split, VaeSplit::Tiled(_)), "{p}");
        // The attention scores are blocked: the whole 1024² self-attention (2 × 10 heads ×
        // 4096²) would be 1.25 GiB in f32.
        assert!(p.largest().bytes <= 256 * MIB, "{p}");
        // Four images: the decoder goes image by image under 1 GiB... and the UNet's batch of 8
        // still fits.
        let p = plan(&model, 1024, 1024, 4, true, big).unwrap();
        assert_eq!(p.decode.split, VaeSplit::OneByOne, "{p}");
    }
    // At 2048² in f32 the UNet's whole batch (guidance's two halves) outgrows 256 MiB: it runs
    // one batch row at a time; under 128 MiB even one row does not fit: refused, with the reason.
    let model = shape(&sdxl_unet, &sdxl_vae, 4, sdxl_f16);
    let limit = |mib: u64| DeviceLimits {
        buffer: Some(mib * MIB),
        memory: None,
    };
    let p = plan(&model, 2048, 2048, 1, true, limit(256)).unwrap();
    assert_eq!(p.unet_rows, 1, "{p}");
    assert!(p.unet.bytes <= 256 * MIB, "{p}");
    let e = plan(&model, 2048, 2048, 1, true, limit(128))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("2048×2048")
            && e.contains("the UNet")
            && e.contains("even one batch row at a time")
            && e.contains("128 MiB"),
        "{e}"
    );
    // A device's memory is a limit too: SDXL in f32 holds 10 GB of weights.
    let e = plan(
        &model,
        1024,
        1024,
        1,
        true,
        DeviceLimits {
            buffer: None,
            memory: Some(8 * GIB),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("8.00 GiB") && e.contains("of device memory"),
        "{e}"
    );
    // A side past what the planner's arithmetic (and any device) holds is refused, not computed.
    let e = plan(&model, 40_000, 512, 1, true, DeviceLimits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("40000×512") && e.contains("16384"), "{e}");
    // No limits, no splits.
    let p = plan(&model, 2048, 2048, 2, true, DeviceLimits::default()).unwrap();
    assert_eq!(
        (p.encode.split, p.decode.split),
        (VaeSplit::Whole, VaeSplit::Whole)
    );
}
