//! Installs what the tests, the demo and the benchmarks need, when it is missing. Every step checks
//! first, so a second run takes a second.

use std::process::Command;
use std::time::Instant;

use crate::util::{Ctx, Result, output, run, which};

/// Debian packages: Chromium and its driver for the browser tests (WebGPU on SwiftShader);
/// Mesa's lavapipe Vulkan driver for native wgpu on the CPU. (Not binaryen: Debian's 108 breaks
/// wasm-bindgen's externref table; the npm module's wasm-opt comes from npm, `xtask/src/npm.rs`.)
pub const APT_PACKAGES: [&str; 4] = [
    "chromium",
    "chromium-driver",
    "mesa-vulkan-drivers",
    "libvulkan1",
];

fn step(name: &str, f: impl FnOnce() -> Result<bool>) -> Result {
    let started = Instant::now();
    let installed = f().map_err(|e| format!("{name}: {e}"))?;
    let what = if installed { "installed" } else { "present" };
    println!(
        "setup: {name}: {what} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Everything `cargo xtask test` needs.
/// What `cargo xtask npm` (and so `cargo xtask demo`) needs: the wasm target, wasm-bindgen-cli
/// and the node packages (binaryen's wasm-opt).
pub fn for_package(ctx: &Ctx) -> Result {
    step("wasm32 target", wasm_target)?;
    step("wasm-bindgen-cli", || wasm_bindgen(ctx))?;
    step("node packages", || node_packages(ctx))?;
    Ok(())
}

pub fn for_tests(ctx: &Ctx) -> Result {
    step("apt packages", apt_packages)?;
    step("rustfmt and clippy", rust_components)?;
    step("wasm32 target", wasm_target)?;
    step("wasm-bindgen-cli", || wasm_bindgen(ctx))?;
    step("node packages", || node_packages(ctx))?;
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages() -> Result<bool> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    if which("apt-get").is_none() {
        return Err(format!(
            "missing {missing:?} and there is no apt-get here; install them by hand"
        ));
    }
    let is_root = output(Command::new("id").arg("-u"))
        .map(|u| u.trim() == "0")
        .unwrap_or(false);
    let apt = |args: &[&str]| {
        let mut c = if is_root {
            Command::new("apt-get")
        } else {
            sudo_apt()
        };
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    let mut install = apt(&["install", "-y", "-q"]);
    install.args(&missing);
    if run(&mut install).is_err() {
        // A fresh machine may have no package lists yet.
        run(&mut apt(&["update", "-q"]))?;
        let mut again = apt(&["install", "-y", "-q"]);
        again.args(&missing);
        run(&mut again)?;
    }
    Ok(true)
}

fn sudo_apt() -> Command {
    let mut c = Command::new("sudo");
    c.args(["-n", "apt-get"]);
    c
}

fn rust_components() -> Result<bool> {
    let have = |tool: &str| output(Command::new("cargo").args([tool, "--version"])).is_ok();
    if have("fmt") && have("clippy") {
        return Ok(false);
    }
    run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    Ok(true)
}

/// The clippy driver of the active toolchain (`cargo clippy` runs the same one).
pub fn clippy_driver() -> Result<std::path::PathBuf> {
    let path = output(Command::new("rustup").args(["which", "clippy-driver"]))
        .map(|p| std::path::PathBuf::from(p.trim()))
        .ok()
        .filter(|p| p.is_file())
        .or_else(|| which("clippy-driver"));
    path.ok_or_else(|| "clippy-driver not found (rustup component add clippy)".into())
}

fn wasm_target() -> Result<bool> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        return Ok(false);
    }
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    Ok(true)
}

/// The `wasm-bindgen` version Cargo.lock pins: the CLI must match it exactly.
pub fn locked_wasm_bindgen(ctx: &Ctx) -> Result<String> {
    let lock = std::fs::read_to_string(ctx.root.join("Cargo.lock"))
        .map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            let version = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = \"")?.strip_suffix('"'));
            return version
                .map(str::to_owned)
                .ok_or_else(|| "Cargo.lock has no version for wasm-bindgen".into());
        }
    }
    Err("Cargo.lock does not list wasm-bindgen".into())
}

fn wasm_bindgen(ctx: &Ctx) -> Result<bool> {
    let want = locked_wasm_bindgen(ctx)?;
    let have =
        output(Command::new("wasm-bindgen-test-runner").arg("--version")).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(want.as_str()) && which("wasm-bindgen").is_some() {
        return Ok(false);
    }
    // Without --locked: with it, resolution fails for this crate (see the README).
    run(Command::new("cargo").args([
        "install",
        "wasm-bindgen-cli",
        "--version",
        &format!("={want}"),
    ]))?;
    Ok(true)
}

/// `npm ci` in tests/ when node_modules is missing or older than the lock file.
pub fn node_packages(ctx: &Ctx) -> Result<bool> {
    let dir = ctx.root.join("tests");
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.package-lock.json");
    let fresh = match (
        std::fs::metadata(&lock).and_then(|m| m.modified()),
        std::fs::metadata(&stamp).and_then(|m| m.modified()),
    ) {
        (Ok(l), Ok(s)) => s >= l,
        _ => false,
    };
    if fresh {
        return Ok(false);
    }
    if which("npm").is_none() {
        return Err("npm is missing: install Node.js 20 or later".into());
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir))?;
    Ok(true)
}

/// Chromium's driver, found for wasm-bindgen-test-runner.
pub fn chromedriver() -> Result<std::path::PathBuf> {
    which("chromedriver")
        .ok_or_else(|| "chromedriver is missing (apt-get install chromium-driver)".into())
}
