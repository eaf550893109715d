//! The schedulers' latent arithmetic on Burn tensors: each operation is the elementwise op
//! torch's eager mode runs (products rounded before the sum, no fused multiply-add).

use burn::tensor::Tensor;

use crate::schedulers::Latents;

impl Latents for Tensor<4> {
    fn scale(&self, a: f32) -> Self {
        self.clone().mul_scalar(a)
    }

    fn add(&self, other: &Self) -> Self {
        self.clone() + other.clone()
    }

    fn sub(&self, other: &Self) -> Self {
        self.clone() - other.clone()
    }

    fn axpby(a: f32, x: &Self, b: f32, y: &Self) -> Self {
        x.clone().mul_scalar(a) + y.clone().mul_scalar(b)
    }

    fn clamp(&self, min: f32, max: f32) -> Self {
        self.clone().clamp(min, max)
    }
}
