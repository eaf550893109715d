//! `cargo xtask <task>`: the project's one entry point for set-up, tests, the demo and benchmarks.
//!
//! - `cargo xtask demo [--port 8080] [--check]`: builds the server and the npm package, starts
//!   `fresco serve` with the demo site (www/ + the package + the tiny model's hub), prints its URL
//!   (`--check`: probes it and exits, as the test suite does);
//! - `cargo xtask test [--no-lint]`: installs what is missing, then runs every test: formatting and
//!   clippy, native unit and integration tests, the wasm tests in headless Chromium (WebGPU), the
//!   end-to-end tests with the real `@fal-ai/client` and with our `@fresco/client`, and the demo
//!   check;
//! - `cargo xtask setup`: only the installs;
//! - `cargo xtask npm`: builds the npm package `@fresco/client` (client, local mode, engine) into
//!   `<target>/npm/client`;
//! - `cargo xtask fixtures real [--model sdxl-inpaint|sd15-inpaint|sdxl-base] [--dir D]
//!   [--variant fp16|fp32|all] [--seed 0]`: a random-weight checkpoint in a real repository's exact
//!   layout (configs, file names, tensors, dtypes), for the real models' size without the hub;
//! - `cargo xtask fuzz [--cases 1000000] [--seed S]`: the parsers that take outside bytes under
//!   mutated inputs, a table of cases and panics;
//! - `cargo xtask bench browser [--steps 4] [--mid-size 128]`: a local inpainting's load, first
//!   step (kernel compile) and step times in headless Chromium next to native wgpu;
//! - `cargo xtask bench proxy [--requests N] [--concurrency C]`: our proxy against
//!   `@fal-ai/server-proxy`'s Express adapter, same upstream, same load;
//! - `cargo xtask bench pipeline [--sizes 32,64,128] [--mid-sizes 256,512] [--mid-wgpu-sizes 256]
//!   [--steps 10] [--runs 2]`: whole inpainting with the tiny models and a mid-size SDXL-inpainting
//!   pipeline, ours (CPU, wgpu) next to diffusers;
//! - `cargo xtask bench load [--requests 1000] [--clients 1,16,64,256] [--inpaint-requests 16]
//!   [--inpaint-clients 1,8]`: `fresco serve` (API keys on) under concurrent callers of
//!   `fresco/echo` and the tiny inpainting: throughput, p50/p99, `/health` p99, peak RSS, and the
//!   behaviour of a full queue;
//! - `cargo xtask bench engine [--sizes 32,64] [--runs 3]`: UNet forward times on the CPU, wgpu
//!   (f32, f16) and PyTorch, and the loader's peak memory on an SDXL-sized checkpoint;
//! - `cargo xtask bench real [--runs sdxl-inpaint:512,sdxl-inpaint:1024,sd15-inpaint:512]
//!   [--steps 3]`: the real models' layouts at their real size (`fixtures real`), ours next to
//!   diffusers on the CPU phase by phase, peak memory, goals, and the PSNR between the images;
//! - `cargo xtask bench gpu --prepare DIR`: a bundle (≤ 64 MiB) that times SDXL-inpainting at
//!   1024² on a lent GPU machine with one command (`DIR/run.sh`): ours on wgpu (Vulkan) in f16 and
//!   f32 next to diffusers with PyTorch CUDA fp16;
//! - `cargo xtask bench size`: the gzip size of the npm module's client (wasm + JS) next to
//!   `@fal-ai/client` bundled with its dependencies.

mod bench;
#[cfg(test)]
mod circles;
mod demo;
mod fixtures;
mod gpu_bench;
mod load;
mod npm;
mod real_bench;
mod setup;
mod site;
mod size;
mod test;
mod util;

use std::process::ExitCode;

use util::{Ctx, Result, run};

/// Every command and its options.
const USAGE: &str = "usage: cargo xtask <command>
  demo [--port 8080] [--check]     the demo site and a CLI inpaint with the built-in tiny model
  test [--no-lint]                 every test (installs what is missing first)
  setup                            only the installs the tests need
  npm                              build the npm package @fresco/client
  fixtures real [--model sdxl-inpaint|sd15-inpaint|sdxl-base] [--dir D] [--variant fp16|fp32|all] [--seed 0]
                                   a random-weight checkpoint in a real repository's exact layout
  fuzz [--cases 1000000] [--seed S]   the parsers of outside bytes under mutated inputs
  bench proxy [--requests 20000] [--concurrency 32]
  bench load [--requests 1000] [--clients 1,16,64,256] [--inpaint-requests 16] [--inpaint-clients 1,8]
  bench pipeline [--sizes 32,64,128] [--mid-sizes 256,512] [--mid-wgpu-sizes 256] [--steps 10] [--runs 2]
  bench engine [--sizes 32,64] [--runs 3]
  bench real [--runs sdxl-inpaint:512,sdxl-inpaint:1024,sd15-inpaint:512] [--steps 3]
  bench gpu --prepare DIR          a bundle that times SDXL-inpainting at 1024² on a lent GPU machine
  bench gpu --run [--size 1024] [--steps 30] [--model sdxl-inpaint] [--fixtures DIR] [--torch-device cuda]
                                   (what the bundle's run.sh does there)
  bench browser [--steps 4] [--mid-size 128]
  bench size";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ctx = Ctx::new();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::for_tests(&ctx),
        Some("test") => test::test(&ctx, !flag("--no-lint")),
        Some("npm") => npm::build(&ctx).map(|_| ()),
        Some("fuzz") => fuzz(
            &ctx,
            value("--cases").as_deref().unwrap_or("1000000"),
            value("--seed").as_deref(),
        ),
        Some("demo") => demo::demo(
            &ctx,
            value("--port").as_deref().unwrap_or("8080"),
            flag("--check"),
            true,
        ),
        Some("fixtures") => match args.get(1).map(String::as_str) {
            Some("real") => fixtures::Variants::parse(
                value("--variant").as_deref().unwrap_or("all"),
            )
            .and_then(|variants| {
                let seed = value("--seed").unwrap_or_else(|| "0".into());
                let seed = seed.parse().map_err(|e| format!("--seed {seed:?}: {e}"))?;
                fixtures::real(
                    &ctx,
                    value("--model").as_deref().unwrap_or("sdxl-inpaint"),
                    value("--dir").as_deref(),
                    variants,
                    seed,
                )
            }),
            other => Err(format!("unknown fixtures {other:?}\n{USAGE}")),
        },
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("proxy") => bench::proxy(
                &ctx,
                value("--requests")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(20_000),
                value("--concurrency")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(32),
            ),
            Some("engine") => bench::engine(
                &ctx,
                value("--sizes").as_deref().unwrap_or("32,64"),
                value("--runs").and_then(|v| v.parse().ok()).unwrap_or(3),
            ),
            Some("browser") => bench::browser(
                &ctx,
                value("--steps").and_then(|v| v.parse().ok()).unwrap_or(4),
                value("--mid-size")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(128),
            ),
            Some("pipeline") => bench::pipeline(
                &ctx,
                value("--sizes").as_deref().unwrap_or("32,64,128"),
                value("--mid-sizes").as_deref().unwrap_or("256,512"),
                value("--mid-wgpu-sizes").as_deref().unwrap_or(""),
                value("--steps").and_then(|v| v.parse().ok()).unwrap_or(10),
                value("--runs").and_then(|v| v.parse().ok()).unwrap_or(2),
            ),
            Some("load") => {
                let list = |name: &str, default: &str| -> Vec<usize> {
                    value(name)
                        .as_deref()
                        .unwrap_or(default)
                        .split(',')
                        .filter_map(|v| v.trim().parse().ok())
                        .collect()
                };
                load::load(
                    &ctx,
                    value("--requests")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1000),
                    &list("--clients", "1,16,64,256"),
                    value("--inpaint-requests")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(16),
                    &list("--inpaint-clients", "1,8"),
                )
            }
            Some("size") => size::size_bench(&ctx),
            Some("real") => real_bench::real(
                &ctx,
                value("--runs")
                    .as_deref()
                    .unwrap_or("sdxl-inpaint:512,sdxl-inpaint:1024,sd15-inpaint:512"),
                value("--steps").and_then(|v| v.parse().ok()).unwrap_or(3),
            ),
            Some("gpu") => match (value("--prepare"), flag("--run")) {
                (Some(dir), false) => gpu_bench::prepare(&ctx, &dir),
                (None, true) => gpu_bench::run_bundle(
                    &ctx,
                    &gpu_bench::RunOptions {
                        model: value("--model").unwrap_or_else(|| "sdxl-inpaint".into()),
                        size: value("--size").and_then(|v| v.parse().ok()).unwrap_or(1024),
                        steps: value("--steps").and_then(|v| v.parse().ok()).unwrap_or(30),
                        fixtures: value("--fixtures"),
                        torch_device: value("--torch-device").unwrap_or_else(|| "cuda".into()),
                    },
                ),
                _ => Err(format!("bench gpu: --prepare DIR or --run\n{USAGE}")),
            },
            other => Err(format!("unknown benchmark {other:?}\n{USAGE}")),
        },
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The parsers of outside bytes under `cases` mutated inputs each (crates/server/tests/fuzz.rs,
/// which the test suite runs with a few thousand): a table of targets, cases/s and panics.
fn fuzz(ctx: &Ctx, cases: &str, seed: Option<&str>) -> Result {
    let mut cmd = ctx.cargo();
    cmd.args([
        "test",
        "-p",
        "fresco-server",
        "--test",
        "fuzz",
        "--locked",
        "--",
        "--nocapture",
    ])
    .env("FRESCO_FUZZ_CASES", cases);
    if let Some(seed) = seed {
        cmd.env("FRESCO_FUZZ_SEED", seed);
    }
    run(&mut cmd)
}
