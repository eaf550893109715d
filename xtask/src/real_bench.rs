//! `cargo xtask bench real`: the real models' layouts at their real size (`cargo xtask fixtures
//! real`, fp16 files widened to f32), ours (`engine_bench real`) next to diffusers
//! (`tests/bench/real_torch.py`) on this CPU: same files, inputs, prompt, seed, steps and threads;
//! each phase's seconds, peak resident memory, the ratio and the goal, and the PSNR of our image
//! against diffusers'.

use std::process::Command;

use crate::bench::{build_benches, diffusers_python, field};
use crate::fixtures::{self, Variants};
use crate::util::{Ctx, Result, output};

/// The rows of a table: label, JSON key, goal (the most ours may take, as a share of diffusers').
const ROWS: [(&str, &str, Option<f64>); 10] = [
    ("load (s)", "load", Some(1.0)),
    ("text encoding (s)", "text", None),
    ("VAE encode, image, and noise (s)", "encode_image", None),
    ("VAE encode, masked image (s)", "encode_masked", None),
    ("first step (s)", "first_step", None),
    ("median step after the first (s)", "step", Some(0.8)),
    ("VAE decode (s)", "decode", None),
    ("whole call (s)", "total", Some(0.8)),
    ("peak resident memory (MiB)", "peak_rss_mib", Some(1.0)),
    ("steps", "steps", None),
];

/// `runs`: `model:size` pairs, e.g. `sdxl-inpaint:512,sd15-inpaint:512`.
pub fn real(ctx: &Ctx, runs: &str, steps: usize) -> Result {
    let runs: Vec<(String, u32)> = runs
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            let (model, size) = r
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("--runs {r:?}: expected model:size"))?;
            let size = size
                .parse()
                .map_err(|_| format!("--runs {r:?}: size must be a number of pixels"))?;
            Ok((model.to_string(), size))
        })
        .collect::<Result<_>>()?;
    build_benches(ctx)?;
    let python = diffusers_python();
    let scratch = std::env::temp_dir().join(format!("fresco-bench-real-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut tables = Vec::new();
    for (model, size) in &runs {
        fixtures::real(ctx, model, None, Variants::Fp16, 0)?;
        let dir = fixtures::default_dir(ctx, model).display().to_string();
        let (size_s, steps_s) = (size.to_string(), steps.to_string());
        let theirs_png = scratch.join(format!("{model}-{size}-diffusers.png"));
        let theirs = match &python {
            Some(python) => {
                println!("{model} at {size}²: diffusers…");
                warm_page_cache(&dir)?;
                let out = output(
                    Command::new(python)
                        .arg(ctx.root.join("tests/bench/real_torch.py"))
                        .arg(&dir)
                        .args(["--size", &size_s, "--steps", &steps_s, "--out"])
                        .arg(&theirs_png),
                )?;
                out.lines().find(|l| l.starts_with('{')).map(str::to_owned)
            }
            None => None,
        };
        println!("{model} at {size}²: ours…");
        warm_page_cache(&dir)?;
        let mut args = vec![
            "real".to_string(),
            "--model".into(),
            dir.clone(),
            "--variant".into(),
            "fp16".into(),
            "--size".into(),
            size_s.clone(),
            "--steps".into(),
            steps_s.clone(),
        ];
        if theirs.is_some() {
            args.push("--compare".into());
            args.push(theirs_png.display().to_string());
        }
        let ours =
            output(Command::new(ctx.target_dir.join("debug/examples/engine_bench")).args(&args))?;
        let ours = ours
            .lines()
            .find(|l| l.starts_with('{'))
            .ok_or("engine_bench real printed no result")?
            .to_owned();
        let table = table(model, *size, steps, threads, &ours, theirs.as_deref())?;
        println!("{table}");
        tables.push(table);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("\n{}", tables.join("\n"));
    Ok(())
}

/// Reads every fp16 weight file of a checkpoint once, so that each side's load starts from the
/// same page cache: otherwise the first side's peak (17 GB for SDXL in f32, on a 24 GB machine)
/// can evict the files, and the second reads them from disk.
fn warm_page_cache(dir: &str) -> Result {
    let mut files = Vec::new();
    crate::util::list_files(std::path::Path::new(dir), &mut files)?;
    let mut buf = vec![0u8; 8 << 20];
    for (path, _) in files {
        if path.to_string_lossy().ends_with(".fp16.safetensors") {
            let mut file =
                std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            while std::io::Read::read(&mut file, &mut buf)
                .map_err(|e| format!("{}: {e}", path.display()))?
                > 0
            {}
        }
    }
    Ok(())
}

fn table(
    model: &str,
    size: u32,
    steps: usize,
    threads: usize,
    ours: &str,
    theirs: Option<&str>,
) -> Result<String> {
    let mut out = format!(
        "\n{model} at {size}×{size}, {steps} steps asked, guidance 7.5, f32 on the CPU ({threads} threads), fp16 files widened:\n\n| | ours | diffusers | ours / diffusers | goal |\n|---|---:|---:|---:|---|\n"
    );
    let cell = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.2}"));
    for (label, key, goal) in ROWS {
        let o = field(ours, key).ok();
        let t = theirs.and_then(|t| field(t, key).ok());
        let ratio = match (o, t) {
            (Some(o), Some(t)) if t > 0.0 => Some(o / t),
            _ => None,
        };
        let verdict = match (goal, ratio) {
            (Some(g), Some(r)) => {
                format!("≤ {g:.1}× {}", if r <= g { "(met)" } else { "(not met)" })
            }
            (Some(g), None) => format!("≤ {g:.1}×"),
            _ => String::new(),
        };
        let ratio = ratio.map_or_else(|| "—".into(), |r| format!("{r:.2}×"));
        out.push_str(&format!(
            "| {label} | {} | {} | {ratio} | {verdict} |\n",
            cell(o),
            cell(t)
        ));
    }
    if theirs.is_some() {
        let psnr = field(ours, "psnr").ok();
        let shown = match psnr {
            Some(p) if p >= 1e8 => "∞ (identical)".to_string(),
            Some(p) => format!("{p:.1} dB"),
            None => "—".into(),
        };
        let met = psnr.is_some_and(|p| p >= 30.0);
        out.push_str(&format!(
            "| PSNR of our image against diffusers' | {shown} | | | ≥ 30 dB {} |\n",
            if met { "(met)" } else { "(not met)" }
        ));
    }
    Ok(out)
}
