//! `cargo xtask bench size`: what a page downloads for the client, ours against `@fal-ai/client`.
//!
//! Ours: the npm package `cargo xtask npm` builds (crate docs there): its driver and wasm-bindgen
//! glue bundled and minified by esbuild, and the `.wasm`, each gzipped (-9). Theirs:
//! `@fal-ai/client` 1.10.1 with its dependencies, bundled the same way (the same exports).

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

/// esbuild's minified browser bundle of `entry`, resolving packages from tests/node_modules;
/// what went into it is listed in `metafile`.
fn bundle(ctx: &Ctx, entry: &Path, outfile: &Path, metafile: &Path) -> Result {
    let tests = ctx.root.join("tests");
    run(Command::new(tests.join("node_modules/.bin/esbuild"))
        .arg(entry)
        .args([
            "--bundle",
            "--minify",
            "--format=esm",
            "--platform=browser",
            "--target=es2022",
            "--log-level=warning",
            // The wasm is a file beside the bundle, fetched by the code; counted on its own.
            "--external:*.wasm",
            // The local mode is a separate chunk, imported only when a call runs locally (what
            // bundlers that split code, Vite's and webpack's defaults, make of `import()`).
            "--external:*/local.js",
        ])
        .arg(format!("--outfile={}", outfile.display()))
        .arg(format!("--metafile={}", metafile.display()))
        .env("NODE_PATH", tests.join("node_modules")))
}

/// Gzipped sizes, in bytes, of what a page downloads for each client.
struct Sizes {
    wasm: u64,
    wasm_gz: u64,
    js: u64,
    js_gz: u64,
    theirs: u64,
    theirs_gz: u64,
}

impl Sizes {
    fn ours_gz(&self) -> u64 {
        self.wasm_gz + self.js_gz
    }
}

/// Measures the package `cargo xtask npm` built last, and @fal-ai/client.
fn measure(ctx: &Ctx) -> Result<Sizes> {
    let out = ctx.target_dir.join("size");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let package = crate::npm::dir(ctx);

    // Both clients as a page's bundler ships them: the exports a page imports, with everything
    // they pull in, minified by esbuild.
    let exports = "fal, createFalClient, ApiError, ValidationError, parseEndpointId";
    let ours_entry = out.join("fresco-entry.mjs");
    std::fs::write(
        &ours_entry,
        format!(
            "export {{ {exports} }} from {:?};\n",
            package.join("index.js").display().to_string()
        ),
    )
    .map_err(|e| e.to_string())?;
    let ours_js = out.join("fresco-client.bundle.js");
    let ours_meta = out.join("fresco-client.meta.json");
    bundle(ctx, &ours_entry, &ours_js, &ours_meta)?;
    // The driver is split in modules, each loaded by a page for a remote call: every one must be
    // in the bundle measured (esbuild lists each input as `"<path>": {`).
    let meta = std::fs::read_to_string(&ours_meta).map_err(|e| e.to_string())?;
    for module in crate::npm::DRIVER.iter().chain(&["core.js"]) {
        if !meta.contains(&format!("npm/client/{module}\": {{")) {
            return Err(format!(
                "{module} is not in the bundle measured ({})",
                ours_meta.display()
            ));
        }
    }
    let theirs_entry = out.join("fal-entry.mjs");
    std::fs::write(
        &theirs_entry,
        format!("export {{ {exports} }} from \"@fal-ai/client\";\n"),
    )
    .map_err(|e| e.to_string())?;
    let theirs_js = out.join("fal-client.bundle.js");
    bundle(
        ctx,
        &theirs_entry,
        &theirs_js,
        &out.join("fal-client.meta.json"),
    )?;
    let wasm = package.join("core_bg.wasm");
    Ok(Sizes {
        wasm: size(&wasm)?,
        wasm_gz: gzip_size(&wasm)?,
        js: size(&ours_js)?,
        js_gz: gzip_size(&ours_js)?,
        theirs: size(&theirs_js)?,
        theirs_gz: gzip_size(&theirs_js)?,
    })
}

/// The test suite's check: the client a page downloads is no larger than @fal-ai/client.
pub fn check(ctx: &Ctx) -> Result {
    let s = measure(ctx)?;
    println!(
        "@fresco/client {} gzipped (wasm {} + JS {}), @fal-ai/client {}",
        kb(s.ours_gz()),
        kb(s.wasm_gz),
        kb(s.js_gz),
        kb(s.theirs_gz)
    );
    if s.ours_gz() > s.theirs_gz {
        return Err(format!(
            "@fresco/client is {} gzipped, more than @fal-ai/client's {} (cargo xtask bench size)",
            kb(s.ours_gz()),
            kb(s.theirs_gz)
        ));
    }
    Ok(())
}

pub fn size_bench(ctx: &Ctx) -> Result {
    let package = crate::npm::build(ctx)?;
    let s = measure(ctx)?;
    println!("\nthe client a page downloads, gzip -9:\n");
    println!("| what | raw | gzip |");
    println!("|---|---:|---:|");
    println!(
        "| @fresco/client: wasm (wasm-opt -Oz) | {} | {} |",
        kb(s.wasm),
        kb(s.wasm_gz)
    );
    println!(
        "| @fresco/client: JS (driver + wasm-bindgen glue, esbuild, minified) | {} | {} |",
        kb(s.js),
        kb(s.js_gz)
    );
    println!("| **@fresco/client, total** | | **{}** |", kb(s.ours_gz()));
    println!(
        "| @fal-ai/client 1.10.1 + dependencies (esbuild, minified) | {} | {} |",
        kb(s.theirs),
        kb(s.theirs_gz)
    );
    println!(
        "\nours / theirs: {:.2}× (goal ≤ 1.0×); the wasm before wasm-opt: {}",
        s.ours_gz() as f64 / s.theirs_gz as f64,
        kb(package.raw_wasm)
    );
    Ok(())
}
