//! diffusers' `UNet2DConditionModel` for SD 1.x, 2.x and SDXL: any number of `DownBlock2D` /
//! `CrossAttnDownBlock2D`, the `UNetMidBlock2DCrossAttn`, `UpBlock2D` / `CrossAttnUpBlock2D`,
//! 4 or 9 input channels, and SDXL's `text_time` added conditioning.

mod blocks;
pub mod config;
mod embeddings;

use burn::tensor::{Tensor, activation};

use blocks::{DownBlock, MidBlock, ResnetSpec, UpBlock};
pub use config::{BlockKind, UNetConfig, UNetPlan};
pub use embeddings::timestep_embedding;
use embeddings::{TimestepEmbedding, host_tensor};

use super::transformer::TransformerSpec;
use crate::nn::{Conv2d, GroupNorm};
use crate::weights::{WeightsError, store::Weights};

pub struct UNet2DConditionModel {
    pub plan: UNetPlan,
    /// Attention scores in f32 whatever the precision (`upcast_attention`).
    pub upcast_attention: bool,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<TimestepEmbedding>,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
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

        let resnet = ResnetSpec {
            temb,
            groups: g,
            eps,
        };

        let mut down = Vec::with_capacity(n);
        let mut c_out = c0;
        for i in 0..n {
            let c_in = c_out;
            c_out = plan.channels[i];
            let attention = (plan.down[i] == BlockKind::CrossAttn).then(|| {
                spec(
                    c_out,
                    plan.heads[i],
                    plan.transformer_layers[i],
                    plan.cross_attention_dim[i],
                )
            });
            down.push(DownBlock::load(
                w,
                &format!("down_blocks.{i}"),
                c_in,
                c_out,
                plan.layers_per_block[i],
                resnet,
                attention,
                (i + 1 < n).then_some(plan.downsample_padding),
            )?);
        }

        let c_mid = plan.channels[n - 1];
        let mid_spec = spec(
            c_mid,
            plan.heads[n - 1],
            plan.transformer_layers[n - 1],
            plan.cross_attention_dim[n - 1],
        );
        let mid = MidBlock::load(w, c_mid, resnet, mid_spec)?;

        let rev: Vec<usize> = plan.channels.iter().rev().copied().collect();
        let rev_heads: Vec<usize> = plan.heads.iter().rev().copied().collect();
        let rev_layers: Vec<usize> = plan.layers_per_block.iter().rev().copied().collect();
        let rev_cross: Vec<usize> = plan.cross_attention_dim.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut c_out = rev[0];
        for i in 0..n {
            let prev = c_out;
            c_out = rev[i];
            let attention = (plan.up[i] == BlockKind::CrossAttn).then(|| {
                spec(
                    c_out,
                    rev_heads[i],
                    plan.reverse_transformer_layers[i],
                    rev_cross[i],
                )
            });
            up.push(UpBlock::load(
                w,
                &format!("up_blocks.{i}"),
                prev,
                c_out,
                rev[(i + 1).min(n - 1)],
                rev_layers[i] + 1,
                resnet,
                attention,
                i + 1 < n,
            )?);
        }

        let conv_norm_out = GroupNorm::load(w, "conv_norm_out", g, c0, eps)?;
        let conv_out = Conv2d::load(w, "conv_out", c0, plan.out_channels, 3, 1, 1)?;
        Ok(UNet2DConditionModel {
            plan,
            upcast_attention: upcast,
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
    /// [`UNet2DConditionModel::forward`] on `rows` batch rows at a time (the memory planner's
    /// choice when the whole batch's activations outgrow a device's buffers): the rows are
    /// independent, so the result is the whole batch's.
    pub fn forward_in_slices(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        encoder_hidden_states: &Tensor<3>,
        added: Option<&AddedConditions>,
        rows: usize,
    ) -> Result<Tensor<4>, WeightsError> {
        let batch = sample.dims()[0];
        if rows == 0 || rows >= batch {
            return self.forward(sample, timesteps, encoder_hidden_states, added);
        }
        let mut outs = Vec::with_capacity(batch.div_ceil(rows));
        for start in (0..batch).step_by(rows) {
            let len = rows.min(batch - start);
            let ts: &[f32] = if timesteps.len() == batch {
                &timesteps[start..start + len]
            } else {
                timesteps
            };
            let added = added.map(|a| AddedConditions {
                text_embeds: a.text_embeds.clone().narrow(0, start, len),
                time_ids: a.time_ids[start..start + len].to_vec(),
            });
            outs.push(self.forward(
                sample.clone().narrow(0, start, len),
                ts,
                &encoder_hidden_states.clone().narrow(0, start, len),
                added.as_ref(),
            )?);
        }
        Ok(Tensor::cat(outs, 0))
    }

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
            h = block.forward(h, &temb, encoder_hidden_states, &mut skips);
        }
        h = self.mid.forward(h, &temb, encoder_hidden_states);
        for block in &self.up {
            h = block.forward(h, &temb, encoder_hidden_states, &mut skips)?;
        }
        let h = self.conv_norm_out.forward_silu(h);
        Ok(self.conv_out.forward(h))
    }
}
