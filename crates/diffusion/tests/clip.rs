#![cfg(not(target_arch = "wasm32"))]
//! The CLIP text encoders against transformers' own outputs on the committed tiny models:
//! CLIP-L-like (quick_gelu, pooled output) and bigG-like (gelu, projection), on the CPU (burn-flex) and wgpu.

mod common;

use fresco_diffusion::models::clip::{ClipTextConfig, ClipTextModel, IGNORABLE};
use fresco_diffusion::weights::store::{Precision, Weights};

const TOL: f32 = 1e-4;

fn check(model_dir: &str, component: &str) {
    let refs = common::references(&format!("{model_dir}/references/{component}.safetensors"));
    let ids = refs["input_ids"].int_rows();
    let config = ClipTextConfig::from_json(
        &std::fs::read_to_string(common::fixture(&format!(
            "{model_dir}/{component}/config.json"
        )))
        .unwrap(),
    )
    .unwrap();
    for (name, device) in common::devices() {
        let file = common::fixture(&format!("{model_dir}/{component}/model.safetensors"));
        let mut w = Weights::new(&device, Precision::F32, file.display().to_string());
        w.read_safetensors(
            std::fs::File::open(&file).unwrap(),
            &file.display().to_string(),
        )
        .unwrap();
        let model = ClipTextModel::load(config.clone(), &mut w).unwrap();
        w.finish(&IGNORABLE).unwrap();
        let out = model.forward(&ids, &device).unwrap();
        let what = |t: &str| format!("{model_dir}/{component} {t} on {name}");
        common::assert_close(
            &what("hidden_states[0]"),
            out.hidden_states[0].clone(),
            &refs["hidden_states_0"],
            TOL,
        );
        let n = out.hidden_states.len();
        common::assert_close(
            &what("hidden_states[-2]"),
            out.hidden_states[n - 2].clone(),
            &refs["penultimate_hidden_state"],
            TOL,
        );
        common::assert_close(
            &what("last_hidden_state"),
            out.last_hidden_state,
            &refs["last_hidden_state"],
            TOL,
        );
        let pooled = if config.with_projection() {
            "text_embeds"
        } else {
            "pooler_output"
        };
        common::assert_close(&what(pooled), out.pooled, &refs[pooled], TOL);
    }
}

#[test]
fn clip_l_like_text_encoder_matches_transformers() {
    check("tiny-sd15-inpaint", "text_encoder");
}

#[test]
fn bigg_like_text_encoder_with_projection_matches_transformers() {
    check("tiny-sdxl-inpaint", "text_encoder_2");
}
