//! `cargo xtask test`: every test, in the order a failure is cheapest to find — formatting,
//! the native tests linted by clippy, the wasm tests in headless Chromium, the npm module and its
//! size, the end-to-end tests in Node and Chromium, and the demo check.

use std::time::{Duration, Instant};

use crate::util::{Ctx, Result, Service, run};
use crate::{npm, setup, site, size};

/// Runs every test; stops at the first failing step.
pub fn test(ctx: &Ctx, lint: bool) -> Result {
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
    timed("demo check", &mut || {
        crate::demo::demo(ctx, "0", true, false)
    })?;
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
