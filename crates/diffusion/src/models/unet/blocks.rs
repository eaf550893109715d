//! The UNet's blocks, as diffusers names them: `DownBlock2D` / `CrossAttnDownBlock2D`
//! ([`DownBlock`]), `UNetMidBlock2DCrossAttn` ([`MidBlock`]) and `UpBlock2D` /
//! `CrossAttnUpBlock2D` ([`UpBlock`]). In the cross-attention kinds a transformer follows each
//! resnet; the down blocks hand every output to the up blocks as a skip connection, which the up
//! blocks take back in reverse order.

use burn::tensor::Tensor;

use super::super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use super::super::transformer::{Transformer2D, TransformerSpec};
use crate::weights::{WeightsError, store::Weights};

/// What every resnet of the UNet shares: the time embedding's width, GroupNorm's groups and ε.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResnetSpec {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
}

impl ResnetSpec {
    fn load(
        &self,
        w: &mut Weights,
        prefix: &str,
        c_in: usize,
        c_out: usize,
    ) -> Result<ResnetBlock2D, WeightsError> {
        ResnetBlock2D::load(
            w,
            prefix,
            c_in,
            c_out,
            Some(self.temb),
            self.groups,
            self.eps,
        )
    }
}

/// `DownBlock2D`, or `CrossAttnDownBlock2D` when it has a transformer spec.
pub(super) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Downsample2D>,
}

impl DownBlock {
    /// `down_blocks.{i}`: `layers` resnets from `c_in` to `c_out` channels, a transformer after
    /// each when `attention` is given, and a downsampler (with its padding) unless it is the last.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        w: &mut Weights,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        layers: usize,
        resnet: ResnetSpec,
        attention: Option<TransformerSpec>,
        downsample_padding: Option<usize>,
    ) -> Result<Self, WeightsError> {
        let mut block = DownBlock {
            resnets: Vec::with_capacity(layers),
            attentions: Vec::new(),
            downsample: None,
        };
        for j in 0..layers {
            let from = if j == 0 { c_in } else { c_out };
            block
                .resnets
                .push(resnet.load(w, &format!("{prefix}.resnets.{j}"), from, c_out)?);
            if let Some(spec) = attention {
                block.attentions.push(Transformer2D::load(
                    w,
                    &format!("{prefix}.attentions.{j}"),
                    spec,
                )?);
            }
        }
        if let Some(padding) = downsample_padding {
            block.downsample = Some(Downsample2D::load(
                w,
                &format!("{prefix}.downsamplers.0"),
                c_out,
                padding,
            )?);
        }
        Ok(block)
    }

    /// Runs the block on `h`, pushing each output (and the downsampled one) onto `skips`.
    pub(super) fn forward(
        &self,
        mut h: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Tensor<4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h, context);
            }
            skips.push(h.clone());
        }
        if let Some(down) = &self.downsample {
            h = down.forward(h);
            skips.push(h.clone());
        }
        h
    }
}

/// `UNetMidBlock2DCrossAttn`: a resnet, then (transformer, resnet) pairs.
pub(super) struct MidBlock {
    first: ResnetBlock2D,
    rest: Vec<(Transformer2D, ResnetBlock2D)>,
}

impl MidBlock {
    /// `mid_block` at `channels`, with one transformer.
    pub(super) fn load(
        w: &mut Weights,
        channels: usize,
        resnet: ResnetSpec,
        attention: TransformerSpec,
    ) -> Result<Self, WeightsError> {
        Ok(MidBlock {
            first: resnet.load(w, "mid_block.resnets.0", channels, channels)?,
            rest: vec![(
                Transformer2D::load(w, "mid_block.attentions.0", attention)?,
                resnet.load(w, "mid_block.resnets.1", channels, channels)?,
            )],
        })
    }

    pub(super) fn forward(&self, h: Tensor<4>, temb: &Tensor<2>, context: &Tensor<3>) -> Tensor<4> {
        let mut h = self.first.forward(h, Some(temb));
        for (attn, resnet) in &self.rest {
            h = resnet.forward(attn.forward(h, context), Some(temb));
        }
        h
    }
}

/// `UpBlock2D`, or `CrossAttnUpBlock2D` when it has a transformer spec.
pub(super) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsample: Option<Upsample2D>,
}

impl UpBlock {
    /// `up_blocks.{i}`: `layers` resnets to `c_out` channels, each taking a skip connection —
    /// `skip_last` channels for the last, `c_out` for the others — after the block before it
    /// (`prev` channels), a transformer after each when `attention` is given, and an upsampler
    /// unless it is the last.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        w: &mut Weights,
        prefix: &str,
        prev: usize,
        c_out: usize,
        skip_last: usize,
        layers: usize,
        resnet: ResnetSpec,
        attention: Option<TransformerSpec>,
        upsample: bool,
    ) -> Result<Self, WeightsError> {
        let mut block = UpBlock {
            resnets: Vec::with_capacity(layers),
            attentions: Vec::new(),
            upsample: None,
        };
        for j in 0..layers {
            let skip = if j == layers - 1 { skip_last } else { c_out };
            let from = if j == 0 { prev } else { c_out };
            block.resnets.push(resnet.load(
                w,
                &format!("{prefix}.resnets.{j}"),
                from + skip,
                c_out,
            )?);
            if let Some(spec) = attention {
                block.attentions.push(Transformer2D::load(
                    w,
                    &format!("{prefix}.attentions.{j}"),
                    spec,
                )?);
            }
        }
        if upsample {
            block.upsample = Some(Upsample2D::load(
                w,
                &format!("{prefix}.upsamplers.0"),
                c_out,
            )?);
        }
        Ok(block)
    }

    /// Runs the block on `h`, taking its skip connections from the end of `skips`.
    pub(super) fn forward(
        &self,
        mut h: Tensor<4>,
        temb: &Tensor<2>,
        context: &Tensor<3>,
        skips: &mut Vec<Tensor<4>>,
    ) -> Result<Tensor<4>, WeightsError> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().ok_or_else(|| {
                WeightsError::Config("the UNet ran out of skip connections".into())
            })?;
            h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(h, context);
            }
        }
        if let Some(upsample) = &self.upsample {
            // To the size of the skip it meets next (odd sizes on the way down round up here).
            let [_, _, sh, sw] = skips.last().map(|s| s.dims()).unwrap_or_else(|| {
                let [b, c, hh, ww] = h.dims();
                [b, c, hh * 2, ww * 2]
            });
            h = upsample.forward(h, [sh, sw]);
        }
        Ok(h)
    }
}
