#![cfg(not(target_arch = "wasm32"))]
//! Whole pipelines against diffusers: for every case of tests/fixtures/pipelines/cases.json
//! (written by make_pipeline_references.py with diffusers' own pipelines), the same model, inputs,
//! seed and scheduler must give the same latents after every step (≤ 1e-4 relative) and the same
//! images (PSNR ≥ 40 dB), on the CPU backend and on wgpu.

mod common;

use fresco_diffusion::pipeline::image::{decode, psnr};
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::pipeline::{Pipeline, Request, Task};
use fresco_diffusion::weights::hub::{HubOptions, RepoFiles};
use fresco_diffusion::weights::progress;
use fresco_diffusion::weights::repo::RepoLocation;
use fresco_diffusion::weights::store::Precision;
use serde_json::Value;

const MIN_PSNR: f64 = 40.0;
/// Per-step latents: max |ours − diffusers'| over the largest |diffusers'|, after every step.
const LATENT_TOL: f32 = 1e-4;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(common::fixture("pipelines/cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn image(rel: &str) -> image::DynamicImage {
    decode(
        &std::fs::read(common::fixture(&format!("pipelines/{rel}"))).unwrap(),
        rel,
    )
    .unwrap()
}

async fn load(model: &str, device: &burn::tensor::Device) -> Pipeline {
    let files = RepoFiles::new(
        RepoLocation::Dir(common::fixture(model)),
        HubOptions::from_env(),
        progress::quiet(),
    )
    .unwrap();
    let options = LoadOptions {
        precision: Some(Precision::F32),
        ..LoadOptions::default()
    };
    Pipeline::load(&files, device, &options, &mut |_| {})
        .await
        .unwrap()
}

fn request(case: &Value) -> Request {
    let args = &case["args"];
    let mut req = Request::new(
        args["prompt"].as_str().unwrap(),
        case["seed"].as_u64().unwrap(),
    );
    req.negative_prompt = args["negative_prompt"].as_str().map(str::to_owned);
    req.num_inference_steps = args["num_inference_steps"].as_u64().unwrap() as usize;
    req.guidance_scale = args["guidance_scale"].as_f64().unwrap() as f32;
    req.strength = args["strength"].as_f64();
    req.num_images = args["num_images_per_prompt"].as_u64().unwrap_or(1) as usize;
    req.scheduler = case["scheduler"].as_str().map(str::to_owned);
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipeline_case_paints_what_diffusers_paints() {
    let cases = cases();
    assert!(cases.len() >= 10, "the fixture lists every case");
    let mut failures = Vec::new();
    for (device_name, device) in common::devices() {
        let mut loaded: Option<(String, Pipeline)> = None;
        for case in &cases {
            let model = case["model"].as_str().unwrap();
            if loaded.as_ref().is_none_or(|(m, _)| m != model) {
                loaded = Some((model.to_owned(), load(model, &device).await));
            }
            let pipe = &loaded.as_ref().unwrap().1;
            let inputs = &case["inputs"];
            let img = image(inputs["image"].as_str().unwrap());
            let mask = inputs["mask_image"].as_str().map(image);
            let task = match &mask {
                Some(m) => Task::Inpaint {
                    image: &img,
                    mask: m,
                },
                None => Task::ImageToImage { image: &img },
            };
            let req = request(case);
            let mut steps = Vec::new();
            let mut latents: Vec<Vec<f32>> = Vec::new();
            let out = pipe
                .generate(task, &req, &mut |p, l| {
                    steps.push(p);
                    latents.push(l.clone().into_data().try_to_vec::<f32>().unwrap());
                    true
                })
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case["name"]));
            let want: Vec<String> = case["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(out.images.len(), want.len(), "{}", case["name"]);
            assert!(
                !steps.is_empty() && steps.last().unwrap().step == steps.last().unwrap().total,
                "progress reported to the last step"
            );
            // The latents after each step, against diffusers' (relative to their largest value).
            let refs =
                common::references(&format!("pipelines/{}", case["latents"].as_str().unwrap()));
            assert_eq!(latents.len(), refs.len(), "{}: steps", case["name"]);
            let mut worst = 0f32;
            for (i, got) in latents.iter().enumerate() {
                let want = &refs[&format!("step_{i}")].values;
                assert_eq!(got.len(), want.len());
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let diff = got
                    .iter()
                    .zip(want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                worst = worst.max(diff / scale);
            }
            println!(
                "{device_name} {}: latents after each of {} steps within {worst:.1e} of diffusers'",
                case["name"],
                latents.len()
            );
            if worst > LATENT_TOL {
                failures.push(format!(
                    "{device_name} {}: latents off by {worst:.1e}",
                    case["name"]
                ));
            }
            for (got, file) in out.images.iter().zip(&want) {
                let reference = image(file).to_rgb8();
                let p = psnr(got, &reference);
                println!("{device_name} {}: PSNR {p:.1} dB", case["name"]);
                if p < MIN_PSNR {
                    failures.push(format!("{device_name} {file}: {p:.1} dB"));
                    let _ =
                        got.save(std::env::temp_dir().join(format!("fresco-{device_name}-{file}")));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "below {MIN_PSNR} dB (ours saved in the temp dir): {failures:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_in_compositing_keeps_the_unmasked_pixels_exactly() {
    let device = burn::tensor::Device::flex();
    let pipe = load("tiny-sd15-inpaint", &device).await;
    let img = image("image32.png");
    let mask = image("mask32.png");
    let mut req = Request::new("a red fox sitting in fresh snow, photo", 42);
    req.num_inference_steps = 4;
    let plain = pipe
        .generate(
            Task::Inpaint {
                image: &img,
                mask: &mask,
            },
            &req,
            &mut |_, _| true,
        )
        .await
        .unwrap();
    req.mask_options.composite = true;
    req.mask_options.align = true;
    req.mask_options.align_grow = 1;
    let composited = pipe
        .generate(
            Task::Inpaint {
                image: &img,
                mask: &mask,
            },
            &req,
            &mut |_, _| true,
        )
        .await
        .unwrap();
    let original = img.to_rgb8();
    let binary = fresco_diffusion::pipeline::image::binary_mask(&mask, 32, 32);
    let (_, grown) = fresco_diffusion::pipeline::image::aligned_mask(&binary, 32, 32, 2, 1);
    let (mut kept, mut changed_by_vae) = (0, 0);
    for (i, (&m, &g)) in binary.iter().zip(&grown).enumerate() {
        let (x, y) = ((i % 32) as u32, (i / 32) as u32);
        if g < 0.5 {
            kept += 1;
            assert_eq!(
                composited.images[0].get_pixel(x, y),
                original.get_pixel(x, y),
                "({x}, {y}) is outside the mask: kept exactly"
            );
            if plain.images[0].get_pixel(x, y) != original.get_pixel(x, y) {
                changed_by_vae += 1;
            }
        }
        assert!(m <= g, "the grown mask covers the mask");
    }
    assert!(kept > 100, "a real kept region ({kept} pixels)");
    assert!(
        changed_by_vae > kept / 2,
        "without compositing the VAE round trip changes the kept region ({changed_by_vae} of {kept})"
    );
}
