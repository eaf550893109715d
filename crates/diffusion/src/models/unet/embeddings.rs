//! The UNet's embeddings of time: diffusers' sinusoidal `get_timestep_embedding` (of the
//! denoising timestep, and of SDXL's time ids) and the `TimestepEmbedding` MLP on top of it.

use burn::tensor::{Device, Tensor, TensorData, activation};

use crate::nn::Linear;
use crate::weights::{WeightsError, store::Weights};

/// diffusers' `get_timestep_embedding` (max period 10000, scale 1), computed on the host in f32
/// exactly as torch does it, with sin and cos rounded from f64: `[n, dim]` row-major.
pub fn timestep_embedding(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = (-(10000f64.ln()) as f32) * i as f32;
            (exponent / (half as f32 - freq_shift as f32)).exp()
        })
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|f| t * f).collect();
        let sin = args.iter().map(|a| (*a as f64).sin() as f32);
        let cos = args.iter().map(|a| (*a as f64).cos() as f32);
        let row: Vec<f32> = if flip_sin_to_cos {
            cos.chain(sin).collect()
        } else {
            sin.chain(cos).collect()
        };
        out.extend(row);
        out.extend(std::iter::repeat_n(0.0, dim - 2 * half));
    }
    out
}

/// `TimestepEmbedding`: linear, SiLU, linear.
pub(super) struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub(super) fn load(
        w: &mut Weights,
        p: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Self, WeightsError> {
        Ok(TimestepEmbedding {
            linear_1: Linear::load(w, &format!("{p}.linear_1"), d_in, d_out, true)?,
            linear_2: Linear::load(w, &format!("{p}.linear_2"), d_out, d_out, true)?,
        })
    }

    pub(super) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2
            .forward(activation::silu(self.linear_1.forward(x)))
    }
}

/// A tensor from values computed on the host.
pub(super) fn host_tensor<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestep_embeddings_match_diffusers_formula() {
        // dim 4, flip: [cos(t), cos(t·1e-4^(1/2)), sin(t), sin(t·1e-2)] for half=2, shift 0.
        let e = timestep_embedding(&[1.0], 4, true, 0.0);
        let f1 = ((-(10000f64.ln()) as f32) / 2.0).exp();
        assert!((e[0] - 1f32.cos()).abs() < 1e-7);
        assert!((e[1] - f1.cos()).abs() < 1e-7);
        assert!((e[2] - 1f32.sin()).abs() < 1e-7);
        let unflipped = timestep_embedding(&[1.0], 4, false, 0.0);
        assert_eq!(unflipped[0], e[2]);
        assert_eq!(timestep_embedding(&[3.0, 5.0], 5, true, 1.0).len(), 10);
    }
}
