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
//! - `cargo xtask bench size`: the gzip size of the npm module's client (wasm + JS) next to
//!   `@fal-ai/client` bundled with its dependencies.

mod bench;
mod load;
mod npm;
mod setup;
mod site;
mod size;
mod util;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use util::{Ctx, Result, Service, run};

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
        Some("test") => test(&ctx, !flag("--no-lint")),
        Some("npm") => npm::build(&ctx).map(|_| ()),
        Some("fuzz") => fuzz(
            &ctx,
            value("--cases").as_deref().unwrap_or("1000000"),
            value("--seed").as_deref(),
        ),
        Some("demo") => demo(&ctx, value("--port").as_deref().unwrap_or("8080"), flag("--check"), true),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("proxy") => bench::proxy(
                &ctx,
                value("--requests").and_then(|v| v.parse().ok()).unwrap_or(20_000),
                value("--concurrency").and_then(|v| v.parse().ok()).unwrap_or(32),
            ),
            Some("engine") => bench::engine(
                &ctx,
                value("--sizes").as_deref().unwrap_or("32,64"),
                value("--runs").and_then(|v| v.parse().ok()).unwrap_or(3),
            ),
            Some("browser") => bench::browser(
                &ctx,
                value("--steps").and_then(|v| v.parse().ok()).unwrap_or(4),
                value("--mid-size").and_then(|v| v.parse().ok()).unwrap_or(128),
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
                    value("--requests").and_then(|v| v.parse().ok()).unwrap_or(1000),
                    &list("--clients", "1,16,64,256"),
                    value("--inpaint-requests")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(16),
                    &list("--inpaint-clients", "1,8"),
                )
            }
            Some("size") => size::size_bench(&ctx),
            other => Err(format!(
                "unknown benchmark {other:?}; available: proxy, load, engine, pipeline, browser, size"
            )),
        },
        _ => Err("usage: cargo xtask <demo [--port P] [--check] | test [--no-lint] | setup | npm | fuzz [--cases N] [--seed S] | bench proxy|load|engine|pipeline|browser|size>".into()),
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

/// Runs every test; stops at the first failing step.
fn test(ctx: &Ctx, lint: bool) -> Result {
    let started = Instant::now();
    setup::for_tests(ctx)?;
    let mut timings = Vec::new();
    let mut timed = |name: &'static str, f: &mut dyn FnMut() -> Result| -> Result {
        let t = Instant::now();
        println!("\n=== {name}");
        f()?;
        timings.push((name, t.elapsed()));
        Ok(())
    };
    if lint {
        timed("rustfmt", &mut || {
            run(ctx.cargo().args(["fmt", "--all", "--", "--check"]))
        })?;
    }
    // Clippy runs inside every build from here on (`Ctx::cargo`): native, wasm, the npm module.
    let linted = Ctx {
        clippy: if lint {
            Some(setup::clippy_driver()?)
        } else {
            None
        },
        ..ctx.clone()
    };
    let ctx = &linted;
    let name = if lint {
        "native tests, linted by clippy -D warnings"
    } else {
        "native tests"
    };
    timed(name, &mut || {
        run(ctx
            .cargo()
            // fresco-web's tests are the wasm ones below; natively it would only build
            // wasm-bindgen's runtime crates for nothing.
            .args([
                "test",
                "--workspace",
                "--exclude",
                "fresco-web",
                "--all-targets",
                "--locked",
            ]))
    })?;
    timed(
        "browser tests (headless Chromium, WebGPU), linted too",
        &mut || {
            let driver = setup::chromedriver()?;
            let wasm_test = |package: &str, extra: &[&str], fixtures: Option<&str>| {
                let mut cmd = ctx.cargo();
                cmd.args([
                    "test",
                    "-p",
                    package,
                    "--target",
                    "wasm32-unknown-unknown",
                    "--locked",
                ])
                .args(extra)
                .env("CHROMEDRIVER", &driver)
                .env("WASM_BINDGEN_TEST_TIMEOUT", "600");
                if let Some(url) = fixtures {
                    cmd.env("FRESCO_FIXTURES_URL", url);
                }
                run(&mut cmd)
            };
            wasm_test("fresco-web", &["--features", "webgpu"], None)?;
            // The engine's browser test streams the committed tiny models over HTTP: fresco serve
            // hands out tests/fixtures, on a fixed port so the test is not rebuilt for a new URL.
            let fixtures = fixture_server(ctx)?;
            let url = fixtures.url()?;
            wasm_test(
                "fresco-diffusion",
                &["--test", "browser", "--test", "browser_worker"],
                Some(&url),
            )
        },
    )?;
    // The native tests built target/debug/fresco (the CLI's integration tests run it). Building it
    // again with `-p fresco-cli` would resolve dependency features differently and compile the
    // whole tree a second time.
    timed(
        "npm module: build, types, and its size against @fal-ai/client's",
        &mut || {
            npm::build(ctx)?;
            let tests = ctx.root.join("tests");
            run(
                std::process::Command::new(tests.join("node_modules/.bin/tsc"))
                    .args(["-p", "types"])
                    .current_dir(&tests),
            )?;
            size::check(ctx)
        },
    )?;
    timed(
        "end-to-end tests (@fal-ai/client and @fresco/client against fresco serve, in Node and headless Chromium; the local mode and the demo on WebGPU)",
        &mut || {
            let site = site::assemble(ctx)?;
            run(std::process::Command::new("node")
                .args(["--test", "--test-reporter=spec", "e2e/", "browser/"])
                .current_dir(ctx.root.join("tests"))
                .env("FRESCO_BIN", ctx.bin("fresco"))
                .env("FRESCO_CLIENT", npm::dir(ctx))
                .env("FRESCO_SITE", site)
                .env("FRESCO_SCREENSHOTS", ctx.target_dir.join("screenshots")))
        },
    )?;
    timed("demo check", &mut || demo(ctx, "0", true, false))?;
    println!(
        "\nall tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (name, d) in timings {
        println!("  {:>6.1} s  {name}", d.as_secs_f64());
    }
    Ok(())
}

/// `fresco serve` over tests/fixtures, reachable from the browser tests' origin.
fn fixture_server(ctx: &Ctx) -> Result<Service> {
    let data = std::env::temp_dir().join(format!("fresco-fixtures-{}", std::process::id()));
    let mut last = String::new();
    for port in FIXTURE_PORTS {
        let started = Service::start(
            "fixture server",
            std::process::Command::new(ctx.bin("fresco"))
                .args([
                    "serve",
                    "--port",
                    &port.to_string(),
                    "--cors-origin",
                    "*",
                    "--data-dir",
                ])
                .arg(&data)
                .arg("--www")
                .arg(ctx.root.join("tests/fixtures"))
                .env("FRESCO_LOG", "warn"),
            Duration::from_secs(30),
        );
        match started {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(format!("no port for the fixture server: {last}"))
}

/// Ports tried, in order, for the fixture server.
const FIXTURE_PORTS: [u16; 3] = [18765, 18766, 18767];

/// Builds and starts the server with the demo site; `check` probes it and stops.
fn demo(ctx: &Ctx, port: &str, check: bool, build: bool) -> Result {
    if build {
        // The workspace's feature set, as the tests and benchmarks build it: one build, shared.
        run(ctx
            .cargo()
            .args(["build", "--workspace", "--bins", "--examples", "--locked"]))?;
        npm::build(ctx)?;
    }
    let www = site::assemble(ctx)?;
    let data = ctx.root.join(".fresco/demo");
    // The built-in tiny model is a folder of tests/fixtures: the server loads local models only
    // from the folder it is given.
    let server = Service::start(
        "fresco serve",
        std::process::Command::new(ctx.bin("fresco"))
            .args(["serve", "--port", port, "--data-dir"])
            .arg(&data)
            .arg("--www")
            .arg(&www)
            .arg("--models-dir")
            .arg(ctx.root.join("tests/fixtures"))
            // The queue's test endpoint, for the curl line below.
            .arg("--echo"),
        Duration::from_secs(60),
    )?;
    let url = server.url()?;
    let (status, body) = util::http_get(&format!("{url}/health"))?;
    if status != 200 || !body.contains("\"ok\"") {
        return Err(format!("{url}/health answered {status}: {body}"));
    }
    let (status, page) = util::http_get(&format!("{url}/"))?;
    if status != 200 || !page.contains("fresco") {
        return Err(format!("{url}/ answered {status}"));
    }
    // What the page loads: the package (client, local mode, engine) and the tiny model by id.
    for path in [
        "/demo.js",
        "/pkg/index.js",
        "/pkg/local.js",
        "/pkg/engine-worker.js",
        "/pkg/engine.js",
        "/hub/fresco/tiny-sdxl-inpaint/resolve/main/model_index.json",
    ] {
        let (status, _) = util::http_get(&format!("{url}{path}"))?;
        if status != 200 {
            return Err(format!("{url}{path} answered {status}"));
        }
    }
    println!("\nfresco is serving on {url}\n");
    println!(
        "  demo site       {url}/   (paint a mask, prompt, run on this device's GPU or on the server)"
    );
    println!("  proxy route     {url}/api/fal/proxy   (point @fal-ai/client's proxyUrl here)");
    println!(
        "  queue           POST {url}/fresco/echo, GET {url}/fresco/echo/requests/<id>/status"
    );
    println!(
        "  try it          curl -s -X POST {url}/run/fresco/echo -H 'content-type: application/json' -d '{{\"hello\":\"fresco\"}}'"
    );

    // The built-in tiny model (random weights: it paints noise, fast, anywhere), from the CLI and
    // through the server's fal-ai/inpaint.
    let fixtures = ctx.root.join("tests/fixtures");
    let model = fixtures.join("tiny-sdxl-inpaint");
    let (image, mask) = (
        fixtures.join("pipelines/image32.png"),
        fixtures.join("pipelines/mask32.png"),
    );
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let out = data.join("fox.png");
    let mut cli = std::process::Command::new(ctx.bin("fresco"));
    cli.arg("inpaint")
        .arg("--model")
        .arg(&model)
        .arg("--image")
        .arg(&image)
        .arg("--mask")
        .arg(&mask)
        .args([
            "--prompt",
            "a red fox sitting in fresh snow",
            "--seed",
            "1234",
            "--steps",
            "10",
            "--out",
        ])
        .arg(&out);
    println!(
        "\none-line CLI inpaint with the built-in tiny model:\n  {} inpaint --model {} --image {} --mask {} --prompt \"a red fox sitting in fresh snow\" --seed 1234 --steps 10 --out {}",
        ctx.bin("fresco").display(),
        model.display(),
        image.display(),
        mask.display(),
        out.display()
    );
    run(&mut cli)?;
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let input = format!(
        "{{\"model_name\":{:?},\"prompt\":\"a red fox sitting in fresh snow\",\"image_url\":\"data:image/png;base64,{}\",\"mask_url\":\"data:image/png;base64,{}\",\"num_inference_steps\":10,\"seed\":1234}}",
        model.display().to_string(),
        util::base64(&read(&image)?),
        util::base64(&read(&mask)?)
    );
    let request = data.join("inpaint.json");
    std::fs::write(&request, &input).map_err(|e| e.to_string())?;
    println!(
        "\nfal-ai/inpaint on this server, same input:\n  curl -s -X POST {url}/run/fal-ai/inpaint -H 'content-type: application/json' -d @{}",
        request.display()
    );
    let (status, body) = util::http_request(
        "POST",
        &format!("{url}/run/fal-ai/inpaint"),
        Some(&input),
        Duration::from_secs(300),
    )?;
    if status != 200 || !body.contains("\"url\"") || !body.contains("\"seed\":1234") {
        return Err(format!("fal-ai/inpaint answered {status}: {body}"));
    }
    println!("  → {body}");
    if check {
        println!("demo check passed");
        return Ok(());
    }
    println!("\nCtrl-C stops it.");
    server.wait()
}
