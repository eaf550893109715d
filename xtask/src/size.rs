//! `cargo xtask bench size`: what a page downloads for the client, ours against `@fal-ai/client`.
//!
//! Ours: `fresco-web` without its `webgpu` feature (the local engine is a separate, lazily loaded
//! module), built with the `wasm-client` profile, bound by `wasm-bindgen --target web`, shrunk by
//! `wasm-opt -Oz` when binaryen is installed; the `.wasm` and its JS glue, each gzipped (-9).
//! Theirs: `@fal-ai/client` 1.10.1 with its dependencies bundled by esbuild (minified ESM for the
//! browser, the exports a page imports), gzipped the same way.

use std::path::Path;
use std::process::Command;

use crate::util::{Ctx, Result, run};

/// Gzipped size (-9) of a file, in bytes.
fn gzip_size(path: &Path) -> Result<u64> {
    let out = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()
        .map_err(|e| format!("gzip: {e}"))?;
    if !out.status.success() {
        return Err(format!("gzip {} failed", path.display()));
    }
    Ok(out.stdout.len() as u64)
}

fn size(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1000.0)
}

pub fn size_bench(ctx: &Ctx) -> Result {
    crate::setup::node_packages(ctx)?;
    let out = ctx.target_dir.join("size");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;

    run(ctx.cargo().args([
        "build",
        "-p",
        "fresco-web",
        "--lib",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm-client",
        "--locked",
    ]))?;
    let built = ctx
        .target_dir
        .join("wasm32-unknown-unknown/wasm-client/fresco_web.wasm");
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--out-dir"])
        .arg(&out)
        .arg(&built))?;
    let wasm = out.join("fresco_web_bg.wasm");
    let js = out.join("fresco_web.js");
    let raw = size(&wasm)?;
    let optimised = crate::util::which("wasm-opt").is_some();
    if optimised {
        run(Command::new("wasm-opt")
            .args(["-Oz", "--strip-debug", "--strip-producers"])
            .arg(&wasm)
            .arg("-o")
            .arg(&wasm))?;
    }

    // @fal-ai/client as a page gets it: bundled with its dependencies, minified.
    let tests = ctx.root.join("tests");
    let entry = out.join("fal-entry.mjs");
    std::fs::write(
        &entry,
        "export { fal, createFalClient, ApiError, ValidationError, parseEndpointId } from \"@fal-ai/client\";\n",
    )
    .map_err(|e| e.to_string())?;
    let bundle = out.join("fal-client.bundle.js");
    run(Command::new(tests.join("node_modules/.bin/esbuild"))
        .arg(&entry)
        .args([
            "--bundle",
            "--minify",
            "--format=esm",
            "--platform=browser",
            "--log-level=warning",
        ])
        .arg(format!("--outfile={}", bundle.display()))
        // Resolve the package from tests/node_modules.
        .env("NODE_PATH", tests.join("node_modules")))?;

    let (wasm_gz, js_gz) = (gzip_size(&wasm)?, gzip_size(&js)?);
    let ours = wasm_gz + js_gz;
    let theirs = gzip_size(&bundle)?;
    println!("\nthe client a page downloads, gzip -9:\n");
    println!("| what | raw | gzip |");
    println!("|---|---:|---:|");
    println!(
        "| fresco-web client: wasm{} | {} | {} |",
        if optimised {
            " (wasm-opt -Oz)"
        } else {
            " (no wasm-opt here)"
        },
        kb(size(&wasm)?),
        kb(wasm_gz)
    );
    println!(
        "| fresco-web client: JS glue | {} | {} |",
        kb(size(&js)?),
        kb(js_gz)
    );
    println!("| **fresco-web client, total** | | **{}** |", kb(ours));
    println!(
        "| @fal-ai/client 1.10.1 + dependencies (esbuild, minified) | {} | {} |",
        kb(size(&bundle)?),
        kb(theirs)
    );
    println!(
        "\nours / theirs: {:.2}× (goal ≤ 1.0×); the wasm before wasm-opt: {}",
        ours as f64 / theirs as f64,
        kb(raw)
    );
    Ok(())
}
