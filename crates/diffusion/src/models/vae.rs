//! diffusers' `AutoencoderKL`: the encoder (image → latent mean and log-variance) and the decoder
//! (latents → image), any number of blocks, built from `config.json`.

use burn::tensor::Tensor;
use serde::Deserialize;

use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::nn::{Conv2d, GroupNorm, Linear, attention};
use crate::weights::WeightsError;
use crate::weights::store::{Precision, Weights};

const EPS: f64 = 1e-6;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl VaeConfig {
    /// The precision to load this VAE in, given the one the rest of the model runs in. A VAE
    /// marked `force_upcast` (SD's and SDXL's original VAEs, whose decoder activations overflow
    /// f16's range of ±65504 and turn into NaN/black images) runs in f32 as in diffusers; a VAE
    /// fixed for f16 (e.g. `madebyollin/sdxl-vae-fp16-fix`, `force_upcast: false`) follows the model.
    pub fn precision(&self, model: Precision) -> Precision {
        if self.force_upcast {
            Precision::F32
        } else {
            model
        }
    }

    /// `2^(blocks − 1)`: pixels per latent (8 for every SD and SDXL VAE).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len().max(1) - 1)
    }

    pub fn from_json(json: &str) -> Result<Self, WeightsError> {
        let c: VaeConfig = crate::weights::parse_config(json, "vae config.json", &[])?;
        let n = c.block_out_channels.len();
        if n == 0 || c.down_block_types.len() != n || c.up_block_types.len() != n {
            return Err(WeightsError::Config(
                "vae config.json: block types and block_out_channels must agree".into(),
            ));
        }
        if c.down_block_types.iter().any(|t| t != "DownEncoderBlock2D")
            || c.up_block_types.iter().any(|t| t != "UpDecoderBlock2D")
        {
            return Err(WeightsError::Config(
                "vae config.json: only DownEncoderBlock2D/UpDecoderBlock2D are supported".into(),
            ));
        }
        if c.act_fn != "silu" {
            return Err(WeightsError::Config(format!(
                "vae config.json: act_fn {:?} is not supported",
                c.act_fn
            )));
        }
        Ok(c)
    }
}

/// The mid block's single-head self-attention with its own group norm and a residual.
struct SpatialAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl SpatialAttention {
    fn load(w: &mut Weights, p: &str, c: usize, groups: usize) -> Result<Self, WeightsError> {
        // Checkpoints saved before diffusers 0.14 name these query/key/value/proj_attn.
        let legacy =
            !w.contains(&format!("{p}.to_q.weight")) && w.contains(&format!("{p}.query.weight"));
        let name = |new: &str, old: &str| format!("{p}.{}", if legacy { old } else { new });
        Ok(SpatialAttention {
            norm: GroupNorm::load(w, &name("group_norm", "group_norm"), groups, c, EPS)?,
            q: Linear::load(w, &name("to_q", "query"), c, c, true)?,
            k: Linear::load(w, &name("to_k", "key"), c, c, true)?,
            v: Linear::load(w, &name("to_v", "value"), c, c, true)?,
            out: Linear::load(w, &name("to_out.0", "proj_attn"), c, c, true)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let t = self.norm.forward(x).reshape([b, c, h * w]).swap_dims(1, 2);
        let (q, k, v) = (
            self.q.forward(t.clone()),
            self.k.forward(t.clone()),
            self.v.forward(t),
        );
        // Scores over up to (h·w)² positions overflow f16: always in f32, as diffusers upcasts.
        let a = attention(q, k, v, 1, true);
        let a = self.out.forward(a);
        a.swap_dims(1, 2).reshape([b, c, h, w]) + residual
    }
}

struct MidBlock {
    first: ResnetBlock2D,
    attention: Option<SpatialAttention>,
    second: ResnetBlock2D,
}

impl MidBlock {
    fn load(
        w: &mut Weights,
        p: &str,
        c: usize,
        groups: usize,
        attention: bool,
    ) -> Result<Self, WeightsError> {
        Ok(MidBlock {
            first: ResnetBlock2D::load(w, &format!("{p}.resnets.0"), c, c, None, groups, EPS)?,
            attention: if attention {
                Some(SpatialAttention::load(
                    w,
                    &format!("{p}.attentions.0"),
                    c,
                    groups,
                )?)
            } else {
                None
            },
            second: ResnetBlock2D::load(w, &format!("{p}.resnets.1"), c, c, None, groups, EPS)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = self.first.forward(x, None);
        if let Some(a) = &self.attention {
            h = a.forward(h);
        }
        self.second.forward(h, None)
    }
}

pub struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<(Vec<ResnetBlock2D>, Option<Downsample2D>)>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

pub struct Decoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: MidBlock,
    blocks: Vec<(Vec<ResnetBlock2D>, Option<Upsample2D>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

pub struct AutoencoderKL {
    pub config: VaeConfig,
    pub encoder: Encoder,
    pub decoder: Decoder,
}

/// The encoder's output: a diagonal Gaussian over latents.
pub struct LatentDistribution {
    pub mean: Tensor<4>,
    /// Clamped to [-30, 20], as diffusers does.
    pub logvar: Tensor<4>,
}

impl LatentDistribution {
    pub fn std(&self) -> Tensor<4> {
        (self.logvar.clone() * 0.5).exp()
    }
}

impl AutoencoderKL {
    pub fn load(config: VaeConfig, w: &mut Weights) -> Result<Self, WeightsError> {
        let ch = config.block_out_channels.clone();
        let n = ch.len();
        let g = config.norm_num_groups;
        let z = config.latent_channels;

        let mut blocks = Vec::with_capacity(n);
        let mut c_out = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let c_in = c_out;
            c_out = c;
            let p = format!("encoder.down_blocks.{i}");
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::load(
                        w,
                        &format!("{p}.resnets.{j}"),
                        if j == 0 { c_in } else { c_out },
                        c_out,
                        None,
                        g,
                        EPS,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let down = if i + 1 < n {
                Some(Downsample2D::load(
                    w,
                    &format!("{p}.downsamplers.0"),
                    c_out,
                    0,
                )?)
            } else {
                None
            };
            blocks.push((resnets, down));
        }
        let encoder = Encoder {
            conv_in: Conv2d::load(w, "encoder.conv_in", config.in_channels, ch[0], 3, 1, 1)?,
            blocks,
            mid: MidBlock::load(
                w,
                "encoder.mid_block",
                ch[n - 1],
                g,
                config.mid_block_add_attention,
            )?,
            norm_out: GroupNorm::load(w, "encoder.conv_norm_out", g, ch[n - 1], EPS)?,
            conv_out: Conv2d::load(w, "encoder.conv_out", ch[n - 1], 2 * z, 3, 1, 1)?,
            quant_conv: if config.use_quant_conv {
                Some(Conv2d::load(w, "quant_conv", 2 * z, 2 * z, 1, 1, 0)?)
            } else {
                None
            },
        };

        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut blocks = Vec::with_capacity(n);
        let mut c_out = rev[0];
        for (i, &c) in rev.iter().enumerate() {
            let prev = c_out;
            c_out = c;
            let p = format!("decoder.up_blocks.{i}");
            let resnets = (0..=config.layers_per_block)
                .map(|j| {
                    ResnetBlock2D::load(
                        w,
                        &format!("{p}.resnets.{j}"),
                        if j == 0 { prev } else { c_out },
                        c_out,
                        None,
                        g,
                        EPS,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let up = if i + 1 < n {
                Some(Upsample2D::load(w, &format!("{p}.upsamplers.0"), c_out)?)
            } else {
                None
            };
            blocks.push((resnets, up));
        }
        let decoder = Decoder {
            post_quant_conv: if config.use_post_quant_conv {
                Some(Conv2d::load(w, "post_quant_conv", z, z, 1, 1, 0)?)
            } else {
                None
            },
            conv_in: Conv2d::load(w, "decoder.conv_in", z, ch[n - 1], 3, 1, 1)?,
            mid: MidBlock::load(
                w,
                "decoder.mid_block",
                ch[n - 1],
                g,
                config.mid_block_add_attention,
            )?,
            blocks,
            norm_out: GroupNorm::load(w, "decoder.conv_norm_out", g, ch[0], EPS)?,
            conv_out: Conv2d::load(w, "decoder.conv_out", ch[0], config.out_channels, 3, 1, 1)?,
        };
        Ok(AutoencoderKL {
            config,
            encoder,
            decoder,
        })
    }

    /// `image`: `[batch, 3, h, w]` in [-1, 1] → the latent distribution at `[batch, z, h/8, w/8]`.
    pub fn encode(&self, image: Tensor<4>) -> LatentDistribution {
        self.distribution(self.moments(image))
    }

    /// The encoder and `quant_conv`: the mean and log-variance side by side, `[batch, 2z, …]`.
    fn moments(&self, image: Tensor<4>) -> Tensor<4> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(image.cast(e.conv_in.dtype()));
        for (resnets, down) in &e.blocks {
            for r in resnets {
                h = r.forward(h, None);
            }
            if let Some(d) = down {
                h = d.forward(h);
            }
        }
        h = e.mid.forward(h);
        h = e.conv_out.forward(e.norm_out.forward_silu(h));
        match &e.quant_conv {
            Some(q) => q.forward(h),
            None => h,
        }
    }

    fn distribution(&self, moments: Tensor<4>) -> LatentDistribution {
        let z = self.config.latent_channels;
        let mean = moments.clone().narrow(1, 0, z);
        let logvar = moments.narrow(1, z, z).clamp(-30.0, 20.0);
        LatentDistribution { mean, logvar }
    }

    /// `latents`: `[batch, z, h, w]` (already divided by the scaling factor) → the image.
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let d = &self.decoder;
        let latents = latents.cast(d.conv_in.dtype());
        let mut h = match &d.post_quant_conv {
            Some(p) => p.forward(latents),
            None => latents,
        };
        h = d.conv_in.forward(h);
        h = d.mid.forward(h);
        for (resnets, up) in &d.blocks {
            for r in resnets {
                h = r.forward(h, None);
            }
            if let Some(u) = up {
                let [_, _, hh, ww] = h.dims();
                h = u.forward(h, [hh * 2, ww * 2]);
            }
        }
        d.conv_out.forward(d.norm_out.forward_silu(h))
    }
}

/// diffusers' `enable_tiling`: the VAE run over overlapping square tiles, each tile's output
/// blended linearly into its upper and left neighbours over a quarter of a tile, so that a
/// large image never holds the whole image's activations at once. Each tile normalises with its
/// own statistics, so the result is close to, not equal to, the untiled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// A tile's side in pixels (diffusers' `tile_sample_min_size`), a multiple of the VAE's scale
    /// factor.
    pub tile: usize,
}

/// diffusers' `tile_overlap_factor`.
const TILE_OVERLAP: f64 = 0.25;

impl Tiling {
    /// How many tiles a `width`×`height` image takes.
    pub fn count(&self, width: usize, height: usize, scale: usize) -> usize {
        let stride = self.latent_stride(scale);
        (height / scale).div_ceil(stride) * (width / scale).div_ceil(stride)
    }

    /// How far apart the decoder's tiles start, in latents (`scale` pixels per latent).
    fn latent_stride(&self, scale: usize) -> usize {
        (((self.tile / scale) as f64 * (1.0 - TILE_OVERLAP)) as usize).max(1)
    }
}

/// Runs `f` over tiles of `x` (`tile` wide, starting every `stride`), blends each output into
/// its upper and left neighbours' over `blend` rows and columns and keeps the first `keep` of
/// each, in diffusers' order (a tile is blended with its neighbours as they were already
/// blended).
fn tiled(
    x: Tensor<4>,
    tile: usize,
    stride: usize,
    blend: usize,
    keep: usize,
    f: impl Fn(Tensor<4>) -> Tensor<4>,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let mut rows: Vec<Vec<Tensor<4>>> = Vec::new();
    for i in (0..h).step_by(stride) {
        let mut row = Vec::new();
        for j in (0..w).step_by(stride) {
            let part = x
                .clone()
                .slice([0..b, 0..c, i..(i + tile).min(h), j..(j + tile).min(w)]);
            row.push(f(part));
        }
        rows.push(row);
    }
    for i in 0..rows.len() {
        for j in 0..rows[i].len() {
            let mut t = rows[i][j].clone();
            if i > 0 {
                t = blend_edge(&rows[i - 1][j], t, blend, 2);
            }
            if j > 0 {
                t = blend_edge(&rows[i][j - 1], t, blend, 3);
            }
            rows[i][j] = t;
        }
    }
    let rows: Vec<Tensor<4>> = rows
        .into_iter()
        .map(|row| {
            let kept: Vec<Tensor<4>> = row
                .into_iter()
                .map(|t| {
                    let [b, c, th, tw] = t.dims();
                    t.slice([0..b, 0..c, 0..keep.min(th), 0..keep.min(tw)])
                })
                .collect();
            Tensor::cat(kept, 3)
        })
        .collect();
    Tensor::cat(rows, 2)
}

/// diffusers' `blend_v` (`dim` 2) and `blend_h` (`dim` 3): the first `extent` rows (columns) of
/// `b` become `a`'s last ones weighted `1 − y/extent` plus their own weighted `y/extent`.
fn blend_edge(a: &Tensor<4>, b: Tensor<4>, extent: usize, dim: usize) -> Tensor<4> {
    let extent = extent.min(a.dims()[dim]).min(b.dims()[dim]);
    if extent == 0 {
        return b;
    }
    let weights: Vec<f32> = (0..extent).map(|y| y as f32 / extent as f32).collect();
    let mut shape = [1, 1, 1, 1];
    shape[dim] = extent;
    let weight = Tensor::<1>::from_data(
        burn::tensor::TensorData::new(weights, [extent]),
        &b.device(),
    )
    .reshape(shape)
    .cast(b.dtype());
    let a_len = a.dims()[dim];
    let from_a = a.clone().narrow(dim, a_len - extent, extent);
    let own = b.clone().narrow(dim, 0, extent);
    let mixed = from_a * (weight.clone().neg() + 1.0) + own * weight;
    let [n, c, h, w] = b.dims();
    let region = if dim == 2 {
        [0..n, 0..c, 0..extent, 0..w]
    } else {
        [0..n, 0..c, 0..h, 0..extent]
    };
    b.slice_assign(region, mixed)
}

impl AutoencoderKL {
    /// [`AutoencoderKL::encode`] in tiles (diffusers' `tiled_encode`): the moments of each
    /// `tiling.tile`-pixel tile, blended.
    pub fn encode_tiled(&self, image: Tensor<4>, tiling: Tiling) -> LatentDistribution {
        let latent = tiling.tile / self.config.scale_factor();
        let stride = ((tiling.tile as f64 * (1.0 - TILE_OVERLAP)) as usize).max(1);
        let blend = (latent as f64 * TILE_OVERLAP) as usize;
        let moments = tiled(image, tiling.tile, stride, blend, latent - blend, |t| {
            self.moments(t)
        });
        self.distribution(moments)
    }

    /// [`AutoencoderKL::decode`] in tiles (diffusers' `tiled_decode`).
    pub fn decode_tiled(&self, latents: Tensor<4>, tiling: Tiling) -> Tensor<4> {
        let latent = tiling.tile / self.config.scale_factor();
        let stride = tiling.latent_stride(self.config.scale_factor());
        let blend = (tiling.tile as f64 * TILE_OVERLAP) as usize;
        tiled(latents, latent, stride, blend, tiling.tile - blend, |t| {
            self.decode(t)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_upcast_keeps_the_vae_in_f32() {
        let upcast = VaeConfig::from_json(r#"{"force_upcast": true}"#).unwrap();
        assert_eq!(upcast.precision(Precision::F16), Precision::F32);
        let fixed = VaeConfig::from_json(r#"{"force_upcast": false}"#).unwrap();
        assert_eq!(fixed.precision(Precision::F16), Precision::F16);
        assert_eq!(fixed.precision(Precision::F32), Precision::F32);
        // diffusers' default when the key is absent is to upcast.
        let absent = VaeConfig::from_json("{}").unwrap();
        assert_eq!(absent.precision(Precision::F16), Precision::F32);
    }
}
