//! The CPU device's hot kernel: `Linear` layers as one `sgemm` of `matrixmultiply`.
//!
//! Most of a UNet's time on the CPU is its linear layers (the transformer blocks' projections and
//! feed-forwards). Burn's CPU backend (burn-flex) multiplies with the `gemm` crate, which on this
//! project's 2-core AVX2 machine runs those shapes (512–2048 tokens × 128–2048 features) at
//! 30–44 GFLOP/s, where `matrixmultiply`'s sgemm runs them at 74–79 — as fast as PyTorch's MKL
//! there (`engine_bench gemm` prints both). So on the CPU device, in f32, a `Linear` keeps its
//! weight as plain row-major floats (PyTorch's `[out, in]`, not a Burn tensor, so the weights are
//! held once) and multiplies with sgemm; the input and output cross into Burn without copies
//! (burn-flex hands over a uniquely owned contiguous buffer and adopts a `Vec`).

use std::sync::Arc;

use burn::tensor::{DType, Device, Tensor, TensorData};

/// Whether `Linear`s built on `device` in `dtype` take the sgemm path.
pub fn takes_sgemm(device: &Device, dtype: DType) -> bool {
    dtype == DType::F32 && *device == Device::flex()
}

/// A linear layer's parameters on the CPU: `weight_t` is `[in, out]` row-major (the transpose of
/// PyTorch's `[out, in]`: sgemm packs a row-major right-hand side fastest).
#[derive(Debug)]
pub struct CpuLinear {
    pub weight_t: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub d_in: usize,
    pub d_out: usize,
}

impl CpuLinear {
    /// From Burn tensors `weight` `[out, in]` and `bias` `[out]` (consumed; their buffers are
    /// taken over without a copy where Burn allows).
    pub fn from_tensors(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Result<Self, String> {
        let [d_out, d_in] = weight.dims();
        let w = floats(weight)?;
        let mut weight_t = vec![0.0; w.len()];
        for (o, row) in w.chunks_exact(d_in.max(1)).enumerate() {
            for (i, v) in row.iter().enumerate() {
                weight_t[i * d_out + o] = *v;
            }
        }
        Ok(CpuLinear {
            weight_t,
            bias: bias.map(floats).transpose()?,
            d_in,
            d_out,
        })
    }

    /// The layer restricted to outputs `start..start + len` (a contiguous block of rows).
    pub fn rows(&self, start: usize, len: usize) -> CpuLinear {
        CpuLinear {
            weight_t: self
                .weight_t
                .chunks_exact(self.d_out.max(1))
                .flat_map(|row| &row[start..start + len])
                .copied()
                .collect(),
            bias: self.bias.as_ref().map(|b| b[start..start + len].to_vec()),
            d_in: self.d_in,
            d_out: len,
        }
    }

    /// `x · weightᵀ + bias` over the last dimension of `x`.
    pub fn forward<const D: usize>(self: &Arc<Self>, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let mut dims = x.dims();
        assert_eq!(
            dims[D - 1],
            self.d_in,
            "linear layer: input has {} features, the layer takes {}",
            dims[D - 1],
            self.d_in
        );
        let rows = dims[..D - 1].iter().product::<usize>();
        let input = x.into_data();
        let a = input
            .as_slice::<f32>()
            .expect("the sgemm path is taken only for f32 tensors");
        let (k, n) = (self.d_in, self.d_out);
        let mut out = match &self.bias {
            Some(b) => b.repeat(rows),
            None => vec![0.0; rows * n],
        };
        let beta = if self.bias.is_some() { 1.0 } else { 0.0 };
        if rows > 0 && n > 0 {
            // SAFETY: A is rows×k row-major (`a.len() == rows * k`, checked by the shape), B is
            // k×n row-major, C is rows×n row-major and exclusively ours; all three outlive the
            // call.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    self.weight_t.as_ptr(),
                    n as isize,
                    1,
                    beta,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
        dims[D - 1] = n;
        Tensor::from_data(TensorData::new(out, dims), &device)
    }
}

fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| format!("expected f32 weights: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::linear;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// The sgemm path against Burn's own `linear` on the same device, with and without bias, for
    /// a batch of 3-d inputs and for a half of the rows (as GEGLU splits its projection).
    #[test]
    fn sgemm_linear_matches_burn_linear() {
        let device = Device::flex();
        let (d_in, d_out) = (37, 29);
        let w = Tensor::<2>::from_data(
            TensorData::new(values(d_out * d_in, 1), [d_out, d_in]),
            &device,
        );
        let b = Tensor::<1>::from_data(TensorData::new(values(d_out, 2), [d_out]), &device);
        let x = Tensor::<3>::from_data(
            TensorData::new(values(2 * 5 * d_in, 3), [2, 5, d_in]),
            &device,
        );
        for bias in [Some(b.clone()), None] {
            let want = linear(x.clone(), w.clone().transpose(), bias.clone()).into_data();
            let cpu = Arc::new(CpuLinear::from_tensors(w.clone(), bias).unwrap());
            let got = cpu.forward(x.clone()).into_data();
            assert_eq!(got.shape(), want.shape());
            got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-5));
        }
        let half = Arc::new(
            CpuLinear::from_tensors(w.clone(), Some(b.clone()))
                .unwrap()
                .rows(10, 7),
        );
        let want = linear(
            x.clone(),
            w.narrow(0, 10, 7).transpose(),
            Some(b.narrow(0, 10, 7)),
        )
        .into_data();
        half.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-5));
    }
}
