#![cfg(not(target_arch = "wasm32"))]
//! Prompt weighting on the real text encoders: unweighted text encodes exactly as without
//! weighting, a weight scales its tokens' embeddings relative to the rest, and long prompts become
//! several 77-token chunks (the negative prompt padded to the same length).

mod common;

use burn::tensor::{Device, Tensor};
use fresco_diffusion::pipeline::Pipeline;
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::weights::hub::{HubOptions, RepoFiles};
use fresco_diffusion::weights::progress;
use fresco_diffusion::weights::repo::RepoLocation;

async fn load(model: &str, device: &Device) -> Pipeline {
    let files = RepoFiles::new(
        RepoLocation::Dir(common::fixture(model)),
        HubOptions::from_env(),
        progress::quiet(),
    )
    .unwrap();
    Pipeline::load(&files, device, &LoadOptions::default(), &mut |_| {})
        .await
        .unwrap()
}

fn values(t: &Tensor<3>) -> Vec<f32> {
    t.clone().into_data().try_to_vec::<f32>().unwrap()
}

/// The L2 norm of token `i`'s embedding in `[1, n, d]`.
fn norm(t: &Tensor<3>, i: usize) -> f32 {
    let v = values(&t.clone().narrow(1, i, 1));
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_scale_their_tokens_and_long_prompts_are_chunked() {
    let device = Device::flex();
    for model in ["tiny-sd15-inpaint", "tiny-sdxl-inpaint"] {
        let pipe = load(model, &device).await;
        let text = &pipe.text;
        let plain = text.encode_prompt("a red fox in snow", 0, &device).unwrap();
        let weighted = text
            .encode_prompt_weighted("a red fox in snow", 0, 0, &device)
            .unwrap();
        let (p, w) = (values(&plain.embeds), values(&weighted.embeds));
        let diff = p
            .iter()
            .zip(&w)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff < 1e-5,
            "{model}: unweighted text encodes as without weighting ({diff})"
        );

        // "fox" is token 3 (bos, a, red, fox): 1.5× relative to bos, whatever the rescaling
        // (each encoder's part of the features is rescaled on its own).
        let fox = text
            .encode_prompt_weighted("a red (fox:1.5) in snow", 0, 0, &device)
            .unwrap();
        let first = text.first.model.config.hidden_size;
        let total = plain.embeds.dims()[2];
        for (start, len) in [(0, first), (first, total - first)] {
            if len == 0 {
                continue;
            }
            let part = |c: &Tensor<3>| c.clone().narrow(2, start, len);
            let ratio = |c: &Tensor<3>| norm(&part(c), 3) / norm(&part(c), 0);
            let r = ratio(&fox.embeds) / ratio(&plain.embeds);
            assert!(
                (r - 1.5).abs() < 1e-3,
                "{model}: fox weighted {r}× in features {start}.., expected 1.5×"
            );
        }

        // clip_skip past the first layer is the request's fault, and says so.
        let err = text
            .encode_prompt("a red fox", 50, &device)
            .err()
            .expect("50 layers skipped");
        assert!(
            matches!(&err, fresco_diffusion::pipeline::PipelineError::Input { field, .. } if field == "clip_skip"),
            "{err}"
        );

        // 100 words: two chunks of 77; the negative prompt gets as many.
        let long = vec!["fox"; 100].join(" ");
        let c = text.encode_prompt_weighted(&long, 0, 0, &device).unwrap();
        assert_eq!(c.embeds.dims()[1], 154, "{model}");
        let n = text
            .encode_negative_weighted(Some("blurry"), &c, &device)
            .unwrap();
        assert_eq!(n.embeds.dims(), c.embeds.dims(), "{model}");
        assert_eq!(
            c.pooled.map(|p| p.dims()),
            plain.pooled.map(|p| p.dims()),
            "{model}: pooled from the first chunk"
        );
    }
}
