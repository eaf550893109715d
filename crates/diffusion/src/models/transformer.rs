//! diffusers' `Transformer2DModel` (continuous input) with its `BasicTransformerBlock`s: self
//! attention, cross attention on the text embeddings, and a GEGLU feed-forward.

use burn::tensor::Tensor;

use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear, attention};
use crate::weights::{WeightsError, store::Weights};

/// diffusers' `Attention` as the UNet uses it: no q/k/v biases, an output projection with bias.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    /// Compute scores and softmax in f32 even when the model runs in f16.
    upcast: bool,
}

impl Attention {
    pub fn load(
        w: &mut Weights,
        p: &str,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        upcast: bool,
    ) -> Result<Self, WeightsError> {
        let inner = heads * head_dim;
        Ok(Attention {
            to_q: Linear::load(w, &format!("{p}.to_q"), query_dim, inner, false)?,
            to_k: Linear::load(w, &format!("{p}.to_k"), context_dim, inner, false)?,
            to_v: Linear::load(w, &format!("{p}.to_v"), context_dim, inner, false)?,
            to_out: Linear::load(w, &format!("{p}.to_out.0"), inner, query_dim, true)?,
            heads,
            upcast,
        })
    }

    /// `x`: `[batch, n, query_dim]`; `context`: `[batch, m, context_dim]` (or `x` itself).
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x);
        let k = self.to_k.forward(context.clone());
        let v = self.to_v.forward(context);
        self.to_out
            .forward(attention(q, k, v, self.heads, self.upcast))
    }
}

/// `FeedForward` with `geglu`: `proj` to twice the inner width, `hidden · gelu(gate)`, back down.
struct GegluFeedForward {
    proj: Linear,
    out: Linear,
}

impl GegluFeedForward {
    fn load(w: &mut Weights, p: &str, dim: usize) -> Result<Self, WeightsError> {
        let inner = dim * 4;
        Ok(GegluFeedForward {
            proj: Linear::load(w, &format!("{p}.net.0.proj"), dim, inner * 2, true)?,
            out: Linear::load(w, &format!("{p}.net.2"), inner, dim, true)?,
        })
    }

    /// On a GPU, tokens a chunk at a time when the whole inner activation would exceed
    /// [`crate::nn::FEED_FORWARD_BYTES`].
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, dim] = x.dims();
        let rows = crate::nn::feed_forward_rows(b, n, dim, x.dtype().size() as u64);
        if crate::device::is_cpu(&x.device()) {
            return self.out.forward(self.proj.geglu(x));
        }
        crate::nn::in_token_chunks(x, rows, |part| self.out.forward(self.proj.geglu(part)))
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: GegluFeedForward,
}

/// Where the image goes in and out of the transformer: 1×1 convolutions (SD 1.x) or linear
/// layers (SD 2.x, SDXL: `use_linear_projection`).
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

/// What a `Transformer2DModel` is built from.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub cross_attention_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
    pub upcast_attention: bool,
}

impl Transformer2D {
    pub fn load(w: &mut Weights, p: &str, s: TransformerSpec) -> Result<Self, WeightsError> {
        let c = s.channels;
        let head_dim = c / s.heads;
        let inner = s.heads * head_dim;
        let projection = |w: &mut Weights,
                          name: &str,
                          from: usize,
                          to: usize|
         -> Result<Projection, WeightsError> {
            let prefix = format!("{p}.{name}");
            Ok(if s.linear_projection {
                Projection::Linear(Linear::load(w, &prefix, from, to, true)?)
            } else {
                Projection::Conv(Conv2d::load(w, &prefix, from, to, 1, 1, 0)?)
            })
        };
        let norm = GroupNorm::load(w, &format!("{p}.norm"), s.groups, c, 1e-6)?;
        let proj_in = projection(w, "proj_in", c, inner)?;
        let mut blocks = Vec::with_capacity(s.layers);
        for i in 0..s.layers {
            let b = format!("{p}.transformer_blocks.{i}");
            blocks.push(BasicTransformerBlock {
                norm1: LayerNorm::load(w, &format!("{b}.norm1"), inner, 1e-5)?,
                attn1: Attention::load(
                    w,
                    &format!("{b}.attn1"),
                    inner,
                    inner,
                    s.heads,
                    head_dim,
                    s.upcast_attention,
                )?,
                norm2: LayerNorm::load(w, &format!("{b}.norm2"), inner, 1e-5)?,
                attn2: Attention::load(
                    w,
                    &format!("{b}.attn2"),
                    inner,
                    s.cross_attention_dim,
                    s.heads,
                    head_dim,
                    s.upcast_attention,
                )?,
                norm3: LayerNorm::load(w, &format!("{b}.norm3"), inner, 1e-5)?,
                ff: GegluFeedForward::load(w, &format!("{b}.ff"), inner)?,
            });
        }
        let proj_out = projection(w, "proj_out", inner, c)?;
        Ok(Transformer2D {
            norm,
            proj_in,
            blocks,
            proj_out,
        })
    }

    /// `x`: `[batch, channels, h, w]`; `context`: the text embeddings `[batch, tokens, dim]`.
    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let tokens = |t: Tensor<4>| {
            let ch = t.dims()[1];
            t.swap_dims(1, 2).swap_dims(2, 3).reshape([b, h * w, ch])
        };
        let mut x = match &self.proj_in {
            Projection::Conv(conv) => tokens(conv.forward(x)),
            Projection::Linear(lin) => lin.forward(tokens(x)),
        };
        for blk in &self.blocks {
            x = blk.attn1.forward(blk.norm1.forward(x.clone()), None) + x;
            x = blk
                .attn2
                .forward(blk.norm2.forward(x.clone()), Some(context.clone()))
                + x;
            x = blk.ff.forward(blk.norm3.forward(x.clone())) + x;
        }
        let image = |t: Tensor<3>| {
            let ch = t.dims()[2];
            t.reshape([b, h, w, ch]).swap_dims(2, 3).swap_dims(1, 2)
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(image(x)),
            Projection::Linear(lin) => image(lin.forward(x)),
        };
        debug_assert_eq!(out.dims(), [b, c, h, w]);
        out + residual
    }
}
