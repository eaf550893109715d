//! The engine's benchmark programs, driven by `cargo xtask bench engine`:
//!
//! - `engine_bench unet --device cpu|wgpu [--precision f32|f16] [--sizes 32,64] [--runs 3]`:
//!   ms per forward of a mid-size UNet (SDXL-inpaint's block structure at a fifth of its width,
//!   random weights), one CFG step (batch 2) per latent size; one JSON line per size;
//! - `engine_bench write-mid --out DIR`: a whole SDXL-inpainting pipeline folder around that UNet
//!   (mid-size text encoders and VAE, the real CLIP tokenizers), random weights, so diffusers can
//!   time the same models with the same weights;
//! - `engine_bench gemm`: GFLOP/s on the UNet's linear-layer shapes of `matrixmultiply`'s sgemm
//!   alone (rows split across the pool), of our CPU `Linear` (`cpu/gemm/`) and of Burn's CPU matmul
//!   (plain, transposed right-hand side, through `linear`, batched); `tests/bench/gemm_torch.py`
//!   prints PyTorch's `F.linear` on the same shapes;
//! - `engine_bench rss --out FILE`: writes a checkpoint shaped like SDXL-inpaint's UNet (fp16,
//!   random, 5.1 GB), then streams it through the loader and reports the peak resident memory over
//!   the baseline next to the largest tensor;
//! - `engine_bench pipeline --model DIR --device cpu|wgpu [--sizes 32,64] [--steps 10]
//!   [--runs 2]`: seconds per whole inpainting (text encoding, every step, VAE encode and decode)
//!   with a diffusers model folder, at a few square sizes; one JSON line per size;
//! - `engine_bench phases --model DIR --device cpu|wgpu [--size PX] [--steps 4]`: where the
//!   time of a first inpainting goes, as `cargo xtask bench browser` measures the browser's: the
//!   model's load, the first step (text and VAE encoding, and the kernels compiled on first use),
//!   the median step after it, and the first step of a second run (kernels warm); one JSON line;
//! - `engine_bench load --device cpu|wgpu --out FILE`: that checkpoint (written by `rss`)
//!   through the real loader into a UNet on the device, in f16 where the device has it: the
//!   peak RSS over the baseline, the bytes the model itself holds, and the difference (on a CPU
//!   backend and on lavapipe the device's memory is this process's memory).

use std::io::{Read, Write};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use fresco_diffusion::models::unet::{AddedConditions, UNet2DConditionModel, UNetConfig};
use fresco_diffusion::weights::WeightsError;
use fresco_diffusion::weights::convert::to_f16;
use fresco_diffusion::weights::safetensors::{self, Dtype, SafetensorsStream};
use fresco_diffusion::weights::store::{Precision, READ_CHUNK, Weights};

/// SDXL-inpaint's UNet structure (3 levels, 1/2/10 transformer layers, head dim 64, text_time
/// conditioning) at 64/128/256 channels instead of 320/640/1280.
pub const MID_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel", "sample_size": 128, "in_channels": 9, "out_channels": 4,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  "block_out_channels": [64, 128, 256], "layers_per_block": 2, "norm_num_groups": 32,
  "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [1, 2, 4],
  "cross_attention_dim": 512, "use_linear_projection": true,
  "addition_embed_type": "text_time", "addition_time_embed_dim": 64,
  "projection_class_embeddings_input_dim": 640
}"#;

/// diffusers/stable-diffusion-xl-1.0-inpainting-0.1's UNet config (the parts that set shapes).
pub const SDXL_INPAINT_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel", "sample_size": 128, "in_channels": 9, "out_channels": 4,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "norm_num_groups": 32,
  "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
  "cross_attention_dim": 2048, "use_linear_projection": true,
  "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
  "projection_class_embeddings_input_dim": 2816
}"#;

const SEED: u64 = 0x5EED;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("unet") => unet(&args),
        Some("write-mid") => write_mid(&arg(&args, "--out").ok_or("--out DIR")?),
        Some("gemm") => gemm_bench(),
        Some("rss") => rss(&arg(&args, "--out").ok_or("--out FILE")?),
        Some("pipeline") => pipeline(&args),
        Some("phases") => phases(&args),
        Some("real") => real(&args),
        Some("load") => load(
            &arg(&args, "--device").unwrap_or_else(|| "wgpu".into()),
            &arg(&args, "--out").ok_or("--out FILE")?,
        ),
        _ => Err("usage: engine_bench real --model DIR [--variant fp16] [--device cpu|wgpu] [--precision f32|f16] [--size PX] [--steps 3] [--out PNG] [--compare PNG] | phases --model DIR --device D [--size PX] [--steps 4] | unet --device cpu|wgpu [--precision f32|f16] [--sizes 32,64] [--runs 3] | write-mid --out DIR | gemm | rss --out FILE | load --device D --out FILE | pipeline --model DIR --device D [--sizes ..] [--steps N] [--runs N]".into()),
    }
}

fn device(name: &str) -> Result<Device, Box<dyn std::error::Error>> {
    Ok(compute(name, false)?.device)
}

/// `--device` opened, in f16 when `f16`: the device, its precision, limit and adapter.
fn compute(
    name: &str,
    f16: bool,
) -> Result<fresco_diffusion::device::Compute, Box<dyn std::error::Error>> {
    use fresco_diffusion::device::{Backend, open};
    let backend = match name {
        "cpu" => Backend::Cpu,
        "wgpu" => Backend::Wgpu,
        other => return Err(format!("unknown device {other}").into()),
    };
    Ok(open(backend, f16)?)
}

/// A deterministic input of the given shape.
fn input<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let values: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn unet(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let device_name = arg(args, "--device").unwrap_or_else(|| "cpu".into());
    let device = device(&device_name)?;
    let precision = match arg(args, "--precision").as_deref() {
        Some("f16") => Precision::F16,
        _ => Precision::F32,
    };
    let sizes: Vec<usize> = arg(args, "--sizes")
        .unwrap_or_else(|| "32,64".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let runs: usize = arg(args, "--runs").map_or(Ok(3), |r| r.parse())?;
    let config = UNetConfig::from_json(MID_CONFIG)?;
    let mut w = Weights::synthetic(&device, precision, SEED);
    let unet = UNet2DConditionModel::load(&config, &mut w)?;
    let params: usize = w
        .synthesized()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    for size in sizes {
        let sample = input([2, 9, size, size], 1, &device);
        let context = input([2, 77, 512], 2, &device);
        let added = AddedConditions {
            text_embeds: input([2, 256], 3, &device),
            time_ids: vec![
                vec![
                    size as f32 * 8.0,
                    size as f32 * 8.0,
                    0.0,
                    0.0,
                    size as f32 * 8.0,
                    size as f32 * 8.0
                ];
                2
            ],
        };
        let mut times = Vec::new();
        for run in 0..=runs {
            let t = Instant::now();
            let out = unet.forward(sample.clone(), &[500.0], &context, Some(&added))?;
            // Reading back waits for the device.
            let data = out.into_data();
            std::hint::black_box(data);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            // The first run compiles kernels (and tunes them); it is reported apart.
            if run > 0 {
                times.push(ms);
            } else {
                eprintln!("{device_name} {size}x{size}: first forward (kernel compile) {ms:.0} ms");
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{{\"device\":\"{device_name}\",\"precision\":\"{}\",\"size\":{size},\"params\":{params},\"ms\":{:.1}}}",
            if precision == Precision::F16 {
                "f16"
            } else {
                "f32"
            },
            times[times.len() / 2]
        );
    }
    Ok(())
}

/// Names and shapes of tensors, in the order a model takes them.
type Layout = Vec<(String, Vec<usize>)>;

/// Names and shapes of a model's tensors, from a shapes-only build on the CPU.
fn layout(
    build: impl FnOnce(&mut Weights) -> Result<(), WeightsError>,
) -> Result<Layout, Box<dyn std::error::Error>> {
    let mut w = Weights::shapes_only(&Device::flex());
    build(&mut w)?;
    Ok(w.synthesized().to_vec())
}

fn unet_layout(config_json: &str) -> Result<Layout, Box<dyn std::error::Error>> {
    let config = UNetConfig::from_json(config_json)?;
    layout(|w| UNet2DConditionModel::load(&config, w).map(drop))
}

/// The mid-size SDXL-inpainting pipeline's text encoders: CLIP's structure (BPE vocabulary, 77
/// positions) at 256 wide and 6 layers deep, so their penultimate states concatenate to the
/// mid UNet's 512-wide context and the second one's 256-wide projection fills its
/// `projection_class_embeddings_input_dim` (6 × 64 time ids + 256).
const MID_TEXT_ENCODER_CONFIG: &str = r#"{
  "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
  "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4, "num_hidden_layers": 6,
  "max_position_embeddings": 77, "layer_norm_eps": 1e-05, "vocab_size": 49408,
  "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1, "projection_dim": 256
}"#;
const MID_TEXT_ENCODER_2_CONFIG: &str = r#"{
  "architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model",
  "hidden_act": "gelu", "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4,
  "num_hidden_layers": 6, "max_position_embeddings": 77, "layer_norm_eps": 1e-05,
  "vocab_size": 49408, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
  "projection_dim": 256
}"#;
/// SD's VAE structure (four levels, so 8× down, two resnets per level, mid attention) at a
/// quarter of its width.
const MID_VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [32, 64, 128, 128],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "force_upcast": true, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
  "norm_num_groups": 32, "out_channels": 3, "sample_size": 1024, "scaling_factor": 0.13025
}"#;

/// Writes one component: its config.json and its random weights as one f32 safetensors file.
fn write_component(
    dir: &std::path::Path,
    config_json: &str,
    file: &str,
    names: &Layout,
) -> Result<usize, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), config_json)?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    Weights::synthetic_values(SEED, names, |name, shape, values| {
        tensors.push((
            name.to_owned(),
            shape.to_vec(),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    });
    let list: Vec<(&str, Dtype, &[usize], &[u8])> = tensors
        .iter()
        .map(|(n, s, b)| (n.as_str(), Dtype::F32, s.as_slice(), b.as_slice()))
        .collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(file))?);
    safetensors::write(&list, &mut f)?;
    f.flush()?;
    Ok(list.len())
}

/// A whole SDXL-inpainting pipeline folder around the mid-size UNet, random weights, that both
/// `Pipeline::load` and diffusers' `from_pretrained` read: text encoders and VAE as above, the
/// tokenizers, scheduler and model_index.json of the tiny SDXL-inpaint fixture (the real CLIP
/// vocabulary).
fn write_mid(out: &str) -> Result<(), Box<dyn std::error::Error>> {
    use fresco_diffusion::models::clip::{ClipTextConfig, ClipTextModel};
    use fresco_diffusion::models::vae::{AutoencoderKL, VaeConfig};

    let out = std::path::Path::new(out);
    let mut tensors = write_component(
        &out.join("unet"),
        MID_CONFIG,
        "diffusion_pytorch_model.safetensors",
        &unet_layout(MID_CONFIG)?,
    )?;
    let vae = VaeConfig::from_json(MID_VAE_CONFIG)?;
    tensors += write_component(
        &out.join("vae"),
        MID_VAE_CONFIG,
        "diffusion_pytorch_model.safetensors",
        &layout(|w| AutoencoderKL::load(vae, w).map(drop))?,
    )?;
    for (name, json) in [
        ("text_encoder", MID_TEXT_ENCODER_CONFIG),
        ("text_encoder_2", MID_TEXT_ENCODER_2_CONFIG),
    ] {
        let config = ClipTextConfig::from_json(json)?;
        let projection = config.with_projection();
        let mut names = layout(|w| ClipTextModel::load(config, w).map(drop))?;
        // transformers saves CLIPTextModelWithProjection's encoder under `text_model.`.
        if projection {
            for (n, _) in &mut names {
                if !n.starts_with("text_projection") {
                    *n = format!("text_model.{n}");
                }
            }
        }
        tensors += write_component(&out.join(name), json, "model.safetensors", &names)?;
    }
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-sdxl-inpaint");
    for part in ["tokenizer", "tokenizer_2", "scheduler"] {
        std::fs::create_dir_all(out.join(part))?;
        for entry in std::fs::read_dir(tiny.join(part))? {
            let entry = entry?;
            std::fs::copy(entry.path(), out.join(part).join(entry.file_name()))?;
        }
    }
    std::fs::copy(tiny.join("model_index.json"), out.join("model_index.json"))?;
    println!(
        "{{\"written\":\"{}\",\"tensors\":{tensors}}}",
        out.display()
    );
    Ok(())
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss(out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let names = unet_layout(SDXL_INPAINT_CONFIG)?;
    let largest = names
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() * 2)
        .max()
        .unwrap_or(0);
    let path = std::path::Path::new(out);
    let expected: usize = names
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() * 2)
        .sum();
    if std::fs::metadata(path)
        .map(|m| (m.len() as usize) < expected)
        .unwrap_or(true)
    {
        // Header first, then each tensor's random f16 bytes, written as generated.
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, shape) in &names {
            let end = offset + shape.iter().product::<usize>() * 2;
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut json = serde_json::to_vec(&header)?;
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
        f.write_all(&(json.len() as u64).to_le_bytes())?;
        f.write_all(&json)?;
        let block: Vec<u8> = (0..1 << 20)
            .flat_map(|i: u32| {
                half::f16::from_f32((i.wrapping_mul(2654435761) % 2000) as f32 / 1000.0 - 1.0)
                    .to_le_bytes()
            })
            .collect();
        let mut left = offset;
        while left > 0 {
            let n = left.min(block.len());
            f.write_all(&block[..n])?;
            left -= n;
        }
        f.flush()?;
    }
    let file_bytes = std::fs::metadata(path)?.len();

    // Reset the peak-RSS counter, then stream the checkpoint as the loader does: each tensor
    // converted to f16 and handed over before the next is read.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let baseline = status_kib("VmRSS:");
    let started = Instant::now();
    let mut file = std::fs::File::open(path)?;
    let mut stream = SafetensorsStream::new(out);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut count = 0usize;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.feed(&buf[..n], &mut |t| {
            // As `Weights::insert`: f16 bytes are taken as they are, other types converted.
            if t.info.dtype == Dtype::F16 {
                std::hint::black_box(&t.bytes);
            } else {
                std::hint::black_box(to_f16(&t.bytes, t.info.dtype));
            }
            count += 1;
            Ok::<_, WeightsError>(())
        })?;
    }
    stream.finish()?;
    let secs = started.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    println!(
        "{{\"file_bytes\":{file_bytes},\"tensors\":{count},\"largest_tensor_bytes\":{largest},\"baseline_rss_kib\":{baseline},\"peak_over_baseline_kib\":{},\"seconds\":{secs:.1}}}",
        peak.saturating_sub(baseline)
    );
    Ok(())
}

fn load(device_name: &str, out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let device = device(device_name)?;
    let precision = fresco_diffusion::device::preferred_precision(&device);
    let config = UNetConfig::from_json(SDXL_INPAINT_CONFIG)?;
    // Warm the device up (adapter, first buffers) before the baseline.
    let warm: Tensor<1> = Tensor::from_data(TensorData::new(vec![1f32; 1024], [1024]), &device);
    std::hint::black_box(warm.into_data());
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let baseline = status_kib("VmRSS:");
    let started = Instant::now();
    let mut w = Weights::new(&device, precision, out);
    w.read_safetensors(std::fs::File::open(out)?, out)?;
    let unet = UNet2DConditionModel::load(&config, &mut w)?;
    w.finish(&[])?;
    let secs = started.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    // The weights' own bytes: the file's tensor data (f16), doubled when stored in f32. (Not
    // from a shapes-only build: that materialises a full-size model on the CPU.)
    let mut head = [0u8; 8];
    std::fs::File::open(out)?.read_exact(&mut head)?;
    let data_bytes = std::fs::metadata(out)?.len() as usize - 8 - u64::from_le_bytes(head) as usize;
    let model_bytes = if precision == Precision::F16 {
        data_bytes
    } else {
        data_bytes * 2
    };
    std::hint::black_box(&unet);
    println!(
        "{{\"device\":\"{device_name}\",\"precision\":\"{}\",\"model_bytes\":{model_bytes},\"peak_over_baseline_kib\":{},\"seconds\":{secs:.1}}}",
        if precision == Precision::F16 {
            "f16"
        } else {
            "f32"
        },
        peak.saturating_sub(baseline)
    );
    Ok(())
}

/// The inpainting inputs every pipeline benchmark uses (tests/fixtures/pipelines).
const BENCH_PROMPT: &str = "a red fox sitting in fresh snow, photo";

fn pipeline(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use fresco_diffusion::pipeline::{Request, Task};

    let model = arg(args, "--model").ok_or("--model DIR")?;
    let device_name = arg(args, "--device").unwrap_or_else(|| "cpu".into());
    let device = device(&device_name)?;
    let sizes: Vec<u32> = arg(args, "--sizes")
        .unwrap_or_else(|| "32,64".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let steps: usize = arg(args, "--steps").map_or(Ok(10), |r| r.parse())?;
    let runs: usize = arg(args, "--runs").map_or(Ok(2), |r| r.parse())?;
    let (image, mask) = bench_inputs()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let pipe = load_f32(&model, &device).await?;
        for size in sizes {
            let mut req = Request::new(BENCH_PROMPT, 0);
            req.num_inference_steps = steps;
            req.size = Some((size, size));
            let mut times = Vec::new();
            for run in 0..=runs {
                let t = Instant::now();
                let task = Task::Inpaint {
                    image: &image,
                    mask: &mask,
                };
                // When each step ended: what comes before the first step (text encoding, VAE
                // encoding) and after the last (VAE decoding) is told apart from the steps.
                let mut marks = Vec::with_capacity(steps);
                let out = pipe
                    .generate(task, &req, &mut |_, _| {
                        marks.push(t.elapsed().as_secs_f64());
                        true
                    })
                    .await?;
                std::hint::black_box(out);
                let secs = t.elapsed().as_secs_f64();
                // Two marks at least: with one step, its time cannot be told from what precedes it.
                if let [first, .., last] = marks[..] {
                    let step = (last - first) / (marks.len() - 1) as f64;
                    eprintln!(
                        "{device_name} {size}px run {run}: {secs:.2} s = before the steps {:.2} s + \
                         {} steps of {step:.2} s + after the steps {:.2} s",
                        first - step,
                        marks.len(),
                        secs - last
                    );
                }
                if run > 0 {
                    times.push(secs);
                } else {
                    eprintln!("{device_name} {size}px: first run (kernel compile) {secs:.2} s");
                }
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{{\"device\":\"{device_name}\",\"size\":{size},\"steps\":{steps},\"seconds\":{:.3}}}",
                times[times.len() / 2]
            );
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// The CPU matmul on the shapes the mid-size UNet's linear layers run (tokens × width).
fn gemm_bench() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex();
    for (m, k, n) in [
        (512usize, 256usize, 256usize),
        (512, 256, 2048),
        (512, 1024, 256),
        (2048, 128, 128),
        (2048, 128, 1024),
        (2048, 2048, 2048),
        // SDXL at 1024², guidance's batch of 2: level 2's projections (1024 tokens, 1280
        // features), its GEGLU up and down, and level 1's projections (4096 tokens, 640).
        (2048, 1280, 1280),
        (2048, 1280, 10240),
        (2048, 5120, 1280),
        (8192, 640, 640),
    ] {
        let a = input([m, k], 1, &device);
        let b = input([k, n], 2, &device);
        let wt = input([n, k], 3, &device);
        let cpu = fresco_diffusion::cpu::CpuLinear::from_tensors(wt.clone(), None)
            .map_err(|e| e.to_string())?;
        // matrixmultiply on the layer's operands as plain slices (x row-major, the weight `[n, k]`
        // read as a column-major k × n), rows split across rayon's pool as our product splits
        // them; our layer below includes copying its (shared) input and making its output.
        let (a_raw, w_raw) = (
            a.clone()
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| format!("{e:?}"))?,
            wt.clone()
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| format!("{e:?}"))?,
        );
        let mut c_raw = vec![0f32; m * n];
        let raw = |c: &mut [f32]| {
            use rayon::prelude::*;
            let per = m.div_ceil(rayon::current_num_threads().max(1));
            c.par_chunks_mut(per * n)
                .zip(a_raw.par_chunks(per * k))
                .for_each(|(c, a)| {
                    let rows = a.len() / k;
                    // SAFETY: a is rows × k row-major, w_raw is n × k row-major (read as k × n
                    // with strides 1, k), c is rows × n row-major; c aliases neither.
                    unsafe {
                        matrixmultiply::sgemm(
                            rows,
                            k,
                            n,
                            1.0,
                            a.as_ptr(),
                            k as isize,
                            1,
                            w_raw.as_ptr(),
                            1,
                            k as isize,
                            0.0,
                            c.as_mut_ptr(),
                            n as isize,
                            1,
                        )
                    }
                });
        };
        raw(&mut c_raw);
        println!(
            "{m} {k} {n} matrixmultiply {:.1} GFLOP/s",
            gflops(m, k, n, || raw(&mut c_raw))
        );
        for (name, f) in [
            (
                "our linear",
                Box::new(|| cpu.forward(a.clone())) as Box<dyn Fn() -> Tensor<2>>,
            ),
            ("mm", Box::new(|| a.clone().matmul(b.clone()))),
            (
                "mm_t",
                Box::new(|| a.clone().matmul(wt.clone().transpose())),
            ),
            (
                "linear_t",
                Box::new(|| burn::tensor::module::linear(a.clone(), wt.clone().transpose(), None)),
            ),
            (
                "mm3",
                Box::new(|| {
                    a.clone()
                        .reshape([2, m / 2, k])
                        .matmul(b.clone().unsqueeze::<3>())
                        .reshape([m, n])
                }),
            ),
        ] {
            std::hint::black_box(f().into_data());
            println!(
                "{m} {k} {n} {name} {:.1} GFLOP/s",
                gflops(m, k, n, || {
                    std::hint::black_box(f());
                })
            );
        }
    }
    Ok(())
}

/// GFLOP/s of an `m × k` by `k × n` product that `run` computes, repeated for half a second
/// (after the caller's warm-up run).
fn gflops(m: usize, k: usize, n: usize, mut run: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut r = 0;
    while t.elapsed().as_secs_f64() < 0.5 {
        run();
        r += 1;
    }
    let dt = t.elapsed().as_secs_f64() / r as f64;
    2.0 * (m * k * n) as f64 / dt / 1e9
}

/// `phases`: load, first step, median step, warm first step (see the module's docs).
fn phases(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use fresco_diffusion::pipeline::{Request, Task};

    let model = arg(args, "--model").ok_or("--model DIR")?;
    let device_name = arg(args, "--device").unwrap_or_else(|| "wgpu".into());
    let device = device(&device_name)?;
    // Default: the model's own (its UNet's sample size × 8), as fal-ai/inpaint runs it.
    let size: Option<u32> = arg(args, "--size").map(|r| r.parse()).transpose()?;
    let steps: usize = arg(args, "--steps").map_or(Ok(4), |r| r.parse())?;
    let (image, mask) = bench_inputs()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let t = Instant::now();
        let pipe = load_f32(&model, &device).await?;
        let load = t.elapsed().as_secs_f64();
        let mut req = Request::new(BENCH_PROMPT, 0);
        req.num_inference_steps = steps;
        req.size = size.map(|s| (s, s));
        // When each step of a run ended, from the run's start.
        let run = async || {
            let t = Instant::now();
            let mut marks = Vec::with_capacity(steps);
            let task = Task::Inpaint {
                image: &image,
                mask: &mask,
            };
            let out = pipe
                .generate(task, &req, &mut |_, _| {
                    marks.push(t.elapsed().as_secs_f64());
                    true
                })
                .await?;
            Ok::<_, Box<dyn std::error::Error>>((marks, out.width))
        };
        let (cold, size) = run().await?;
        let (warm, _) = run().await?;
        let mut deltas: Vec<f64> = cold.windows(2).map(|w| w[1] - w[0]).collect();
        deltas.sort_by(f64::total_cmp);
        let step = deltas.get(deltas.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{{\"device\":\"{device_name}\",\"size\":{size},\"steps\":{},\"load\":{load:.3},\"first_step\":{:.3},\"step\":{step:.3},\"warm_first_step\":{:.3}}}",
            cold.len(),
            cold.first().copied().unwrap_or(f64::NAN),
            warm.first().copied().unwrap_or(f64::NAN),
        );
        Ok(())
    })
}

/// `cargo xtask bench real`'s (and `bench gpu`'s) side of ours: one inpainting from a real-layout
/// checkpoint (its `--variant` files, widened to f32 unless `--precision f16`), on `--device cpu`
/// (default) or `wgpu`, timed phase by phase as `tests/bench/real_torch.py` times diffusers':
/// load, text encoding, the image's and the masked image's VAE encodes, each step, the VAE
/// decode, the whole call; the process's peak resident memory; and, with `--compare`, the PSNR of
/// our image against another (diffusers'). On a GPU every mark waits for the device's queue to
/// drain (`Device::sync`), so a phase's time is its work, not its submission.
fn real(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use fresco_diffusion::pipeline::generate::Phase;
    use fresco_diffusion::pipeline::image::{OutputFormat, decode, encode};
    use fresco_diffusion::pipeline::load::LoadOptions;
    use fresco_diffusion::pipeline::{Pipeline, Request, Task};
    use fresco_diffusion::weights::hub::{HubOptions, RepoFiles};
    use fresco_diffusion::weights::progress;
    use fresco_diffusion::weights::repo::RepoLocation;

    let model = arg(args, "--model").ok_or("--model DIR")?;
    let size: Option<u32> = arg(args, "--size").map(|r| r.parse()).transpose()?;
    let steps: usize = arg(args, "--steps").map_or(Ok(3), |r| r.parse())?;
    let (image, mask) = bench_inputs()?;
    let f16 = match arg(args, "--precision").as_deref().unwrap_or("f32") {
        "f32" => false,
        "f16" => true,
        other => return Err(format!("--precision {other}: f32 or f16").into()),
    };
    let compute = compute(arg(args, "--device").as_deref().unwrap_or("cpu"), f16)?;
    let device = compute.device.clone();
    // Every mark waits for the work queued before it (a no-op on the CPU backend), and notes the
    // bytes the device's allocator holds then: the largest is the call's device memory (its pools
    // keep pages once reserved, so this is their peak; `None` where the backend does not say).
    let reserved = std::cell::Cell::new(None::<u64>);
    let sync = || {
        device
            .sync()
            .map_err(|e| format!("the device failed: {e:?}"))?;
        if let Some(usage) = device.memory_pool_usage() {
            reserved.set(Some(reserved.get().unwrap_or(0).max(usage.bytes_reserved)));
        }
        Ok::<_, String>(())
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let files = RepoFiles::new(
            RepoLocation::parse(&model)?,
            HubOptions::from_env(),
            progress::quiet(),
        )?;
        let options = LoadOptions {
            precision: Some(compute.precision),
            variant: arg(args, "--variant"),
            buffer_limit: compute.buffer_limit,
            ..LoadOptions::default()
        };
        let t = Instant::now();
        let pipe = Pipeline::load(&files, &device, &options, &mut |_| {}).await?;
        sync()?;
        let load = t.elapsed().as_secs_f64();
        let mut req = Request::new(BENCH_PROMPT, 0);
        req.num_inference_steps = steps;
        req.size = size.map(|s| (s, s));
        let t = Instant::now();
        let mut marks: Vec<(Option<Phase>, f64)> = Vec::new();
        let marks_cell = std::cell::RefCell::new(&mut marks);
        let task = Task::Inpaint {
            image: &image,
            mask: &mask,
        };
        let out = pipe
            .generate_with_phases(
                task,
                &req,
                &mut |_, _| {
                    // A failed device shows in the call's own result; the mark is taken anyway.
                    let _ = sync();
                    marks_cell.borrow_mut().push((None, t.elapsed().as_secs_f64()));
                    true
                },
                &mut |phase| {
                    let _ = sync();
                    marks_cell
                        .borrow_mut()
                        .push((Some(phase), t.elapsed().as_secs_f64()));
                },
            )
            .await?;
        sync()?;
        let total = t.elapsed().as_secs_f64();
        // When each phase ended, from the call's start.
        let phase = |want: Phase| -> f64 {
            marks
                .iter()
                .find(|(p, _)| *p == Some(want))
                .map_or(f64::NAN, |m| m.1)
        };
        let text = phase(Phase::TextEncoded);
        let latents = phase(Phase::LatentsPrepared);
        let masked = phase(Phase::MaskEncoded);
        let decoded = phase(Phase::Decoded);
        let step_marks: Vec<f64> = marks.iter().filter(|m| m.0.is_none()).map(|m| m.1).collect();
        let mut step_times: Vec<f64> = Vec::new();
        let mut last = masked;
        for &m in &step_marks {
            step_times.push(m - last);
            last = m;
        }
        let first_step = step_times.first().copied().unwrap_or(f64::NAN);
        // The median of the steps after the first (which carries first-use work), as diffusers'.
        let mut sorted = step_times.get(1..).unwrap_or_default().to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        let png = encode(&out.images[0], OutputFormat::Png)?;
        if let Some(path) = arg(args, "--out") {
            std::fs::write(&path, &png)?;
        }
        let psnr = match arg(args, "--compare") {
            Some(path) => {
                let theirs = decode(&std::fs::read(&path)?, "compare")?.to_rgb8();
                let ours = &out.images[0];
                if theirs.dimensions() != ours.dimensions() {
                    return Err(format!(
                        "--compare {path}: {:?}, ours {:?}",
                        theirs.dimensions(),
                        ours.dimensions()
                    )
                    .into());
                }
                let mse = ours
                    .as_raw()
                    .iter()
                    .zip(theirs.as_raw())
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum::<f64>()
                    / ours.as_raw().len() as f64;
                if mse == 0.0 {
                    f64::INFINITY
                } else {
                    10.0 * (255.0f64 * 255.0 / mse).log10()
                }
            }
            None => f64::NAN,
        };
        let json_num = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else if v == f64::INFINITY {
                "1e9".into()
            } else {
                "null".into()
            }
        };
        println!(
            "{{\"device\":{:?},\"precision\":\"{}\",\"size\":{},\"load\":{},\"text\":{},\"encode_image\":{},\"encode_masked\":{},\"first_step\":{},\"step\":{},\"steps\":{},\"decode\":{},\"total\":{},\"peak_rss_mib\":{},\"peak_device_mib\":{},\"psnr\":{}}}",
            compute.adapter,
            if f16 { "f16" } else { "f32" },
            out.width,
            json_num(load),
            json_num(text),
            json_num(latents - text),
            json_num(masked - latents),
            json_num(first_step),
            json_num(median),
            step_times.len(),
            json_num(decoded - last),
            json_num(total),
            json_num(status_kib("VmHWM:") as f64 / 1024.0),
            json_num(reserved.get().map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64)),
            json_num(psnr),
        );
        Ok(())
    })
}

/// The inpainting inputs the pipeline benchmarks use (tests/fixtures/pipelines), built in, so the
/// program runs where the repository is not (`cargo xtask bench gpu`'s bundle).
fn bench_inputs() -> Result<(image::DynamicImage, image::DynamicImage), Box<dyn std::error::Error>>
{
    use fresco_diffusion::pipeline::image::decode;
    let image = decode(
        include_bytes!("../../../tests/fixtures/pipelines/image32.png"),
        "image",
    )?;
    let mask = decode(
        include_bytes!("../../../tests/fixtures/pipelines/mask32.png"),
        "mask",
    )?;
    Ok((image, mask))
}

/// A model (a diffusers folder, a hub id or a URL) loaded in f32 on `device`.
async fn load_f32(
    model: &str,
    device: &Device,
) -> Result<fresco_diffusion::pipeline::Pipeline, Box<dyn std::error::Error>> {
    use fresco_diffusion::pipeline::Pipeline;
    use fresco_diffusion::pipeline::load::LoadOptions;
    use fresco_diffusion::weights::hub::{HubOptions, RepoFiles};
    use fresco_diffusion::weights::progress;
    use fresco_diffusion::weights::repo::RepoLocation;

    let files = RepoFiles::new(
        RepoLocation::parse(model)?,
        HubOptions::from_env(),
        progress::stderr(),
    )?;
    let options = LoadOptions {
        precision: Some(Precision::F32),
        ..LoadOptions::default()
    };
    Ok(Pipeline::load(&files, device, &options, &mut |_| {}).await?)
}
