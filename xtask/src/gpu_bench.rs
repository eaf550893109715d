//! `cargo xtask bench gpu`: SDXL-inpainting at its real size on a GPU this machine does not have.
//!
//! - `--prepare DIR` builds here, into DIR, everything such a machine needs: a bundle of at most
//!   64 MiB (x86-64 Linux, CUDA and PyTorch installed, no network): our stripped binaries
//!   (`engine_bench`, packed with xz, and `xtask` to write the checkpoint and print the table),
//!   the layout files
//!   that `fixtures real` writes the real-size random checkpoint from, diffusers' side
//!   (`tests/bench/real_torch.py` and the diffusers wheel with the one dependency such images
//!   lack), Vulkan's loader (Debian's `libvulkan1`, unpacked there only when the machine has
//!   none), and `run.sh`.
//! - `DIR/run.sh [--size 1024] [--steps 30] [--model sdxl-inpaint]` (there) runs `xtask bench gpu
//!   --run`: it writes the checkpoint (fp16 files), runs diffusers with PyTorch CUDA in fp16, then
//!   ours on native wgpu (Vulkan) in f16 and in f32 (the fp16 files widened), each the whole
//!   call, and prints one table: model load, text encoding, VAE encodes, first step (kernels
//!   compiled on first use), median step, VAE decode, whole call, memory, and the PSNR of each of
//!   our images against diffusers'. A side that fails is reported in the table, not fatal.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bench::field;
use crate::fixtures::{self, Variants};
use crate::util::{Ctx, Result, copy, run};

/// The most a lent machine takes with a call.
const BUNDLE_LIMIT: u64 = 64 << 20;
/// diffusers' version: the one the rest of the benchmarks and the reference fixtures use.
const DIFFUSERS: &str = "diffusers==0.42.1";
/// diffusers' one requirement that the GPU machines' image lacks (the rest, torch, transformers,
/// huggingface-hub ≥ 1.32, safetensors ≥ 0.8, numpy, Pillow, regex, requests, filelock, is there).
const MISSING_REQUIREMENTS: [&str; 1] = ["importlib_metadata==8.7.0"];
/// Vulkan's loader: the NVIDIA driver ships the ICD, not always the loader.
const DEBS: [&str; 1] = ["libvulkan1"];
/// The repository files the bundle's programs read, relative to its root (= the repository's).
const DATA: [&str; 6] = [
    "tests/fixtures/real",
    "tests/fixtures/tiny-sdxl-inpaint/tokenizer/vocab.json",
    "tests/fixtures/tiny-sdxl-inpaint/tokenizer/merges.txt",
    "tests/bench/real_torch.py",
    "tests/fixtures/pipelines/image32.png",
    "tests/fixtures/pipelines/mask32.png",
];

pub fn prepare(ctx: &Ctx, dir: &str) -> Result {
    let dir = PathBuf::from(dir);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("bin")).map_err(|e| format!("{}: {e}", dir.display()))?;
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        return Err(format!(
            "the GPU machines are x86-64 Linux; this is {} {}: build the bundle on one",
            std::env::consts::ARCH,
            std::env::consts::OS
        ));
    }
    // The `gpu-bundle` profile: release, stripped, no debug info.
    run(ctx.cargo().args([
        "build",
        "--profile",
        "gpu-bundle",
        "--locked",
        "-p",
        "fresco-diffusion",
        "--example",
        "engine_bench",
        "-p",
        "xtask",
        "--bin",
        "xtask",
    ]))?;
    let built = ctx.target_dir.join("gpu-bundle");
    // The engine's program is most of the bundle (63 MB stripped: Burn, CubeCL, wgpu and the CPU
    // kernels); xz takes it to 11 MB, and run.sh unpacks it with Python's lzma there.
    let packed = dir.join("bin/engine_bench.xz");
    let file = std::fs::File::create(&packed).map_err(|e| format!("{}: {e}", packed.display()))?;
    run(Command::new("xz")
        .args(["-9", "-T0", "-c"])
        .arg(built.join("examples/engine_bench"))
        .stdout(file))?;
    copy(&built.join("xtask"), &dir.join("bin/xtask"))?;
    for rel in DATA {
        copy_tree(&ctx.root.join(rel), &dir.join(rel))?;
    }
    let wheels = dir.join("wheels");
    let pip = crate::bench::diffusers_python().unwrap_or_else(|| PathBuf::from("python3"));
    run(Command::new(&pip)
        .args(["-m", "pip", "download", "--quiet", "--no-deps"])
        .args(["--only-binary=:all:", "--python-version", "3.12"])
        .args(["--implementation", "py", "--platform", "any", "-d"])
        .arg(&wheels)
        .arg(DIFFUSERS)
        .args(MISSING_REQUIREMENTS))?;
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    run(Command::new("apt-get")
        .arg("download")
        .args(DEBS)
        .current_dir(&debs))?;
    let script = dir.join("run.sh");
    std::fs::write(&script, RUN_SH).map_err(|e| format!("{}: {e}", script.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", script.display()))?;

    let mut files = Vec::new();
    crate::util::list_files(&dir, &mut files)?;
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    files.sort_by_key(|f| std::cmp::Reverse(f.1));
    println!("\nthe bundle, {}:", dir.display());
    for (path, bytes) in files.iter().take(8) {
        let rel = path.strip_prefix(&dir).unwrap_or(path);
        println!(
            "  {:>10.2} MiB  {}",
            *bytes as f64 / 1048576.0,
            rel.display()
        );
    }
    println!(
        "  {:>10.2} MiB  in all ({} files; the limit is {} MiB)",
        total as f64 / 1048576.0,
        files.len(),
        BUNDLE_LIMIT >> 20
    );
    if total > BUNDLE_LIMIT {
        return Err(format!(
            "the bundle is {total} bytes, over the {BUNDLE_LIMIT} a lent machine takes"
        ));
    }
    // A machine lent through a tool that carries the repository with it counts both.
    if let Ok(tracked) = crate::util::output(
        Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(&ctx.root),
    ) {
        let tree: u64 = tracked
            .split('\0')
            .filter(|p| !p.is_empty())
            .filter_map(|p| std::fs::metadata(ctx.root.join(p)).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "  {:>10.2} MiB  with the repository's tracked files ({:.2} MiB), where a machine \
             takes the repository too{}",
            (total + tree) as f64 / 1048576.0,
            tree as f64 / 1048576.0,
            if total + tree > BUNDLE_LIMIT {
                ": over the limit, carry the bundle alone"
            } else {
                ""
            }
        );
    }
    println!(
        "\nOn the GPU machine, with this folder carried (inside the repository and ignored by git, \
         e.g. `echo /{name}/ >> .git/info/exclude`), the one command is:\n\n    \
         bash {name}/run.sh    # SDXL-inpainting, 1024², 30 steps (meant to take under 8 minutes on an H100)\n\n\
         Its table is printed and, where $OUT is set, written to $OUT/gpu-bench.md.",
        name = dir
            .file_name()
            .map_or("DIR".into(), |n| n.to_string_lossy())
    );
    Ok(())
}

/// The bundle's one command. POSIX shell: it must run on a bare machine.
const RUN_SH: &str = r#"#!/bin/sh
# fresco's GPU benchmark bundle (`cargo xtask bench gpu --prepare`). On the GPU machine:
#   bash run.sh [--size 1024] [--steps 30] [--model sdxl-inpaint] [--fixtures DIR]
set -e
here=$(cd "$(dirname "$0")" && pwd)
# Vulkan's loader, where the machine has none (the driver brings only its ICD).
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
  for f in "$here"/debs/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
# NVIDIA's ICD, where the loader's usual folders do not have it.
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "$VK_DRIVER_FILES" ] && [ -f "$icd" ] \
  && ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
  export VK_DRIVER_FILES="$icd"
  if [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ]; then
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  fi
fi
# Our engine's program, packed with xz (Python's lzma: there wherever python3 is).
if [ ! -x "$here/bin/engine_bench" ]; then
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$here/bin/engine_bench.xz" "$here/bin/engine_bench.part"
  chmod +x "$here/bin/engine_bench.part"
  mv "$here/bin/engine_bench.part" "$here/bin/engine_bench"
fi
# diffusers for PyTorch's side, beside the machine's own packages.
site="${TMPDIR:-/tmp}/fresco-gpu-bench-site"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$site" "$here"/wheels/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export FRESCO_XTASK_ROOT="$here"
exec "$here/bin/xtask" bench gpu --run "$@"
"#;

fn copy_tree(from: &Path, to: &Path) -> Result {
    if from.is_dir() {
        let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        copy(from, to)
    }
}

/// What `--run` does; the defaults are the issue's: SDXL-inpainting, its own 1024², 30 steps.
pub struct RunOptions {
    pub model: String,
    pub size: u32,
    pub steps: usize,
    pub fixtures: Option<String>,
    /// PyTorch's device: `cuda` there; `cpu` (with fp32) to try the bundle on a machine without one.
    pub torch_device: String,
}

/// One side's result: its JSON line, or why there is none.
type Side = (String, std::result::Result<String, String>);

pub fn run_bundle(ctx: &Ctx, o: &RunOptions) -> Result {
    let dir = o
        .fixtures
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("fresco-gpu-bench").join(&o.model));
    fixtures::real(
        ctx,
        &o.model,
        Some(&dir.to_string_lossy()),
        Variants::Fp16,
        0,
    )?;
    let here = std::env::current_exe()
        .map_err(|e| format!("where is this program? {e}"))?
        .parent()
        .ok_or("the program has no folder")?
        .to_path_buf();
    let engine_bench = [
        here.join("engine_bench"),
        here.join("examples/engine_bench"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| format!("no engine_bench beside {}", here.display()))?;
    let scratch = std::env::temp_dir().join(format!("fresco-gpu-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let (size, steps) = (o.size.to_string(), o.steps.to_string());
    let torch_dtype = if o.torch_device == "cpu" {
        "fp32"
    } else {
        "fp16"
    };
    let mut sides: Vec<Side> = Vec::new();

    let theirs_png = scratch.join("diffusers.png");
    println!(
        "\ndiffusers, PyTorch {} {torch_dtype}, {} at {size}², {steps} steps…",
        o.torch_device, o.model
    );
    let theirs = json_line(
        Command::new(std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into()))
            .arg(ctx.root.join("tests/bench/real_torch.py"))
            .arg(&dir)
            .args(["--device", &o.torch_device, "--dtype", torch_dtype])
            .args(["--size", &size, "--steps", &steps, "--out"])
            .arg(&theirs_png),
    );
    let have_theirs = theirs.is_ok();
    sides.push((format!("diffusers {torch_dtype}"), theirs));
    for precision in ["f16", "f32"] {
        println!(
            "\nours, wgpu {precision}, {} at {size}², {steps} steps…",
            o.model
        );
        let mut cmd = Command::new(&engine_bench);
        cmd.args(["real", "--model"])
            .arg(&dir)
            .args([
                "--variant",
                "fp16",
                "--device",
                "wgpu",
                "--precision",
                precision,
            ])
            .args(["--size", &size, "--steps", &steps]);
        if have_theirs {
            cmd.arg("--compare").arg(&theirs_png);
        }
        sides.push((format!("ours wgpu {precision}"), json_line(&mut cmd)));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let table = table(&o.model, o.size, o.steps, &sides);
    println!("\n{table}");
    if let Some(out) = std::env::var_os("OUT") {
        let path = Path::new(&out).join("gpu-bench.md");
        std::fs::write(&path, &table).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("(also in {})", path.display());
    }
    Ok(())
}

/// The program's last JSON line, or why it gave none: its exit and its last words on stderr
/// (which streams to ours meanwhile).
fn json_line(cmd: &mut Command) -> std::result::Result<String, String> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {:?}: {e}", cmd.get_program()))?;
    let stderr = child.stderr.take().expect("piped");
    let last_words = std::thread::spawn(move || {
        let mut last = String::new();
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            eprintln!("{line}");
            if !line.trim().is_empty() {
                last = line;
            }
        }
        last
    });
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut stdout)
        .map_err(|e| format!("reading its output: {e}"))?;
    let status = child.wait().map_err(|e| format!("waiting for it: {e}"))?;
    let last = last_words.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{status}: {last}"));
    }
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
        .ok_or_else(|| "printed no result".to_string())
}

/// The rows: label, JSON key.
const ROWS: [(&str, &str); 11] = [
    ("model load (s)", "load"),
    ("text encoding (s)", "text"),
    ("VAE encode, image, and noise (s)", "encode_image"),
    ("VAE encode, masked image (s)", "encode_masked"),
    ("first step, kernels compiled (s)", "first_step"),
    ("median step after the first (s)", "step"),
    ("VAE decode (s)", "decode"),
    ("whole call (s)", "total"),
    ("steps", "steps"),
    ("device memory reserved, peak (MiB)", "peak_device_mib"),
    ("peak resident memory (MiB)", "peak_rss_mib"),
];

/// One table: a column per side (the first is diffusers'), then each of ours over diffusers'.
fn table(model: &str, size: u32, steps: usize, sides: &[Side]) -> String {
    // Each side's device, once: diffusers names the GPU, ours the adapter and its API.
    let mut devices: Vec<String> = Vec::new();
    for (name, result) in sides {
        if let Some(device) = result.as_ref().ok().and_then(|j| text_field(j, "device"))
            && !devices
                .iter()
                .any(|d| d.ends_with(&format!(" on {device}")))
        {
            devices.push(format!("{name} on {device}"));
        }
    }
    let mut out = format!(
        "{model} at {size}×{size}, {steps} steps, guidance 7.5, random real-size weights (fixtures real, fp16 files); {}:\n\n|",
        if devices.is_empty() {
            "no side ran".to_string()
        } else {
            devices.join(", ")
        }
    );
    for (name, _) in sides {
        out.push_str(&format!(" | {name}"));
    }
    for (name, _) in sides.iter().skip(1) {
        out.push_str(&format!(" | {name} / {}", sides[0].0));
    }
    out.push_str(" |\n|---|");
    out.push_str(&"---:|".repeat(2 * sides.len() - 1));
    out.push('\n');
    let value = |side: &Side, key: &str| side.1.as_ref().ok().and_then(|j| field(j, key).ok());
    for (label, key) in ROWS {
        out.push_str(&format!("| {label} |"));
        for side in sides {
            out.push_str(&match value(side, key) {
                Some(v) if key == "steps" => format!(" {v:.0} |"),
                Some(v) => format!(" {v:.2} |"),
                None => " — |".into(),
            });
        }
        for side in sides.iter().skip(1) {
            let ratio = match (value(side, key), value(&sides[0], key)) {
                (Some(o), Some(t)) if t > 0.0 && key != "steps" => format!(" {:.2}× |", o / t),
                _ => " — |".into(),
            };
            out.push_str(&ratio);
        }
        out.push('\n');
    }
    out.push_str("| PSNR against diffusers' image (dB) | — |");
    for side in sides.iter().skip(1) {
        out.push_str(&match value(side, "psnr") {
            Some(p) if p >= 1e8 => " ∞ |".into(),
            Some(p) => format!(" {p:.1} |"),
            None => " — |".into(),
        });
    }
    out.push_str(&" |".repeat(sides.len() - 1));
    out.push('\n');
    for (name, result) in sides {
        if let Err(e) = result {
            out.push_str(&format!("\n{name}: no result: {e}"));
        }
    }
    out
}

/// A string field of a flat JSON line (`"device":"NVIDIA H100 (Vulkan)"`, or Python's `"device":
/// "cpu"`).
fn text_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_column_per_side_and_says_why_one_is_missing() {
        let sides: Vec<Side> = vec![
            (
                "diffusers fp16".into(),
                Ok(r#"{"size": 1024, "load": 4.0, "text": 0.1, "encode_image": 0.05, "encode_masked": 0.05, "first_step": 0.5, "step": 0.2, "steps": 30, "decode": 0.3, "total": 7.0, "peak_rss_mib": 3000, "threads": 16, "device": "NVIDIA H100 80GB HBM3", "precision": "fp16", "peak_device_mib": 12000}"#.into()),
            ),
            (
                "ours wgpu f16".into(),
                Ok(r#"{"device":"NVIDIA H100 80GB HBM3 (Vulkan)","precision":"f16","size":1024,"load":8.0,"text":0.2,"encode_image":0.1,"encode_masked":0.1,"first_step":20.0,"step":0.5,"steps":30,"decode":0.6,"total":40.0,"peak_rss_mib":6000,"peak_device_mib":null,"psnr":31.5}"#.into()),
            ),
            ("ours wgpu f32".into(), Err("exit status: 1: Error: out of memory".into())),
        ];
        let t = table("sdxl-inpaint", 1024, 30, &sides);
        assert!(
            t.contains("; diffusers fp16 on NVIDIA H100 80GB HBM3, ours wgpu f16 on NVIDIA H100 80GB HBM3 (Vulkan):"),
            "{t}"
        );
        assert!(
            t.contains("| | diffusers fp16 | ours wgpu f16 | ours wgpu f32 | ours wgpu f16 / diffusers fp16 | ours wgpu f32 / diffusers fp16 |"),
            "{t}"
        );
        assert!(
            t.contains("| model load (s) | 4.00 | 8.00 | — | 2.00× | — |"),
            "{t}"
        );
        assert!(
            t.contains("| median step after the first (s) | 0.20 | 0.50 | — | 2.50× | — |"),
            "{t}"
        );
        assert!(t.contains("| steps | 30 | 30 | — | — | — |"), "{t}");
        assert!(
            t.contains("| device memory reserved, peak (MiB) | 12000.00 | — | — | — | — |"),
            "{t}"
        );
        assert!(
            t.contains("| PSNR against diffusers' image (dB) | — | 31.5 | — | | |"),
            "{t}"
        );
        assert!(
            t.contains("ours wgpu f32: no result: exit status: 1: Error: out of memory"),
            "{t}"
        );
        // Every table row has the same number of cells.
        let cells: Vec<usize> = t
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.matches('|').count())
            .collect();
        assert!(cells.iter().all(|&c| c == cells[0]), "{cells:?}\n{t}");
    }
}
