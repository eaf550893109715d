//! `Linear` layers (and GEGLU) as one product.

use burn::tensor::{Tensor, TensorData};

use super::gemm::{PackedB, gemm};
use super::{Operand, SharedMut, activations, floats, gelu, parallel_rows};

/// A linear layer's parameters on the CPU: the weight packed once for [`gemm`] (B = weightᵀ,
/// `[in, out]`), the bias as plain floats.
#[derive(Debug)]
pub struct CpuLinear {
    weight: PackedB,
    bias: Option<Vec<f32>>,
}

impl CpuLinear {
    /// From Burn tensors `weight` `[out, in]` and `bias` `[out]` (consumed).
    pub fn from_tensors(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Result<Self, String> {
        let [d_out, d_in] = weight.dims();
        Ok(CpuLinear {
            weight: PackedB::from_transposed_vec(floats(weight)?, d_in, d_out),
            bias: bias.map(floats).transpose()?,
        })
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.weight.k()
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.weight.n()
    }

    /// `x · weightᵀ + bias` over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let (out, mut dims) = self.product(x);
        dims[D - 1] = self.d_out();
        Tensor::from_data(TensorData::new(out, dims), &device)
    }

    /// diffusers' GEGLU on this layer's output: `hidden, gate = proj(x).chunk(2, dim=-1)`, then
    /// `hidden · gelu(gate)` — in one pass over the product, on every core, with the erf PyTorch's
    /// vectorised CPU kernels use (see [`gelu`]).
    pub fn geglu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let (product, mut dims) = self.product(x);
        let half = self.d_out() / 2;
        let mut out = vec![0.0; product.len() / 2];
        parallel_rows(&product, &mut out, self.d_out(), half, |src, dst| {
            let (hidden, gate) = src.split_at(half);
            for ((d, h), g) in dst.iter_mut().zip(hidden).zip(gate) {
                *d = h * gelu(*g);
            }
        });
        dims[D - 1] = half;
        Tensor::from_data(TensorData::new(out, dims), &device)
    }

    /// The product as row-major floats, and the input's dims.
    fn product<const D: usize>(&self, x: Tensor<D>) -> (Vec<f32>, [usize; D]) {
        let dims = x.dims();
        let (k, n) = (self.d_in(), self.d_out());
        assert_eq!(
            dims[D - 1],
            k,
            "linear layer: input has {} features, the layer takes {k}",
            dims[D - 1],
        );
        let rows = dims[..D - 1].iter().product::<usize>();
        let a = &activations(x)[..];
        let mut out = Vec::with_capacity(rows * n);
        // SAFETY: A is rows×k row-major (`a.len() == rows * k`, checked by the shape); C is the
        // rows×n row-major capacity of `out`, ours alone, every element of which `gemm` writes
        // (without `accumulate` it never reads C) before the length is set.
        unsafe {
            gemm(
                rows,
                Operand::new(a, k, 1),
                &self.weight,
                self.bias.as_deref(),
                false,
                SharedMut(out.as_mut_ptr()),
                n as isize,
                1,
                true,
            );
            out.set_len(rows * n);
        }
        (out, dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::values;
    use burn::tensor::Device;
    use burn::tensor::module::linear;

    /// The CPU path against Burn's own `linear` on the same device, with and without bias, for
    /// a batch of 3-d inputs.
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
            let cpu = CpuLinear::from_tensors(w.clone(), bias).unwrap();
            let got = cpu.forward(x.clone()).into_data();
            assert_eq!(got.shape(), want.shape());
            got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-5));
        }
    }

    /// The fused GEGLU against Burn's chunk + exact `gelu` on the same device.
    #[test]
    fn geglu_matches_burn() {
        let device = Device::flex();
        let (d_in, d_out) = (19, 2 * 300);
        let w = Tensor::<2>::from_data(
            TensorData::new(values(d_out * d_in, 4), [d_out, d_in]),
            &device,
        );
        let b = Tensor::<1>::from_data(TensorData::new(values(d_out, 5), [d_out]), &device);
        // Enough rows to take the threaded path.
        let x = Tensor::<3>::from_data(
            TensorData::new(values(2 * 120 * d_in, 6), [2, 120, d_in]),
            &device,
        );
        let h = linear(x.clone(), w.clone().transpose(), Some(b.clone()));
        let half = d_out / 2;
        let want = (h.clone().narrow(2, 0, half)
            * burn::tensor::activation::gelu(h.narrow(2, half, half)))
        .into_data();
        let got = CpuLinear::from_tensors(w, Some(b))
            .unwrap()
            .geglu(x)
            .into_data();
        assert_eq!(got.shape(), want.shape());
        // Burn evaluates erf differently: the two differ by the approximation's 1.5e-7, scaled by
        // |hidden · gate| / 2 (≤ 200 here).
        got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::rel_abs(1e-6, 3e-5));
    }
}
