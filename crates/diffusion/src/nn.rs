//! The layers the models are built from, holding their weights as Burn tensors loaded by name
//! from a checkpoint (PyTorch layouts and names), and running Burn's own ops.

use burn::tensor::module::{attention as burn_attention, conv2d, embedding, layer_norm, linear};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{DType, FloatDType, Int, Tensor, activation};

/// Runs `f` in f32 on an f16 (or bf16) tensor and casts the result back: for normalisations,
/// whose statistics f16 cannot hold (as PyTorch's own kernels accumulate in f32).
fn in_f32<const D: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        f(x)
    } else {
        f(x.cast(FloatDType::F32)).cast(dtype)
    }
}

fn f32_of(t: &Tensor<1>) -> Tensor<1> {
    if t.dtype() == DType::F32 {
        t.clone()
    } else {
        t.clone().cast(FloatDType::F32)
    }
}

use crate::weights::{WeightsError, store::Weights};

/// `torch.nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    kind: LinearKind,
}

#[derive(Debug, Clone)]
// Burn's tensor handles are large (~600 bytes) and a model has a few hundred Linears: not worth a
// box per layer.
#[allow(clippy::large_enum_variant)]
enum LinearKind {
    /// Burn's `linear` on the device; the weight kept as Burn wants it, `[in, out]`.
    Device {
        weight: Tensor<2>,
        bias: Option<Tensor<1>>,
    },
    /// The CPU device in f32: our product (see `crate::cpu`).
    #[cfg(not(target_arch = "wasm32"))]
    Cpu(std::sync::Arc<crate::cpu::CpuLinear>),
}

impl Linear {
    /// Loads `{prefix}.weight` (`[out, in]`, PyTorch's layout) and, if `bias`, `{prefix}.bias`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self, WeightsError> {
        let weight = w.take::<2>(&format!("{prefix}.weight"), [d_out, d_in])?;
        let bias = if bias {
            Some(w.take::<1>(&format!("{prefix}.bias"), [d_out])?)
        } else {
            None
        };
        #[cfg(not(target_arch = "wasm32"))]
        if crate::cpu::takes_cpu_kernels(w, weight.dtype()) {
            let cpu = crate::cpu::CpuLinear::from_tensors(weight, bias)
                .map_err(|e| WeightsError::Config(format!("{prefix}: {e}")))?;
            return Ok(Linear {
                kind: LinearKind::Cpu(std::sync::Arc::new(cpu)),
            });
        }
        Ok(Linear {
            kind: LinearKind::Device {
                weight: weight.transpose(),
                bias,
            },
        })
    }

    /// diffusers' GEGLU on this layer's output: `hidden, gate = proj(x).chunk(2, dim=-1)`, then
    /// `hidden · gelu(gate)` (exact gelu).
    pub fn geglu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.kind {
            LinearKind::Device { .. } => {
                let h = self.forward(x);
                let half = h.dims()[D - 1] / 2;
                let hidden = h.clone().narrow(D - 1, 0, half);
                let gate = h.narrow(D - 1, half, half);
                hidden * activation::gelu(gate)
            }
            #[cfg(not(target_arch = "wasm32"))]
            LinearKind::Cpu(cpu) => cpu.geglu(x),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.kind {
            LinearKind::Device { weight, bias } => linear(x, weight.clone(), bias.clone()),
            #[cfg(not(target_arch = "wasm32"))]
            LinearKind::Cpu(cpu) => cpu.forward(x),
        }
    }
}

/// `torch.nn.Conv2d` with square kernels, equal padding on all sides and no groups.
#[derive(Debug, Clone)]
pub struct Conv2d {
    kind: ConvKind,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // as LinearKind
enum ConvKind {
    /// Burn's `conv2d` on the device.
    Device {
        weight: Tensor<4>,
        bias: Option<Tensor<1>>,
        stride: usize,
        padding: usize,
    },
    /// The CPU device in f32: Winograd or im2col + our product (see `crate::cpu`).
    #[cfg(not(target_arch = "wasm32"))]
    Cpu(std::sync::Arc<crate::cpu::CpuConv2d>),
}

impl Conv2d {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self, WeightsError> {
        let weight = w.take::<4>(&format!("{prefix}.weight"), [c_out, c_in, kernel, kernel])?;
        let bias = Some(w.take::<1>(&format!("{prefix}.bias"), [c_out])?);
        #[cfg(not(target_arch = "wasm32"))]
        if crate::cpu::takes_cpu_kernels(w, weight.dtype()) {
            let cpu = crate::cpu::CpuConv2d::from_tensors(weight, bias, stride, padding)
                .map_err(|e| WeightsError::Config(format!("{prefix}: {e}")))?;
            return Ok(Conv2d {
                kind: ConvKind::Cpu(std::sync::Arc::new(cpu)),
            });
        }
        Ok(Conv2d {
            kind: ConvKind::Device {
                weight,
                bias,
                stride,
                padding,
            },
        })
    }

    /// The float type the layer computes in (inputs are cast to it).
    pub fn dtype(&self) -> DType {
        match &self.kind {
            ConvKind::Device { weight, .. } => weight.dtype(),
            #[cfg(not(target_arch = "wasm32"))]
            ConvKind::Cpu(_) => DType::F32,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.kind {
            ConvKind::Device {
                weight,
                bias,
                stride,
                padding,
            } => {
                let options = ConvOptions::new([*stride; 2], [*padding; 2], [1, 1], 1);
                conv2d(x, weight.clone(), bias.clone(), options)
            }
            #[cfg(not(target_arch = "wasm32"))]
            ConvKind::Cpu(cpu) => cpu.forward(x),
        }
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub gamma: Tensor<1>,
    pub beta: Tensor<1>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &mut Weights, prefix: &str, dim: usize, eps: f64) -> Result<Self, WeightsError> {
        Ok(LayerNorm {
            gamma: w.take::<1>(&format!("{prefix}.weight"), [dim])?,
            beta: w.take::<1>(&format!("{prefix}.bias"), [dim])?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        in_f32(x, |x| {
            layer_norm(x, f32_of(&self.gamma), Some(f32_of(&self.beta)), self.eps)
        })
    }
}

/// `torch.nn.GroupNorm` on `[batch, channels, height, width]`, statistics in f32.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    pub gamma: Tensor<1>,
    pub beta: Tensor<1>,
    pub groups: usize,
    pub eps: f64,
    /// On the CPU device in f32: gamma and beta as floats, for the fused kernel (`crate::cpu`).
    #[cfg(not(target_arch = "wasm32"))]
    cpu: Option<std::sync::Arc<(Vec<f32>, Vec<f32>)>>,
}

impl GroupNorm {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<Self, WeightsError> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(WeightsError::Config(format!(
                "{prefix}: {channels} channels cannot be split into {groups} groups"
            )));
        }
        let gamma = w.take::<1>(&format!("{prefix}.weight"), [channels])?;
        let beta = w.take::<1>(&format!("{prefix}.bias"), [channels])?;
        #[cfg(not(target_arch = "wasm32"))]
        let cpu = if crate::cpu::takes_cpu_kernels(w, gamma.dtype()) {
            let floats = |t: &Tensor<1>| {
                crate::cpu::floats(t.clone())
                    .map_err(|e| WeightsError::Config(format!("{prefix}: {e}")))
            };
            Some(std::sync::Arc::new((floats(&gamma)?, floats(&beta)?)))
        } else {
            None
        };
        Ok(GroupNorm {
            gamma,
            beta,
            groups,
            eps,
            #[cfg(not(target_arch = "wasm32"))]
            cpu,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.run(x, false)
    }

    /// `silu(group_norm(x))`, as every ResNet block and the models' output heads apply it: one
    /// fused pass on the CPU.
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.run(x, true)
    }

    fn run(&self, x: Tensor<4>, silu: bool) -> Tensor<4> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(params) = &self.cpu
            && x.dtype() == DType::F32
        {
            let (gamma, beta) = &**params;
            return crate::cpu::group_norm(x, self.groups, gamma, beta, self.eps, silu);
        }
        let y = in_f32(x, |x| {
            let [b, c, h, w] = x.dims();
            let grouped = x.reshape([b, self.groups, (c / self.groups) * h * w]);
            let (var, mean) = grouped.clone().var_mean_bias(2);
            let normed = (grouped - mean) / (var + self.eps).sqrt();
            let normed = normed.reshape([b, c, h, w]);
            normed * f32_of(&self.gamma).reshape([1, c, 1, 1])
                + f32_of(&self.beta).reshape([1, c, 1, 1])
        });
        if silu { activation::silu(y) } else { y }
    }
}

/// The most bytes of attention scores one device dispatch holds: WebGPU's guaranteed storage
/// binding (128 MiB, `maxStorageBufferBindingSize`'s default) halved, since the softmax writes a
/// second matrix of the same size beside the scores. Attention over more queries than fit is
/// computed a block of query rows at a time ([`attention_blocked`]), so SDXL's 1.3 GB score
/// matrix at 1024² and the VAE's 1 GiB one never exist whole on a GPU.
pub const ATTENTION_SCORE_BYTES: u64 = 64 << 20;

/// The most bytes a feed-forward's inner activations (GEGLU's projection, 8 × the channels per
/// token) take at once on a GPU: more tokens than fit go through a chunk at a time (diffusers'
/// `enable_forward_chunking`; exact, as each token's feed-forward is its own).
pub const FEED_FORWARD_BYTES: u64 = 64 << 20;

/// How many tokens one chunk of a GEGLU feed-forward over `dim` channels takes within
/// [`FEED_FORWARD_BYTES`]: at least one, at most all `tokens`.
pub fn feed_forward_rows(batch: usize, tokens: usize, dim: usize, element: u64) -> usize {
    let per_token = (batch * 8 * dim) as u64 * element;
    ((FEED_FORWARD_BYTES / per_token.max(1)) as usize).clamp(1, tokens.max(1))
}

/// `f` over `x` (`[batch, tokens, dim]`) `rows` tokens at a time, the outputs joined along the
/// tokens: `f(x)` itself for any `f` that treats each token on its own (a feed-forward).
pub fn in_token_chunks(x: Tensor<3>, rows: usize, f: impl Fn(Tensor<3>) -> Tensor<3>) -> Tensor<3> {
    let n = x.dims()[1];
    if rows == 0 || rows >= n {
        return f(x);
    }
    let chunks: Vec<Tensor<3>> = (0..n)
        .step_by(rows)
        .map(|start| f(x.clone().narrow(1, start, rows.min(n - start))))
        .collect();
    Tensor::cat(chunks, 1)
}

/// How many query rows one block of [`attention_blocked`] takes so that its scores
/// (`batch · heads · rows · keys` values of `element` bytes) stay within `max_bytes`: at least
/// one row, at most all `n`.
pub fn attention_rows(
    batch: usize,
    heads: usize,
    n: usize,
    m: usize,
    element: u64,
    max_bytes: u64,
) -> usize {
    let per_row = (batch * heads * m) as u64 * element;
    ((max_bytes / per_row.max(1)) as usize).clamp(1, n.max(1))
}

/// Scaled dot-product attention (no mask, scale 1/√head_dim) with the heads side by side, as the
/// projections produce and consume them: `q` `[batch, n, heads · d]`, `k` and `v`
/// `[batch, m, heads · d]` → `[batch, n, heads · d]`. Scores and softmax in f32 when `upcast` is
/// set and the inputs are f16 (diffusers' `upcast_attention`, and the VAE, whose scores over
/// (h·w)² positions overflow f16). On a GPU no dispatch holds more than
/// [`ATTENTION_SCORE_BYTES`] of scores.
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    upcast: bool,
) -> Tensor<3> {
    #[cfg(not(target_arch = "wasm32"))]
    if q.dtype() == DType::F32 && crate::device::is_cpu(&q.device()) {
        return crate::cpu::attention(q, k, v, heads);
    }
    attention_blocked(q, k, v, heads, upcast, ATTENTION_SCORE_BYTES)
}

/// [`attention`] with Burn's kernels, a block of query rows at a time so that no block's scores
/// exceed `max_score_bytes`. Each query row's softmax is over all keys, so the blocks are exact:
/// the result is the unblocked one's.
pub fn attention_blocked(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    upcast: bool,
    max_score_bytes: u64,
) -> Tensor<3> {
    let [b, n, inner] = q.dims();
    let m = k.dims()[1];
    let d = inner / heads;
    let dtype = q.dtype();
    let compute = if upcast && dtype != DType::F32 {
        DType::F32
    } else {
        dtype
    };
    let split = |t: Tensor<3>, len: usize| {
        let t = t.reshape([b, len, heads, d]).swap_dims(1, 2);
        if compute == dtype {
            t
        } else {
            t.cast(FloatDType::F32)
        }
    };
    let (k, v) = (split(k, m), split(v, m));
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    };
    let rows = attention_rows(b, heads, n, m, compute.size() as u64, max_score_bytes);
    let block = |q: Tensor<3>, len: usize| {
        let out = burn_attention(split(q, len), k.clone(), v.clone(), None, None, options);
        let out = if compute == dtype {
            out
        } else {
            out.cast(dtype)
        };
        out.swap_dims(1, 2).reshape([b, len, inner])
    };
    if rows >= n {
        return block(q, n);
    }
    let blocks: Vec<Tensor<3>> = (0..n)
        .step_by(rows)
        .map(|start| {
            let len = rows.min(n - start);
            block(q.clone().narrow(1, start, len), len)
        })
        .collect();
    Tensor::cat(blocks, 1)
}

/// `torch.nn.Embedding`.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub weight: Tensor<2>,
}

impl Embedding {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        count: usize,
        dim: usize,
    ) -> Result<Self, WeightsError> {
        Ok(Embedding {
            weight: w.take::<2>(&format!("{prefix}.weight"), [count, dim])?,
        })
    }

    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        embedding(self.weight.clone(), ids)
    }
}

/// CLIP's `quick_gelu`: `x · σ(1.702 x)`.
pub fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * activation::sigmoid(x * 1.702)
}

/// The activations the configs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    QuickGelu,
    Gelu,
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self, WeightsError> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(WeightsError::Config(format!(
                "activation {other:?} is not supported"
            ))),
        }
    }

    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::QuickGelu => quick_gelu(x),
            Activation::Gelu => activation::gelu(x),
            Activation::Silu => activation::silu(x),
        }
    }
}
