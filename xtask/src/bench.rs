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

fn field(json: &str, key: &str) -> Result<f64> {
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

pub fn proxy(ctx: &Ctx, requests: usize, concurrency: usize) -> Result {
    setup::node_packages(ctx)?;
    run(ctx.cargo().args([
        "build",
        "-p",
        "fresco-cli",
        "-p",
        "fresco-server",
        "--example",
        "proxy_bench",
    ]))?;
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
