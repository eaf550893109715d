//! `fresco inpaint` and `fresco img2img`: one generation from the command line, with the
//! `fal-ai/inpaint` defaults, download and step progress on stderr, and the seed printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use fresco_diffusion::device::{Backend, Compute, DeviceError};
use fresco_diffusion::pipeline::image::{OutputFormat, decode, encode};
use fresco_diffusion::pipeline::load::LoadOptions;
use fresco_diffusion::pipeline::{Pipeline, Request, Task};
use fresco_diffusion::rng::random_seed;
use fresco_diffusion::weights::hub::{HubOptions, RepoFiles};
use fresco_diffusion::weights::progress;
use fresco_diffusion::weights::repo::RepoLocation;
use fresco_protocol::endpoints::inpaint::{DEFAULT_GUIDANCE_SCALE, DEFAULT_NUM_INFERENCE_STEPS};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DeviceArg {
    /// The CPU: Burn's burn-flex backend with our sgemm kernels (f32).
    Cpu,
    /// wgpu: Vulkan, Metal or DX12 (f16 with --f16 where the adapter has shader-f16).
    Wgpu,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The model: a local diffusers folder, a Hugging Face id (owner/name[@revision]) or the
    /// http(s) URL of a folder in diffusers layout.
    #[arg(long)]
    model: String,
    /// The input image (PNG, JPEG or WebP).
    #[arg(long)]
    image: PathBuf,
    #[arg(long)]
    prompt: String,
    /// Without it there is no negative prompt (diffusers' None); `--negative-prompt ""` encodes
    /// the empty string (fal-ai/inpaint's default).
    #[arg(long)]
    negative_prompt: Option<String>,
    #[arg(long, default_value_t = DEFAULT_NUM_INFERENCE_STEPS as usize)]
    steps: usize,
    #[arg(long, default_value_t = DEFAULT_GUIDANCE_SCALE as f32)]
    guidance: f32,
    /// Drawn at random (and printed) when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// How much of the image is re-noised, in (0, 1]; default: diffusers' default of the pipeline
    /// (0.9999 SDXL inpainting, 1.0 SD inpainting, 0.8 image-to-image).
    #[arg(long)]
    strength: Option<f64>,
    /// One of fal's names: "Euler", "Euler (trailing timesteps)", "Euler A", "DDIM", "DPM++ 2M",
    /// "DPM++ 2M Karras", "LCM", "LCM (trailing timesteps)". Default: the model's own.
    #[arg(long)]
    scheduler: Option<String>,
    #[arg(long, default_value_t = 1)]
    num_images: usize,
    /// Output width and height (multiples of 8). Default: the model's size for inpainting
    /// (diffusers' default; the inputs are resized to it), the image's own for img2img.
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Weights and maths in f16 (wgpu adapters with shader-f16).
    #[arg(long)]
    f16: bool,
    /// The weight variant to prefer, e.g. fp16 (`*.fp16.safetensors`).
    #[arg(long)]
    variant: Option<String>,
    /// Parse `(text:1.3)`, `(text)`, `[text]` and `BREAK` in the prompts and lift the 77-token
    /// limit (fal's `prompt_weighting`).
    #[arg(long)]
    prompt_weighting: bool,
    /// Inpainting, opt-in (off = diffusers' output): paste the result over the original outside
    /// the mask, so the kept region is exactly the input.
    #[arg(long)]
    composite: bool,
    /// Inpainting, opt-in: grow the mask to whole 8-pixel latent cells plus N latent pixels
    /// (no seams where a mask edge cuts a cell).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1")]
    align_mask: Option<u32>,
    /// Inpainting with --composite: blur the compositing mask's edge by this radius (pixels).
    #[arg(long, default_value_t = 0)]
    mask_blur: u32,
    /// Where to write the image: .png, .jpg or .jpeg. With --num-images N > 1: name-0.png …
    #[arg(long)]
    out: PathBuf,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', '×'])
        .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, e.g. 1024x1024"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?}: expected WIDTHxHEIGHT"))
    };
    Ok((n(w)?, n(h)?))
}

fn output_paths(out: &Path, n: usize) -> Vec<PathBuf> {
    if n == 1 {
        return vec![out.to_path_buf()];
    }
    let stem = out
        .file_stem()
        .map_or_else(|| "out".into(), |s| s.to_string_lossy().into_owned());
    let ext = out
        .extension()
        .map_or_else(|| "png".into(), |s| s.to_string_lossy().into_owned());
    (0..n)
        .map(|i| out.with_file_name(format!("{stem}-{i}.{ext}")))
        .collect()
}

fn read_image(path: &Path, what: &str) -> anyhow::Result<image::DynamicImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode(&bytes, what).with_context(|| format!("{}", path.display()))
}

/// The device for `--device` and `--f16`.
pub fn device(device: DeviceArg, f16: bool) -> anyhow::Result<Compute> {
    let backend = match device {
        DeviceArg::Cpu => Backend::Cpu,
        DeviceArg::Wgpu => Backend::Wgpu,
    };
    fresco_diffusion::device::open(backend, f16).map_err(|e| match e {
        DeviceError::F16OnCpu => {
            anyhow::anyhow!("--f16 needs --device wgpu (the CPU backend computes in f32)")
        }
        DeviceError::NoF16 => anyhow::anyhow!("--f16: this wgpu adapter has no shader-f16"),
        e => anyhow::anyhow!("--device wgpu: {e}"),
    })
}

pub async fn run(args: GenerateArgs, mask: Option<PathBuf>) -> anyhow::Result<()> {
    let format = OutputFormat::from_path(&args.out.to_string_lossy()).with_context(|| {
        format!(
            "--out {}: the extension must be .png, .jpg or .jpeg",
            args.out.display()
        )
    })?;
    // Inputs first: a typo should not cost a model download.
    let image = read_image(&args.image, "--image")?;
    let mask = mask
        .as_deref()
        .map(|m| read_image(m, "--mask"))
        .transpose()?;
    let Compute {
        device,
        precision,
        buffer_limit,
        adapter,
    } = device(args.device, args.f16)?;
    eprintln!("device: {adapter}, {precision:?}");
    let seed = args.seed.unwrap_or_else(random_seed);

    let started = Instant::now();
    let files = RepoFiles::new(
        RepoLocation::parse(&args.model)?,
        HubOptions::from_env(),
        progress::stderr(),
    )?;
    let options = LoadOptions {
        precision: Some(precision),
        variant: args.variant.clone(),
        buffer_limit,
        ..LoadOptions::default()
    };
    let pipe = Pipeline::load(&files, &device, &options, &mut |line| eprintln!("{line}"))
        .await
        .with_context(|| format!("loading {}", args.model))?;
    eprintln!(
        "loaded {} ({}) in {:.1} s",
        args.model,
        pipe.class_name,
        started.elapsed().as_secs_f64()
    );

    let mut req = Request::new(args.prompt, seed);
    req.negative_prompt = args.negative_prompt;
    req.num_inference_steps = args.steps;
    req.guidance_scale = args.guidance;
    req.strength = args.strength;
    req.scheduler = args.scheduler;
    req.num_images = args.num_images;
    req.size = args.size;
    req.prompt_weighting = args.prompt_weighting;
    if mask.is_none() && (args.composite || args.align_mask.is_some() || args.mask_blur > 0) {
        bail!("--composite, --align-mask and --mask-blur are for inpainting (fresco inpaint)");
    }
    if args.mask_blur > 0 && !args.composite {
        bail!("--mask-blur softens the compositing edge: use it with --composite");
    }
    req.mask_options = fresco_diffusion::pipeline::image::MaskOptions {
        composite: args.composite,
        align: args.align_mask.is_some(),
        align_grow: args.align_mask.unwrap_or(0),
        blur: args.mask_blur,
    };
    let task = match &mask {
        Some(m) => Task::Inpaint {
            image: &image,
            mask: m,
        },
        None => Task::ImageToImage { image: &image },
    };
    eprintln!("memory: {}", pipe.plan_call(&task, &req)?);
    eprintln!("seed {seed}");
    let started = Instant::now();
    let mut last = Instant::now();
    let out = pipe
        .generate(task, &req, &mut |p, _| {
            let now = Instant::now();
            eprint!(
                "\rstep {}/{} ({:.2} s/step)   ",
                p.step,
                p.total,
                (now - last).as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            last = now;
            true
        })
        .await?;
    eprintln!(
        "\n{} image(s) of {}×{} in {:.1} s",
        out.images.len(),
        out.width,
        out.height,
        started.elapsed().as_secs_f64()
    );
    for (img, path) in out
        .images
        .iter()
        .zip(output_paths(&args.out, out.images.len()))
    {
        let bytes = encode(img, format)?;
        // Written whole to a temporary name, then renamed: never a half-written file.
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    println!("seed {seed}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_output_names() {
        assert_eq!(parse_size("1024x768"), Ok((1024, 768)));
        assert!(parse_size("1024").is_err());
        assert_eq!(
            output_paths(Path::new("a/out.png"), 1),
            [PathBuf::from("a/out.png")]
        );
        assert_eq!(
            output_paths(Path::new("a/out.jpg"), 2),
            [PathBuf::from("a/out-0.jpg"), PathBuf::from("a/out-1.jpg")]
        );
    }
}
