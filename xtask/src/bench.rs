//! `cargo xtask bench proxy`: status polls through our proxy and through @fal-ai/server-proxy's
//! Express adapter, against the same local upstream, in one run.

use std::process::Command;
use std::time::Duration;

use crate::setup;
use crate::util::{Ctx, Result, Service, output, run};

/// One load run, as `proxy_bench load` prints it.
struct LoadResult {
    requests: f64,
    errors: f64,
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

/// A number from a one-line JSON object (xtask has no JSON parser).
pub(crate) fn field(json: &str, key: &str) -> Result<f64> {
    let start = json
        .find(&format!("\"{key}\":"))
        .ok_or_else(|| format!("no {key} in {json}"))?
        + key.len()
        + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .map_err(|_| format!("bad {key} in {json}"))
}

fn load(
    ctx: &Ctx,
    url: &str,
    target: &str,
    requests: usize,
    concurrency: usize,
) -> Result<LoadResult> {
    let out = output(
        Command::new(ctx.target_dir.join("debug/examples/proxy_bench"))
            .args(["load", "--url", url, "--target", target])
            .args([
                "--requests",
                &requests.to_string(),
                "--concurrency",
                &concurrency.to_string(),
            ]),
    )?;
    let line = out.lines().last().unwrap_or_default();
    Ok(LoadResult {
        requests: field(line, "requests")?,
        errors: field(line, "errors")?,
        rps: field(line, "rps")?,
        p50: field(line, "p50_ms")?,
        p90: field(line, "p90_ms")?,
        p99: field(line, "p99_ms")?,
    })
}

/// The benchmark programs (examples) and the `fresco` binary. `cargo test --all-targets` builds
/// examples only as test harnesses, so they get a build of their own; the dependency tree's
/// artifacts are the tests' where the features agree.
pub(crate) fn build_benches(ctx: &Ctx) -> Result {
    run(ctx
        .cargo()
        .args(["build", "--workspace", "--bins", "--examples", "--locked"]))
}

pub fn proxy(ctx: &Ctx, requests: usize, concurrency: usize) -> Result {
    setup::node_packages(ctx)?;
    build_benches(ctx)?;
    let ready = Duration::from_secs(60);
    let upstream = Service::start(
        "upstream",
        Command::new(ctx.target_dir.join("debug/examples/proxy_bench"))
            .args(["upstream", "--port", "0"]),
        ready,
    )?;
    let upstream_url = upstream.url()?;
    let upstream_host = upstream_url.trim_start_matches("http://").to_owned();
    let data = tempdir()?;
    let ours = Service::start(
        "fresco serve",
        Command::new(ctx.bin("fresco"))
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(&data)
            .args(["--upstream-override", &upstream_url])
            .env("FAL_KEY", "bench-key")
            .env("FRESCO_LOG", "warn"),
        ready,
    )?;
    let theirs = Service::start(
        "@fal-ai/server-proxy (Express)",
        Command::new("node")
            .arg("bench/express-proxy.mjs")
            .current_dir(ctx.root.join("tests"))
            .env("PORT", "0")
            .env("UPSTREAM_HOST", &upstream_host)
            .env("FAL_KEY", "bench-key"),
        ready,
    )?;
    let status_path = "/fal-ai/flux/requests/8c3f2a14-0000-4000-8000-000000000000/status";
    // Ours: the target a real client sends, redirected to the local upstream by --upstream-override.
    // Theirs: its allow-list widened to the local upstream, which it fetches directly.
    let ours_target = format!("https://queue.fal.run{status_path}");
    let theirs_target = format!("{upstream_url}{status_path}");
    println!(
        "\nproxy benchmark: {requests} status polls, {concurrency} connections, after 500 warm-up polls each\n"
    );
    let a = load(
        ctx,
        &format!("{}/api/fal/proxy", ours.url()?),
        &ours_target,
        requests,
        concurrency,
    )?;
    let b = load(
        ctx,
        &format!("{}/api/fal/proxy", theirs.url()?),
        &theirs_target,
        requests,
        concurrency,
    )?;
    println!("| proxy | requests | errors | req/s | p50 ms | p90 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("fresco serve", &a),
        ("@fal-ai/server-proxy 1.2.1 (Express 4)", &b),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
            r.requests, r.errors, r.rps, r.p50, r.p90, r.p99
        );
    }
    println!(
        "\nfresco / server-proxy: {:.1}x the throughput, p99 {:.2} ms vs {:.2} ms",
        a.rps / b.rps,
        a.p99,
        b.p99
    );
    drop((ours, theirs, upstream));
    let _ = std::fs::remove_dir_all(&data);
    if a.errors > 0.0 || b.errors > 0.0 {
        return Err("some requests failed; the figures above are not comparable".into());
    }
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("fresco-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Runs an engine_bench mode and returns its JSON lines.
fn engine_bench(ctx: &Ctx, args: &[&str]) -> Result<Vec<String>> {
    let out = output(Command::new(ctx.target_dir.join("debug/examples/engine_bench")).args(args))?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_owned)
        .collect())
}

/// [`torch_python`], saying when there is none that the diffusers column is skipped.
pub(crate) fn diffusers_python() -> Option<std::path::PathBuf> {
    let python = torch_python();
    if python.is_none() {
        println!(
            "PyTorch is not installed here (FRESCO_TORCH_PYTHON or ~/.cache/fresco/venv): the diffusers column is skipped"
        );
    }
    python
}

/// The Python with torch and diffusers that `tests/fixtures/make_fixtures.py` uses, if any.
fn torch_python() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("FRESCO_TORCH_PYTHON").map(std::path::PathBuf::from),
        Some(crate::util::home().join(".cache/fresco/venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        p.is_file()
            && Command::new(p)
                .args(["-c", "import torch, diffusers"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

pub fn engine(ctx: &Ctx, sizes: &str, runs: usize) -> Result {
    build_benches(ctx)?;
    let runs_s = runs.to_string();
    let mut rows: Vec<(String, String, usize, f64)> = Vec::new();
    for (device, precision) in [("cpu", "f32"), ("wgpu", "f32"), ("wgpu", "f16")] {
        println!("timing the mid-size UNet on {device} ({precision})…");
        for line in engine_bench(
            ctx,
            &[
                "unet",
                "--device",
                device,
                "--precision",
                precision,
                "--sizes",
                sizes,
                "--runs",
                &runs_s,
            ],
        )? {
            rows.push((
                device.into(),
                precision.into(),
                field(&line, "size")? as usize,
                field(&line, "ms")?,
            ));
        }
    }
    let torch = match torch_python() {
        Some(python) => {
            println!("timing the same UNet in PyTorch on this CPU…");
            let dir =
                std::env::temp_dir().join(format!("fresco-bench-unet-{}", std::process::id()));
            engine_bench(ctx, &["write-mid", "--out", &dir.display().to_string()])?;
            let out = output(
                Command::new(python)
                    .arg(ctx.root.join("tests/bench/unet_torch.py"))
                    .arg(&dir)
                    .args(["--sizes", sizes, "--runs", &runs_s]),
            );
            let _ = std::fs::remove_dir_all(&dir);
            let mut t = Vec::new();
            for line in out?.lines().filter(|l| l.starts_with('{')) {
                t.push((field(line, "size")? as usize, field(line, "ms")?));
            }
            Some(t)
        }
        None => {
            println!(
                "PyTorch is not installed here (FRESCO_TORCH_PYTHON or ~/.cache/fresco/venv): its column is skipped"
            );
            None
        }
    };
    println!(
        "\nmid-size UNet (SDXL-inpaint structure at 64/128/256 channels, 9 input channels), one CFG step (batch 2), ms per forward, median of {runs}:\n"
    );
    let header = if torch.is_some() {
        "| latent | ours CPU f32 | wgpu f32 (lavapipe) | wgpu f16 (lavapipe) | PyTorch CPU f32 | CPU / PyTorch | wgpu f32 / PyTorch |"
    } else {
        "| latent | ours CPU f32 | wgpu f32 (lavapipe) | wgpu f16 (lavapipe) |"
    };
    println!("{header}");
    println!("|{}", "---|".repeat(header.matches('|').count() - 1));
    let mut sizes_seen: Vec<usize> = rows.iter().map(|r| r.2).collect();
    sizes_seen.sort_unstable();
    sizes_seen.dedup();
    for size in sizes_seen {
        let ms = |d: &str, p: &str| {
            rows.iter()
                .find(|r| r.0 == d && r.1 == p && r.2 == size)
                .map(|r| r.3)
        };
        let cell = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.0}"));
        let (nd, wg, wh) = (ms("cpu", "f32"), ms("wgpu", "f32"), ms("wgpu", "f16"));
        let mut line = format!(
            "| {size}×{size} | {} | {} | {} |",
            cell(nd),
            cell(wg),
            cell(wh)
        );
        if let Some(t) = &torch {
            let pt = t.iter().find(|r| r.0 == size).map(|r| r.1);
            let ratio = |a: Option<f64>| match (a, pt) {
                (Some(a), Some(b)) => format!("{:.2}×", a / b),
                _ => "—".into(),
            };
            line.push_str(&format!(" {} | {} | {} |", cell(pt), ratio(nd), ratio(wg)));
        }
        println!("{line}");
    }

    println!("\nstreaming a checkpoint shaped like SDXL-inpaint's UNet (fp16, random)…");
    let dir = crate::util::home().join(".cache/fresco/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("sdxl-inpaint-unet-shaped.fp16.safetensors");
    let line = engine_bench(ctx, &["rss", "--out", &file.display().to_string()])?
        .pop()
        .unwrap_or_default();
    let mib = |k: f64| k / 1024.0;
    let peak = field(&line, "peak_over_baseline_kib")?;
    let largest = field(&line, "largest_tensor_bytes")? / 1024.0;
    println!(
        "  {:.2} GB in {} tensors, streamed in {:.0} s: peak RSS {:.0} MiB over the baseline; largest tensor {:.0} MiB; goal ≤ largest + 64 MiB = {:.0} MiB: {}",
        field(&line, "file_bytes")? / 1e9,
        field(&line, "tensors")?,
        field(&line, "seconds")?,
        mib(peak),
        mib(largest),
        mib(largest) + 64.0,
        if mib(peak) <= mib(largest) + 64.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("\nloading it through the real loader into a UNet on wgpu (lavapipe)…");
    let line = engine_bench(
        ctx,
        &[
            "load",
            "--device",
            "wgpu",
            "--out",
            &file.display().to_string(),
        ],
    )?
    .pop()
    .unwrap_or_default();
    let peak = field(&line, "peak_over_baseline_kib")?;
    let model = field(&line, "model_bytes")? / 1024.0;
    println!(
        "  {:.0} s; peak RSS {:.0} MiB over the baseline, of which the model's own weights (on lavapipe the device's memory is this process's) {:.0} MiB: the loader's overhead is {:.0} MiB (largest tensor {:.0} MiB)",
        field(&line, "seconds")?,
        mib(peak),
        mib(model),
        mib(peak - model),
        mib(largest),
    );
    println!(
        "  (the checkpoint stays in {} for the next run)",
        file.display()
    );
    Ok(())
}

/// One model `bench pipeline` times: where it is, at which sizes, on which of our devices.
struct BenchModel {
    label: &'static str,
    dir: std::path::PathBuf,
    sizes: String,
    devices: Vec<&'static str>,
}

/// `cargo xtask bench pipeline`: seconds per whole inpainting, ours on the CPU and on
/// wgpu next to diffusers on this CPU (when the venv exists), same model folder, inputs and
/// sizes: the tiny fixtures at `sizes`, and a mid-size SDXL-inpainting pipeline (written by
/// `engine_bench write-mid`, random weights) at `mid_sizes` — on wgpu only at `mid_wgpu_sizes`,
/// since lavapipe takes minutes per step there.
pub fn pipeline(
    ctx: &Ctx,
    sizes: &str,
    mid_sizes: &str,
    mid_wgpu_sizes: &str,
    steps: usize,
    runs: usize,
) -> Result {
    build_benches(ctx)?;
    let python = diffusers_python();
    let mid = std::env::temp_dir().join(format!("fresco-bench-mid-{}", std::process::id()));
    let mut models: Vec<BenchModel> = ["tiny-sdxl-inpaint", "tiny-sd15-inpaint"]
        .into_iter()
        .map(|label| BenchModel {
            label,
            dir: ctx.root.join("tests/fixtures").join(label),
            sizes: sizes.into(),
            devices: vec!["cpu", "wgpu"],
        })
        .collect();
    if !mid_sizes.is_empty() {
        println!("writing the mid-size SDXL-inpainting pipeline…");
        engine_bench(ctx, &["write-mid", "--out", &mid.display().to_string()])?;
        models.push(BenchModel {
            label: "mid-size SDXL-inpaint (UNet 64/128/256 channels, VAE 32–128, CLIP 256 wide × 6)",
            dir: mid.clone(),
            sizes: mid_sizes.into(),
            devices: vec!["cpu"],
        });
        if !mid_wgpu_sizes.is_empty() {
            models.push(BenchModel {
                label: "mid-size SDXL-inpaint on wgpu",
                dir: mid.clone(),
                sizes: mid_wgpu_sizes.into(),
                devices: vec!["wgpu"],
            });
        }
    }
    let result = models
        .iter()
        .try_for_each(|model| pipeline_model(ctx, model, python.as_deref(), steps, runs));
    let _ = std::fs::remove_dir_all(&mid);
    result
}

fn pipeline_model(
    ctx: &Ctx,
    model: &BenchModel,
    python: Option<&std::path::Path>,
    steps: usize,
    runs: usize,
) -> Result {
    let (steps_s, runs_s) = (steps.to_string(), runs.to_string());
    let dir_s = model.dir.display().to_string();
    let label = model.label;
    // What both sides are asked for.
    let same = [
        "--sizes",
        model.sizes.as_str(),
        "--steps",
        &steps_s,
        "--runs",
        &runs_s,
    ];
    let mut rows: Vec<(String, usize, f64)> = Vec::new();
    for &device in &model.devices {
        println!("{label}: timing our pipeline on {device}…");
        let args = [
            &["pipeline", "--model", &dir_s, "--device", device][..],
            &same,
        ]
        .concat();
        for line in engine_bench(ctx, &args)? {
            rows.push((
                device.into(),
                field(&line, "size")? as usize,
                field(&line, "seconds")?,
            ));
        }
    }
    if let Some(python) = python {
        println!("{label}: timing diffusers on this CPU…");
        let out = output(
            Command::new(python)
                .arg(ctx.root.join("tests/bench/pipeline_torch.py"))
                .arg(&model.dir)
                .args(same),
        )?;
        for line in out.lines().filter(|l| l.starts_with('{')) {
            rows.push((
                "diffusers".into(),
                field(line, "size")? as usize,
                field(line, "seconds")?,
            ));
        }
    }
    println!(
        "\n{label}, inpainting with {steps} steps and guidance (batch 2 per step), seconds, median of {runs}:\n"
    );
    let ours: Vec<String> = model
        .devices
        .iter()
        .map(|d| match *d {
            "cpu" => "ours CPU".to_string(),
            _ => "ours wgpu (lavapipe)".to_string(),
        })
        .collect();
    let ratios: Vec<String> = model
        .devices
        .iter()
        .map(|d| format!("{d} / diffusers"))
        .collect();
    println!(
        "| size | {} | diffusers CPU | {} |",
        ours.join(" | "),
        ratios.join(" | ")
    );
    println!("|---|{}", "---:|".repeat(1 + 2 * model.devices.len()));
    let mut seen: Vec<usize> = rows.iter().map(|r| r.1).collect();
    seen.sort_unstable();
    seen.dedup();
    for size in seen {
        let get = |d: &str| rows.iter().find(|r| r.0 == d && r.1 == size).map(|r| r.2);
        let cell = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.2}"));
        let ratio = |a: Option<f64>| match (a, get("diffusers")) {
            (Some(a), Some(b)) => format!("{:.2}×", a / b),
            _ => "—".into(),
        };
        let times: Vec<String> = model.devices.iter().map(|d| cell(get(d))).collect();
        let ratios: Vec<String> = model.devices.iter().map(|d| ratio(get(d))).collect();
        println!(
            "| {size}×{size} | {} | {} | {} |",
            times.join(" | "),
            cell(get("diffusers")),
            ratios.join(" | ")
        );
    }
    println!();
    Ok(())
}

/// `cargo xtask bench browser`: where the time of a local inpainting goes in headless Chromium
/// (WebGPU on SwiftShader, `tests/bench/browser.mjs`, timed from the engine's log lines) next to
/// native wgpu on this machine (lavapipe, `engine_bench phases`), for the tiny SDXL-inpaint
/// fixture and the mid-size SDXL-inpainting pipeline (`engine_bench write-mid`, random weights,
/// its default size set to `mid_size` pixels): the model's load, the first step (kernels compiled
/// on first use), the median step, and the first step of the same call again.
pub fn browser(ctx: &Ctx, steps: usize, mid_size: u32) -> Result {
    if !mid_size.is_multiple_of(8) || mid_size == 0 {
        return Err(format!("--mid-size {mid_size}: a positive multiple of 8"));
    }
    build_benches(ctx)?;
    crate::npm::build(ctx)?;
    let site = crate::site::assemble(ctx)?;
    let fixtures = ctx.root.join("tests/fixtures");
    let mid = site.join("bench-models/mid");
    println!("writing the mid-size SDXL-inpainting pipeline…");
    engine_bench(ctx, &["write-mid", "--out", &mid.display().to_string()])?;
    let config = mid.join("unet/config.json");
    let text = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
    let sample = format!("\"sample_size\": {}", mid_size / 8);
    let patched = text.replacen("\"sample_size\": 128", &sample, 1);
    if patched == text {
        return Err(format!(
            "{}: no \"sample_size\": 128 to set",
            config.display()
        ));
    }
    std::fs::write(&config, patched).map_err(|e| e.to_string())?;
    // The browser reads it by id from a hub laid out as huggingface.co, beside the tiny one.
    let hub = site.join("bench-hub/bench/mid-sdxl-inpaint/resolve");
    std::fs::create_dir_all(&hub).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(&mid, hub.join("main")).map_err(|e| e.to_string())?;
    let inputs = site.join("bench");
    std::fs::create_dir_all(&inputs).map_err(|e| e.to_string())?;
    for f in ["image32.png", "mask32.png"] {
        crate::util::copy(&fixtures.join("pipelines").join(f), &inputs.join(f))?;
    }
    let steps_s = steps.to_string();
    let models = [
        (
            "tiny SDXL-inpaint (tests/fixtures)",
            "fresco/tiny-sdxl-inpaint",
            "hub",
            fixtures.join("tiny-sdxl-inpaint"),
        ),
        (
            "mid-size SDXL-inpaint (UNet 64/128/256 channels, random weights)",
            "bench/mid-sdxl-inpaint",
            "bench-hub",
            mid.clone(),
        ),
    ];
    let mut rows = Vec::new();
    for (label, _, _, dir) in &models {
        println!("{label}: native wgpu (lavapipe)…");
        let lines = engine_bench(
            ctx,
            &[
                "phases",
                "--model",
                &dir.display().to_string(),
                "--device",
                "wgpu",
                "--steps",
                &steps_s,
            ],
        )?;
        rows.push((label.to_string(), "native wgpu (lavapipe)", lines.join("")));
    }
    println!("headless Chromium (WebGPU on SwiftShader)…");
    let mut cmd = Command::new("node");
    cmd.arg(ctx.root.join("tests/bench/browser.mjs"))
        .arg(&site)
        .arg(ctx.bin("fresco"))
        .arg(&steps_s);
    for (_, id, hub, _) in &models {
        cmd.arg(format!("{id}@{hub}"));
    }
    let out = output(&mut cmd)?;
    let browser_lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    for ((label, _, _, _), line) in models.iter().zip(&browser_lines) {
        rows.push((
            label.to_string(),
            "Chromium WebGPU (SwiftShader)",
            line.to_string(),
        ));
    }
    println!(
        "\nA local inpainting's phases, {steps} steps, f32, seconds (one run each; both adapters are CPU implementations on this machine):\n"
    );
    println!(
        "| model | where | size | load | first step (compiles kernels) | step | first step again |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (label, place, line) in &rows {
        println!(
            "| {label} | {place} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            field(line, "size")?,
            field(line, "load")?,
            field(line, "first_step")?,
            field(line, "step")?,
            field(line, "warm_first_step")?,
        );
    }
    Ok(())
}
