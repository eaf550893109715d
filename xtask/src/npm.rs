//! `cargo xtask npm`: the npm package `@fresco/client`, built into `<target>/npm/client`.
//!
//! The client: `fresco-web` without its `webgpu` feature, compiled with the `wasm-client` profile,
//! bound by `wasm-bindgen --target web` as `core.js` + `core_bg.wasm`, shrunk by `wasm-opt -Oz`,
//! beside the hand-written driver and types of `crates/web/js`. The local mode, loaded only by a
//! page that calls an endpoint locally: `local.js` (page side), `engine-worker.js` (the worker)
//! and the engine's wasm, `engine.js` + `engine_bg.wasm` (`fresco-web` with `webgpu`). wasm-opt is binaryen's npm build (a dev dependency in tests/): Debian's
//! binaryen 108 writes wasm-bindgen's `externref` table back as `anyref`, and the module then
//! fails to instantiate.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Ctx, Result, copy, run};

/// The package's version: the workspace's, which the driver's `VERSION` (its User-Agent) must
/// repeat — [`build`] refuses a mismatch.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the client's wasm is shrunk. `--low-memory-unused` lets binaryen fold address offsets on
/// the promise that the first KiB of memory is never touched: Rust places its 1 MiB stack below
/// address 1 MiB, growing down, and the client's calls are shallow. `--converge` repeats the
/// passes while they still gain.
const WASM_OPT: [&str; 5] = [
    "-Oz",
    "--low-memory-unused",
    "--converge",
    "--strip-debug",
    "--strip-producers",
];

/// The driver's modules (`crates/web/js`): `index.js`, which loads the wasm and exports the API,
/// and the modules it imports, named for `@fal-ai/client`'s files. A page loads every one of them
/// for a remote call (`cargo xtask bench size` checks that its bundle counts them all).
pub const DRIVER: [&str; 8] = [
    "index.js",
    "config.js",
    "request.js",
    "response.js",
    "storage.js",
    "streaming.js",
    "queue.js",
    "client.js",
];

/// The local mode's page side and worker (`crates/web/js`), loaded only by a local call.
const LOCAL: [&str; 2] = ["local.js", "engine-worker.js"];

/// The driver's module that declares `VERSION` (its User-Agent).
const VERSION_MODULE: &str = "request.js";

/// What [`build`] reports besides the package in [`dir`].
pub struct Package {
    /// The wasm's size before wasm-opt, in bytes.
    pub raw_wasm: u64,
}

/// Where [`build`] puts the package.
pub fn dir(ctx: &Ctx) -> PathBuf {
    ctx.target_dir.join("npm/client")
}

pub fn build(ctx: &Ctx) -> Result<Package> {
    crate::setup::for_package(ctx)?;
    let dir = dir(ctx);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
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
        .args(["--target", "web", "--out-name", "core", "--out-dir"])
        .arg(&dir)
        .arg(&built))?;
    let wasm = dir.join("core_bg.wasm");
    let raw_wasm = std::fs::metadata(&wasm).map_err(|e| e.to_string())?.len();
    run(
        Command::new(ctx.root.join("tests/node_modules/.bin/wasm-opt"))
            .args(WASM_OPT)
            .arg(&wasm)
            .arg("-o")
            .arg(&wasm),
    )?;
    let js = ctx.root.join("crates/web/js");
    let driver = std::fs::read_to_string(js.join(VERSION_MODULE)).map_err(|e| e.to_string())?;
    if !driver.contains(&format!("const VERSION = \"{VERSION}\";")) {
        return Err(format!(
            "crates/web/js/{VERSION_MODULE} must declare `const VERSION = \"{VERSION}\";` (the workspace's version)"
        ));
    }
    for file in DRIVER.iter().chain(&LOCAL).chain(&["index.d.ts"]) {
        copy(&js.join(file), &dir.join(file))?;
    }
    build_engine(ctx, &dir)?;
    copy(&js.join("README.md"), &dir.join("README.md"))?;
    let generated = ["core.js", "core_bg.wasm", "engine.js", "engine_bg.wasm"];
    let files: Vec<String> = DRIVER
        .iter()
        .chain(&LOCAL)
        .chain(&["index.d.ts", "README.md"])
        .chain(&generated)
        .map(|f| format!("\"{f}\""))
        .collect();
    let files = files.join(", ");
    let manifest = format!(
        r#"{{
  "name": "@fresco/client",
  "version": "{VERSION}",
  "description": "fal's JavaScript client (@fal-ai/client 1.10.1) in Rust and WebAssembly: same API, same wire, for fal or a self-hosted fresco server",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "./index.js",
  "types": "./index.d.ts",
  "exports": {{
    ".": {{ "types": "./index.d.ts", "default": "./index.js" }}
  }},
  "files": [{files}],
  "sideEffects": ["./index.js"],
  "engines": {{ "node": ">=20" }}
}}
"#
    );
    std::fs::write(dir.join("package.json"), manifest).map_err(|e| e.to_string())?;
    for stray in [
        "core.d.ts",
        "core_bg.wasm.d.ts",
        "engine.d.ts",
        "engine_bg.wasm.d.ts",
    ] {
        let _ = std::fs::remove_file(dir.join(stray));
    }
    println!("@fresco/client {VERSION} → {}", dir.display());
    Ok(Package { raw_wasm })
}

/// The name wasm-ld gives the wrapper it puts around each export of a "command" module, which
/// runs the static constructors before the export (the dev build keeps the names).
const COMMAND_EXPORT: &[u8] = b".command_export";

/// The local engine's module, `engine.js` + `engine_bg.wasm`, which `engine-worker.js` loads on
/// the first local call: `fresco-web` with its `webgpu` feature (the Burn engine on WebGPU).
/// Built with the tests' profile, whose compiled dependencies the wasm tests share (a release
/// build of the wasm tree is another half hour on two cores); wasm-bindgen drops its debug info.
fn build_engine(ctx: &Ctx, dir: &Path) -> Result {
    run(ctx.cargo().args([
        "build",
        "-p",
        "fresco-web",
        "--lib",
        "--features",
        "webgpu",
        "--target",
        "wasm32-unknown-unknown",
        "--locked",
    ]))?;
    let built = ctx
        .target_dir
        .join("wasm32-unknown-unknown/debug/fresco_web.wasm");
    let wasm = std::fs::read(&built).map_err(|e| format!("{}: {e}", built.display()))?;
    if wasm
        .windows(COMMAND_EXPORT.len())
        .any(|w| w == COMMAND_EXPORT)
    {
        return Err(format!(
            "{}: wasm-ld wrapped the exports in `__wasm_call_ctors` (\"command\" linkage): every call \
             from JavaScript would run the static constructors again; the engine must call them \
             once itself (fresco_diffusion::web::run_static_constructors)",
            built.display()
        ));
    }
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--out-name", "engine", "--out-dir"])
        .arg(dir)
        .arg(&built))
}
