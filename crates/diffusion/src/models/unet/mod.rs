//! diffusers' `UNet2DConditionModel` for SD 1.x, 2.x and SDXL: any number of `DownBlock2D` /
//! `CrossAttnDownBlock2D`, the `UNetMidBlock2DCrossAttn`, `UpBlock2D` / `CrossAttnUpBlock2D`,
//! 4 or 9 input channels, and SDXL's `text_time` added conditioning.

pub mod config;

use burn::tensor::{Device, Tensor, TensorData, activation};

pub use config::{BlockKind, UNetConfig, UNetPlan};

use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use super::transformer::{Transformer2D, TransformerSpec};
use crate::nn::{Conv2d, GroupNorm, Linear};
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
struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    fn load(w: &mut Weights, p: &str, d_in: usize, d_out: usize) -> Result<Self, WeightsError> {
        Ok(TimestepEmbedding {
            linear_1: Linear::load(w, &format!("{p}.linear_1"), d_in, d_out, true)?,
            linear_2: Linear::load(w, &format!("{p}.linear_2"), d_out, d_out, true)?,
        })
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2
            .forward(activation::silu(self.linear_1.forward(x)))
    }
}

/// A down or up block: resnets, each followed by a transformer in the cross-attention kinds.
struct Block {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Downsample2D>,
    upsample: Option<Upsample2D>,
}

struct MidBlock {
    first: ResnetBlock2D,
    rest: Vec<(Transformer2D, ResnetBlock2D)>,
}

pub struct UNet2DConditionModel {
    pub plan: UNetPlan,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<TimestepEmbedding>,
    down: Vec<Block>,
    mid: MidBlock,
    up: Vec<Block>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// SDXL's extra conditioning: pooled text embeddings `[batch, dim]` and time ids `[batch, 6]`
/// (original size, crop top-left, target size; or with an aesthetic score).
pub struct AddedConditions {
    pub text_embeds: Tensor<2>,
    /// Per batch row: `original_size + crops_coords_top_left + target_size` (6 values), or
    /// `original_size + crops_coords_top_left + (aesthetic_score,)` (5) for models that ask for it.
    pub time_ids: Vec<Vec<f32>>,
}

impl UNet2DConditionModel {
    pub fn load(config: &UNetConfig, w: &mut Weights) -> Result<Self, WeightsError> {
        let plan = config.plan()?;
        let upcast = config.upcast_attention;
        let n = plan.channels.len();
        let (g, eps, temb) = (plan.groups, plan.eps, plan.time_embed_dim);
        let c0 = plan.channels[0];
        let conv_in = Conv2d::load(w, "conv_in", plan.in_channels, c0, 3, 1, 1)?;
        let time_embedding = TimestepEmbedding::load(w, "time_embedding", c0, temb)?;
        let add_embedding = match plan.text_time {
            Some((_, input)) => Some(TimestepEmbedding::load(w, "add_embedding", input, temb)?),
            None => None,
        };
        let spec = |c: usize, heads: usize, layers: usize, cross: usize| TransformerSpec {
            channels: c,
            heads,
            layers,
            cross_attention_dim: cross,
            groups: g,
            linear_projection: plan.use_linear_projection,
            upcast_attention: upcast,
        };

        let mut down = Vec::with_capacity(n);
        let mut c_out = c0;
        for i in 0..n {
            let c_in = c_out;
            c_out = plan.channels[i];
            let p = format!("down_blocks.{i}");
            let mut block = Block {
                resnets: Vec::new(),
                attentions: Vec::new(),
                downsample: None,
                upsample: None,
            };
            for j in 0..plan.layers_per_block[i] {
                let from = if j == 0 { c_in } else { c_out };
                block.resnets.push(ResnetBlock2D::load(
                    w,
                    &format!("{p}.resnets.{j}"),
                    from,
                    c_out,
                    Some(temb),
                    g,
                    eps,
                )?);
                if plan.down[i] == BlockKind::CrossAttn {
                    let s = spec(
                        c_out,
                        plan.heads[i],
                        plan.transformer_layers[i],
                        plan.cross_attention_dim[i],
                    );
                    block.attentions.push(Transformer2D::load(
                        w,
                        &format!("{p}.attentions.{j}"),
                        s,
                    )?);
                }
            }
            if i + 1 < n {
                block.downsample = Some(Downsample2D::load(
                    w,
                    &format!("{p}.downsamplers.0"),
                    c_out,
                    plan.downsample_padding,
                )?);
            }
            down.push(block);
        }

        let c_mid = plan.channels[n - 1];
        let mid_spec = spec(
            c_mid,
            plan.heads[n - 1],
            plan.transformer_layers[n - 1],
            plan.cross_attention_dim[n - 1],
        );
        let mid = MidBlock {
            first: ResnetBlock2D::load(w, "mid_block.resnets.0", c_mid, c_mid, Some(temb), g, eps)?,
            rest: vec![(
                Transformer2D::load(w, "mid_block.attentions.0", mid_spec)?,
                ResnetBlock2D::load(w, "mid_block.resnets.1", c_mid, c_mid, Some(temb), g, eps)?,
            )],
        };

        let rev: Vec<usize> = plan.channels.iter().rev().copied().collect();
        let rev_heads: Vec<usize> = plan.heads.iter().rev().copied().collect();
        let rev_layers: Vec<usize> = plan.layers_per_block.iter().rev().copied().collect();
        let rev_cross: Vec<usize> = plan.cross_attention_dim.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut c_out = rev[0];
        for i in 0..n {
            let prev = c_out;
            c_out = rev[i];
            let c_in = rev[(i + 1).min(n - 1)];
            let p = format!("up_blocks.{i}");
            let layers = rev_layers[i] + 1;
            let mut block = Block {
                resnets: Vec::new(),
                attentions: Vec::new(),
                downsample: None,
                upsample: None,
            };
            for j in 0..layers {
                let skip = if j == layers - 1 { c_in } else { c_out };
                let from = if j == 0 { prev } else { c_out };
                block.resnets.push(ResnetBlock2D::load(
                    w,
                    &format!("{p}.resnets.{j}"),
                    from + skip,
                    c_out,
                    Some(temb),
                    g,
                    eps,
                )?);
                if plan.up[i] == BlockKind::CrossAttn {
                    let s = spec(
                        c_out,
                        rev_heads[i],
                        plan.reverse_transformer_layers[i],
                        rev_cross[i],
                    );
                    block.attentions.push(Transformer2D::load(
                        w,
                        &format!("{p}.attentions.{j}"),
                        s,
                    )?);
                }
            }
            if i + 1 < n {
                block.upsample = Some(Upsample2D::load(w, &format!("{p}.upsamplers.0"), c_out)?);
            }
            up.push(block);
        }

        let conv_norm_out = GroupNorm::load(w, "conv_norm_out", g, c0, eps)?;
        let conv_out = Conv2d::load(w, "conv_out", c0, plan.out_channels, 3, 1, 1)?;
        Ok(UNet2DConditionModel {
            plan,
            conv_in,
            time_embedding,
            add_embedding,
            down,
            mid,
            up,
            conv_norm_out,
            conv_out,
        })
    }

    /// Predicts the noise (or v) for `sample` `[batch, in_channels, h, w]` at `timesteps` (one per
    /// batch element, or one for all), given the text embeddings `[batch, tokens, dim]` and, for
    /// SDXL, the added conditions.
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        encoder_hidden_states: &Tensor<3>,
        added: Option<&AddedConditions>,
    ) -> Result<Tensor<4>, WeightsError> {
        let [batch, channels, _, _] = sample.dims();
        let device = sample.device();
        // Inputs in the weights' float type (f16 when the model was loaded in f16).
        let dtype = self.conv_in.dtype();
        let sample = sample.cast(dtype);
        let encoder_hidden_states = &encoder_hidden_states.clone().cast(dtype);
        if channels != self.plan.in_channels {
            return Err(WeightsError::Config(format!(
                "the UNet takes {} input channels, got {channels}",
                self.plan.in_channels
            )));
        }
        let timesteps: Vec<f32> = match timesteps.len() {
            1 => vec![timesteps[0]; batch],
            n if n == batch => timesteps.to_vec(),
            n => {
                return Err(WeightsError::Config(format!(
                    "{n} timesteps for a batch of {batch}"
                )));
            }
        };
        let c0 = self.plan.channels[0];
        let t_emb = host_tensor(
            timestep_embedding(
                &timesteps,
                c0,
                self.plan.flip_sin_to_cos,
                self.plan.freq_shift,
            ),
            [batch, c0],
            &device,
        )
        .cast(dtype);
        let mut emb = self.time_embedding.forward(t_emb);
        match (&self.add_embedding, self.plan.text_time, added) {
            (Some(add), Some((dim, _)), Some(a)) => {
                let n = a.time_ids.first().map_or(0, Vec::len);
                if a.time_ids.len() != batch || a.time_ids.iter().any(|r| r.len() != n) {
                    return Err(WeightsError::Config(format!(
                        "{} rows of time ids for a batch of {batch} (each row of one length)",
                        a.time_ids.len()
                    )));
                }
                let flat: Vec<f32> = a.time_ids.iter().flatten().copied().collect();
                let time =
                    timestep_embedding(&flat, dim, self.plan.flip_sin_to_cos, self.plan.freq_shift);
                let time = host_tensor(time, [batch, n * dim], &device).cast(dtype);
                let aug = add.forward(Tensor::cat(
                    vec![a.text_embeds.clone().cast(dtype), time],
                    1,
                ));
                emb = emb + aug;
            }
            (Some(_), _, None) => {
                return Err(WeightsError::Config(
                    "this UNet needs SDXL's added conditions (text_embeds, time_ids)".into(),
                ));
            }
            _ => {}
        }
        // Every resnet applies SiLU to the time embedding before projecting it.
        let temb = activation::silu(emb);

        let mut h = self.conv_in.forward(sample);
        let mut skips = vec![h.clone()];
        for block in &self.down {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(h, Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, encoder_hidden_states);
                }
                skips.push(h.clone());
            }
            if let Some(down) = &block.downsample {
                h = down.forward(h);
                skips.push(h.clone());
            }
        }
        h = self.mid.first.forward(h, Some(&temb));
        for (attn, resnet) in &self.mid.rest {
            h = resnet.forward(attn.forward(h, encoder_hidden_states), Some(&temb));
        }
        for block in &self.up {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| {
                    WeightsError::Config("the UNet ran out of skip connections".into())
                })?;
                h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, encoder_hidden_states);
                }
            }
            if let Some(upsample) = &block.upsample {
                // To the size of the skip it meets next (odd sizes on the way down round up here).
                let [_, _, sh, sw] = skips.last().map(|s| s.dims()).unwrap_or_else(|| {
                    let [b, c, hh, ww] = h.dims();
                    [b, c, hh * 2, ww * 2]
                });
                h = upsample.forward(h, [sh, sw]);
            }
        }
        let h = self.conv_norm_out.forward_silu(h);
        Ok(self.conv_out.forward(h))
    }
}

fn host_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
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
