//! `cargo xtask demo`: builds the server and the npm package, starts `fresco serve` with the demo
//! site and the built-in tiny model, and runs a CLI inpaint (`--check`: probes it and stops).

use std::time::Duration;

use crate::util::{self, Ctx, Result, Service, run};
use crate::{npm, site};

/// Builds and starts the server with the demo site; `check` probes it and stops.
pub fn demo(ctx: &Ctx, port: &str, check: bool, build: bool) -> Result {
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
