//! The demo site as `fresco serve --www` hands it out: `www/` (the page), the npm package in
//! `pkg/` (`cargo xtask npm`), the built-in tiny model in Hugging Face layout under `hub/`
//! (`tests/fixtures/hub`, so the page's local mode loads it by id as it would from
//! huggingface.co), and `demo.json`, which tells the page where the server keeps that model (the
//! remote mode names it by its directory).

use std::path::{Path, PathBuf};

use crate::util::{Ctx, Result, copy};

/// Where [`assemble`] puts the site.
pub fn dir(ctx: &Ctx) -> PathBuf {
    ctx.target_dir.join("demo-www")
}

fn copy_dir(from: &Path, to: &Path) -> Result {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            copy(&entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Builds the site from `www/` and the package `cargo xtask npm` built last.
pub fn assemble(ctx: &Ctx) -> Result<PathBuf> {
    let out = dir(ctx);
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    copy_dir(&ctx.root.join("www"), &out)?;
    let package = crate::npm::dir(ctx);
    if !package.join("engine_bg.wasm").exists() {
        return Err(format!(
            "{} has no built package: run `cargo xtask npm`",
            package.display()
        ));
    }
    copy_dir(&package, &out.join("pkg"))?;
    let fixtures = ctx.root.join("tests/fixtures");
    #[cfg(unix)]
    std::os::unix::fs::symlink(fixtures.join("hub"), out.join("hub"))
        .map_err(|e| format!("{}: {e}", out.join("hub").display()))?;
    #[cfg(not(unix))]
    copy_dir(&fixtures.join("hub"), &out.join("hub"))?;
    let model = fixtures.join("tiny-sdxl-inpaint");
    let config = format!(
        "{{\"tinyModelDir\": {:?}, \"tinyModelId\": \"fresco/tiny-sdxl-inpaint\"}}\n",
        model.display().to_string()
    );
    std::fs::write(out.join("demo.json"), config).map_err(|e| e.to_string())?;
    Ok(out)
}
