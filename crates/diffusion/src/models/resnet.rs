//! diffusers' `ResnetBlock2D` (time-conditioned in the UNet, without time in the VAE) and the
//! `Downsample2D` / `Upsample2D` between resolutions.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::weights::{WeightsError, store::Weights};

pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// `temb`: the width of the time embedding, or `None` for the VAE's blocks.
    pub fn load(
        w: &mut Weights,
        p: &str,
        c_in: usize,
        c_out: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self, WeightsError> {
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(w, &format!("{p}.norm1"), groups, c_in, eps)?,
            conv1: Conv2d::load(w, &format!("{p}.conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj: match temb {
                Some(t) => Some(Linear::load(
                    w,
                    &format!("{p}.time_emb_proj"),
                    t,
                    c_out,
                    true,
                )?),
                None => None,
            },
            norm2: GroupNorm::load(w, &format!("{p}.norm2"), groups, c_out, eps)?,
            conv2: Conv2d::load(w, &format!("{p}.conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut: if c_in != c_out {
                Some(Conv2d::load(
                    w,
                    &format!("{p}.conv_shortcut"),
                    c_in,
                    c_out,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
        })
    }

    /// `temb`: the time embedding, already through the SiLU every block applies to it.
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let mut h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(t.clone());
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        let x = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        x + h
    }
}

/// A stride-2 3×3 convolution (`downsamplers.0.conv`); the VAE encoder pads asymmetrically.
pub struct Downsample2D {
    conv: Conv2d,
    /// The VAE's `padding=0` downsampler pads `(0, 1, 0, 1)` by hand first.
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn load(w: &mut Weights, p: &str, c: usize, padding: usize) -> Result<Self, WeightsError> {
        Ok(Downsample2D {
            conv: Conv2d::load(w, &format!("{p}.conv"), c, c, 3, 2, padding)?,
            pad_right_bottom: padding == 0,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = if self.pad_right_bottom {
            // Zeros of x's own dtype and device: one column on the right, then one row below.
            let column = x.clone().narrow(3, 0, 1).zeros_like();
            let x = Tensor::cat(vec![x, column], 3);
            let row = x.clone().narrow(2, 0, 1).zeros_like();
            Tensor::cat(vec![x, row], 2)
        } else {
            x
        };
        self.conv.forward(x)
    }
}

/// Nearest-neighbour upsampling to a size, then a 3×3 convolution (`upsamplers.0.conv`).
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn load(w: &mut Weights, p: &str, c: usize) -> Result<Self, WeightsError> {
        Ok(Upsample2D {
            conv: Conv2d::load(w, &format!("{p}.conv"), c, c, 3, 1, 1)?,
        })
    }

    /// `size`: the output height and width (twice the input's, unless the input was odd-sized on
    /// the way down).
    pub fn forward(&self, x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        let options = InterpolateOptions {
            mode: InterpolateMode::Nearest,
            align_corners: false,
            output_size: Some(size),
            scale_factor: None,
        };
        let x = interpolate(x, options);
        self.conv.forward(x)
    }
}
