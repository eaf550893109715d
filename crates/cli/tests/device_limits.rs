//! A model that cannot run on the device is refused before anything loads: `fresco inpaint
//! --device wgpu` reads every weight file's header first and compares the largest tensor with the
//! adapter's largest storage binding (lavapipe binds 128 MiB). The model is the tiny SDXL-inpaint
//! one, its UNet's weights replaced by a header alone that lists one tensor of 1.6 GB — the data
//! is never there, and never needed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A safetensors header listing one f32 tensor of `numel` elements, and no data.
fn header_only(numel: u64) -> Vec<u8> {
    let mut json = format!(
        r#"{{"conv_in.weight":{{"dtype":"F32","shape":[{numel}],"data_offsets":[0,{}]}}}}"#,
        numel * 4
    );
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out
}

fn inpaint(model: &Path, device: &str, out: &Path) -> (bool, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_fresco"))
        .args(["inpaint", "--device", device, "--model"])
        .arg(model)
        .arg("--image")
        .arg(fixture("pipelines/image32.png"))
        .arg("--mask")
        .arg(fixture("pipelines/mask32.png"))
        .args(["--prompt", "a fox", "--steps", "2", "--seed", "1", "--out"])
        .arg(out)
        .output()
        .unwrap();
    (
        run.status.success(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

#[test]
fn a_tensor_larger_than_the_gpu_binds_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("too-wide");
    copy_dir(&fixture("tiny-sdxl-inpaint"), &model);
    std::fs::write(
        model.join("unet/diffusion_pytorch_model.safetensors"),
        header_only(400_000_000),
    )
    .unwrap();
    let out = dir.path().join("out.png");

    let (ok, stderr) = inpaint(&model, "wgpu", &out);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(
            "unet/diffusion_pytorch_model.safetensors: tensor \"conv_in.weight\" [400000000] needs 1600.0 MB in one GPU buffer and this device binds at most"
        ) && stderr.contains("the model cannot run on this GPU in f32"),
        "{stderr}"
    );
    // Refused from the headers: no component was loaded, no image written.
    assert!(!stderr.contains("loading the text encoder"), "{stderr}");
    assert!(!out.exists());

    // The CPU binds any size: there the same model gets as far as reading the UNet, whose data
    // is missing — a different error, naming the truncated file.
    let (ok, stderr) = inpaint(&model, "cpu", &out);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("loading the UNet"), "{stderr}");
    assert!(!stderr.contains("GPU buffer"), "{stderr}");
}
