//! Shared by the parity tests: the committed fixtures, their reference tensors, the devices to
//! test on, and the comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use fresco_diffusion::weights::WeightsError;
use fresco_diffusion::weights::convert::{to_f32, to_i64};
use fresco_diffusion::weights::safetensors::{Dtype, SafetensorsStream};

/// `tests/fixtures/<rel>` at the top of the repository.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

/// A reference tensor, on the host.
#[derive(Debug, Clone)]
pub struct Reference {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    pub ints: Vec<i64>,
}

impl Reference {
    /// Rows of an integer `[rows, cols]` tensor (token ids).
    pub fn int_rows(&self) -> Vec<Vec<i64>> {
        self.ints
            .chunks(self.shape[1])
            .map(<[i64]>::to_vec)
            .collect()
    }

    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        let shape: [usize; D] = self.shape.clone().try_into().expect("rank");
        Tensor::<D>::from_data(
            burn::tensor::TensorData::new(self.values.clone(), shape),
            device,
        )
    }
}

/// Every tensor of a reference file.
pub fn references(rel: &str) -> HashMap<String, Reference> {
    let path = fixture(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = HashMap::new();
    let mut stream = SafetensorsStream::new(rel);
    stream
        .feed(&bytes, &mut |t| {
            let (values, ints) = match t.info.dtype {
                Dtype::I64 => (Vec::new(), to_i64(&t.bytes)),
                d => (to_f32(&t.bytes, d), Vec::new()),
            };
            out.insert(
                t.info.name.clone(),
                Reference {
                    shape: t.info.shape.clone(),
                    values,
                    ints,
                },
            );
            Ok::<_, WeightsError>(())
        })
        .unwrap();
    stream.finish().unwrap();
    out
}

/// The devices the parity tests run on: Burn's CPU backend (burn-flex) always, and wgpu (WGSL on
/// Vulkan; lavapipe in CI) unless FRESCO_TEST_NO_WGPU is set.
pub fn devices() -> Vec<(&'static str, Device)> {
    let mut d = vec![("cpu", Device::flex())];
    if std::env::var_os("FRESCO_TEST_NO_WGPU").is_none() {
        d.push((
            "wgpu",
            Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        ));
    }
    d
}

/// `max |got - want| / max |want|`: the error relative to the tensor's own scale.
pub fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "element counts differ");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    if got.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    diff / scale
}

/// Asserts a tensor matches its reference in shape and to `tol` relative error.
pub fn assert_close<const D: usize>(what: &str, got: Tensor<D>, want: &Reference, tol: f32) -> f32 {
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let got: Vec<f32> = got
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 data");
    let err = relative_error(&got, &want.values);
    eprintln!("{what}: relative error {err:.2e}");
    assert!(err <= tol, "{what}: relative error {err:.3e} > {tol:.0e}");
    err
}
