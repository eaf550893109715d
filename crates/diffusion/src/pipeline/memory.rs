//! What a call needs of its device, known before it runs: its largest buffer and the memory it
//! holds at its peak, at the requested size, number of images and precision — and the choices
//! that make it fit a device's limits, or a clear refusal naming the size and the limit.
//!
//! The figures are the engine's own tensors, counted from the model's configs (no weights are
//! needed): the UNet's activations and skip concatenations (their group norms in f32), its
//! feed-forward's GEGLU projection (a chunk of tokens at a time within
//! [`crate::nn::FEED_FORWARD_BYTES`]), its attention scores (never more than
//! [`ATTENTION_SCORE_BYTES`] a dispatch: they are computed a block of query rows at a time, see
//! [`crate::nn::attention`]), and the VAE's activations at full resolution. A device's buffer
//! limit is met by running the UNet one batch row at a time, by decoding image by image and then
//! in tiles (diffusers' VAE tiling); what still does not fit, and a call whose peak exceeds a
//! known memory size, is refused before it starts.

use std::fmt;

use crate::models::unet::config::{BlockKind, UNetPlan};
use crate::models::vae::{Tiling, VaeConfig};
use crate::nn::{ATTENTION_SCORE_BYTES, attention_rows, feed_forward_rows};

/// The tokens of a CLIP prompt: the length of the cross-attention's keys.
const PROMPT_TOKENS: u64 = 77;
/// The longest side planned (pixels): 16 times SDXL's own.
pub const MAX_SIDE: u32 = 16384;
/// The smallest VAE tile tried (pixels): below that the seams outweigh the savings.
const MIN_TILE: usize = 128;

/// A device's limits, where known: the largest buffer it binds, and its memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceLimits {
    pub buffer: Option<u64>,
    pub memory: Option<u64>,
}

/// One buffer a call allocates: what it is, and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    pub what: String,
    pub bytes: u64,
}

impl Buffer {
    fn new(what: impl Into<String>, bytes: u64) -> Buffer {
        Buffer {
            what: what.into(),
            bytes,
        }
    }
}

fn largest(buffers: impl IntoIterator<Item = Buffer>) -> Buffer {
    buffers
        .into_iter()
        .max_by_key(|b| b.bytes)
        .unwrap_or_else(|| Buffer::new("nothing", 0))
}

/// The model's shape as the planner needs it: its UNet and VAE, the bytes per value each computes
/// in, and its weights' size on the device. (The VAE's activations are counted in f32, as its
/// group norms compute.)
#[derive(Debug, Clone, Copy)]
pub struct ModelShape<'a> {
    pub unet: &'a UNetPlan,
    pub vae: &'a VaeConfig,
    /// The UNet's bytes per value: 2 (f16) or 4 (f32).
    pub unet_value: u64,
    /// The UNet's attention scores in f32 (`upcast_attention`).
    pub upcast_attention: bool,
    /// Every component's weights on the device, in bytes.
    pub weights: u64,
}

/// How the VAE runs a pass: whole, image by image, or image by image in tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeSplit {
    Whole,
    OneByOne,
    Tiled(Tiling),
}

/// A pass of the VAE as planned: how it is split and its largest buffer then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaePass {
    pub split: VaeSplit,
    pub largest: Buffer,
    /// The largest buffer of the pass unsplit (what the split avoided).
    pub whole: Buffer,
}

/// A call's memory, planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    pub width: u32,
    pub height: u32,
    pub images: usize,
    /// Pixels per latent.
    pub scale: u64,
    pub weights: u64,
    pub unet: Buffer,
    /// The UNet's batch rows per forward pass: 0 for the whole batch (guidance's two halves and
    /// every image together), 1 when the whole batch would not fit the buffer limit.
    pub unet_rows: usize,
    pub encode: VaePass,
    pub decode: VaePass,
    /// Weights plus the working set of the hungriest phase (an estimate).
    pub peak: u64,
}

impl MemoryPlan {
    /// The largest buffer of the whole call.
    pub fn largest(&self) -> &Buffer {
        [&self.unet, &self.encode.largest, &self.decode.largest]
            .into_iter()
            .max_by_key(|b| b.bytes)
            .expect("three buffers")
    }

    /// A line for the log, when the plan split anything: what, and why.
    pub fn splits(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.unet_rows > 0 {
            parts.push(format!(
                "the UNet on {} batch row{} at a time",
                self.unet_rows,
                if self.unet_rows == 1 { "" } else { "s" }
            ));
        }
        for (name, pass) in [("encode", &self.encode), ("decode", &self.decode)] {
            match pass.split {
                VaeSplit::Whole => {}
                VaeSplit::OneByOne => parts.push(format!(
                    "VAE {name} image by image (whole: {} of {})",
                    mib(pass.whole.bytes),
                    pass.whole.what
                )),
                VaeSplit::Tiled(t) => parts.push(format!(
                    "VAE {name} in {} tiles of {}² (whole: {} of {})",
                    t.count(
                        self.width as usize,
                        self.height as usize,
                        self.scale as usize
                    ),
                    t.tile,
                    mib(pass.whole.bytes),
                    pass.whole.what
                )),
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let largest = self.largest();
        write!(
            f,
            "{}×{}, {} image{}: largest buffer {} ({}), about {} of device memory ({} of weights)",
            self.width,
            self.height,
            self.images,
            if self.images == 1 { "" } else { "s" },
            mib(largest.bytes),
            largest.what,
            gib(self.peak),
            gib(self.weights)
        )?;
        if let Some(splits) = self.splits() {
            write!(f, "; {splits}")?;
        }
        Ok(())
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Why a call cannot run on the device, said with its size and the device's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoesNotFit(pub String);

impl fmt::Display for DoesNotFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The UNet's largest buffer for a batch of `batch` latents of `h`×`w`.
pub fn unet_largest(model: &ModelShape, batch: u64, h: u64, w: u64) -> Buffer {
    let plan = model.unet;
    let e = model.unet_value;
    let n = plan.channels.len();
    let mut buffers = Vec::new();
    let (mut lh, mut lw) = (h, w);
    for i in 0..n {
        let c = plan.channels[i] as u64;
        let tokens = lh * lw;
        // The up path's first resnet at this level takes the level below's output (upsampled to
        // this size) beside the skip connection; its group norm computes in f32.
        let below = plan.channels[(i + 1).min(n - 1)] as u64;
        buffers.push(Buffer::new(
            format!("the UNet's skip concatenation at {lw}×{lh}, normalised in f32"),
            batch * (below + c) * tokens * 4,
        ));
        let attention = plan.down[i] == BlockKind::CrossAttn
            || plan.up[n - 1 - i] == BlockKind::CrossAttn
            || i == n - 1;
        if attention {
            let rows = feed_forward_rows(batch as usize, tokens as usize, c as usize, e) as u64;
            buffers.push(Buffer::new(
                format!("a chunk of the UNet's feed-forward at {lw}×{lh}"),
                batch * rows * 8 * c * e,
            ));
            let heads = plan.heads[i].max(1) as u64;
            let score = if model.upcast_attention { 4 } else { e };
            for (keys, kind) in [(tokens, "self"), (PROMPT_TOKENS, "cross")] {
                let rows = attention_rows(
                    batch as usize,
                    heads as usize,
                    tokens as usize,
                    keys as usize,
                    score,
                    ATTENTION_SCORE_BYTES,
                ) as u64;
                buffers.push(Buffer::new(
                    format!("a block of the UNet's {kind}-attention scores at {lw}×{lh}"),
                    batch * heads * rows * keys * score,
                ));
            }
        }
        lh = lh.div_ceil(2);
        lw = lw.div_ceil(2);
    }
    largest(buffers)
}

/// The skip connections the UNet holds through its up path, in bytes.
fn unet_skips(model: &ModelShape, batch: u64, h: u64, w: u64) -> u64 {
    let plan = model.unet;
    let (mut lh, mut lw) = (h, w);
    let mut total = 0;
    for (i, &c) in plan.channels.iter().enumerate() {
        let per_block = plan.layers_per_block.get(i).copied().unwrap_or(2) as u64 + 1;
        total += batch * c as u64 * lh * lw * model.unet_value * per_block;
        lh = lh.div_ceil(2);
        lw = lw.div_ceil(2);
    }
    total
}

/// The VAE decoder's largest buffer for `batch` images of `height`×`width` pixels: a resnet's
/// input at each resolution, normalised in f32, and the mid-block's attention scores.
pub fn decode_largest(vae: &VaeConfig, batch: u64, width: u64, height: u64) -> Buffer {
    let rev: Vec<u64> = vae
        .block_out_channels
        .iter()
        .rev()
        .map(|&c| c as u64)
        .collect();
    let scale = vae.scale_factor() as u64;
    let (h, w) = (height / scale, width / scale);
    let mut buffers = vec![attention_scores(batch, h * w, "decoder")];
    for k in 0..rev.len() {
        let channels = rev[k.saturating_sub(1)].max(rev[k]);
        let (rh, rw) = (h << k, w << k);
        buffers.push(Buffer::new(
            format!("the VAE decoder's activations at {rw}×{rh}, normalised in f32"),
            batch * channels * rh * rw * 4,
        ));
    }
    largest(buffers)
}

/// The VAE encoder's largest buffer for `batch` images of `height`×`width` pixels.
pub fn encode_largest(vae: &VaeConfig, batch: u64, width: u64, height: u64) -> Buffer {
    let ch: Vec<u64> = vae.block_out_channels.iter().map(|&c| c as u64).collect();
    let scale = vae.scale_factor() as u64;
    let mut buffers = vec![attention_scores(
        batch,
        (height / scale) * (width / scale),
        "encoder",
    )];
    for k in 0..ch.len() {
        let channels = ch[k.saturating_sub(1)].max(ch[k]);
        let (rh, rw) = (height >> k, width >> k);
        buffers.push(Buffer::new(
            format!("the VAE encoder's activations at {rw}×{rh}, normalised in f32"),
            batch * channels * rh * rw * 4,
        ));
    }
    largest(buffers)
}

/// A block of the VAE mid-block's single-head attention scores over `positions` (in f32).
fn attention_scores(batch: u64, positions: u64, which: &str) -> Buffer {
    let rows = attention_rows(
        batch as usize,
        1,
        positions as usize,
        positions as usize,
        4,
        ATTENTION_SCORE_BYTES,
    ) as u64;
    Buffer::new(
        format!("a block of the VAE {which}'s attention scores"),
        batch * rows * positions * 4,
    )
}

/// Plans a VAE pass over `batch` images: whole if its largest buffer fits `limit`, else image by
/// image, else in the largest square tiles that fit.
fn plan_vae(
    largest_of: impl Fn(u64, u64, u64) -> Buffer,
    batch: u64,
    width: u64,
    height: u64,
    limit: Option<u64>,
    what: &str,
) -> Result<VaePass, DoesNotFit> {
    let whole = largest_of(batch, width, height);
    let Some(limit) = limit else {
        return Ok(VaePass {
            split: VaeSplit::Whole,
            largest: whole.clone(),
            whole,
        });
    };
    if whole.bytes <= limit {
        return Ok(VaePass {
            split: VaeSplit::Whole,
            largest: whole.clone(),
            whole,
        });
    }
    let one = largest_of(1, width, height);
    if batch > 1 && one.bytes <= limit {
        return Ok(VaePass {
            split: VaeSplit::OneByOne,
            largest: one,
            whole,
        });
    }
    let side = width.max(height) as usize;
    // Tiles smaller than the image, the largest first.
    let mut tile = ((side - 1) / 64 * 64).max(MIN_TILE);
    while tile >= MIN_TILE {
        let t = tile as u64;
        let buffer = largest_of(1, t.min(width), t.min(height));
        if buffer.bytes <= limit {
            return Ok(VaePass {
                split: VaeSplit::Tiled(Tiling { tile }),
                largest: buffer,
                whole,
            });
        }
        tile -= 64;
    }
    Err(DoesNotFit(format!(
        "{width}×{height}: the VAE's {what} needs {} in one buffer ({}) and this device binds at most {}, even in {MIN_TILE}² tiles",
        mib(whole.bytes),
        whole.what,
        mib(limit)
    )))
}

/// Plans a call of `images` images at `width`×`height` (with classifier-free guidance: the UNet
/// runs on twice the batch) on a device with `limits`.
pub fn plan(
    model: &ModelShape,
    width: u32,
    height: u32,
    images: usize,
    guidance: bool,
    limits: DeviceLimits,
) -> Result<MemoryPlan, DoesNotFit> {
    // Past this the arithmetic below could overflow; no device holds such a call anyway.
    if width.max(height) > MAX_SIDE {
        return Err(DoesNotFit(format!(
            "{width}×{height}: a side longer than {MAX_SIDE} pixels is more than any device holds"
        )));
    }
    let scale = model.vae.scale_factor() as u64;
    let (w, h) = (u64::from(width), u64::from(height));
    let batch = images as u64 * if guidance { 2 } else { 1 };
    let whole_batch = unet_largest(model, batch, h / scale, w / scale);
    let (unet, unet_rows) = match limits.buffer {
        Some(limit) if whole_batch.bytes > limit && batch > 1 => {
            (unet_largest(model, 1, h / scale, w / scale), 1)
        }
        _ => (whole_batch, 0),
    };
    if let Some(limit) = limits.buffer
        && unet.bytes > limit
    {
        return Err(DoesNotFit(format!(
            "{width}×{height} with {images} image{}: the UNet needs {} in one buffer ({}{}) and this device binds at most {}: ask for a smaller size or fewer images",
            if images == 1 { "" } else { "s" },
            mib(unet.bytes),
            unet.what,
            if unet_rows == 1 {
                ", even one batch row at a time"
            } else {
                ""
            },
            mib(limit)
        )));
    }
    let vae = model.vae;
    let encode = plan_vae(
        |b, w, h| encode_largest(vae, b, w, h),
        1,
        w,
        h,
        limits.buffer,
        "encoder",
    )?;
    let decode = plan_vae(
        |b, w, h| decode_largest(vae, b, w, h),
        images as u64,
        w,
        h,
        limits.buffer,
        "decoder",
    )?;
    // The UNet's phase holds its skips and about three of its largest buffers at once; the VAE's,
    // about three of its largest per pass.
    let unet_phase = unet_skips(model, batch, h / scale, w / scale) + 3 * unet.bytes;
    let vae_phase = 3 * encode.largest.bytes.max(decode.largest.bytes);
    let peak = model.weights + unet_phase.max(vae_phase);
    if let Some(memory) = limits.memory
        && peak > memory
    {
        return Err(DoesNotFit(format!(
            "{width}×{height} with {images} image{} needs about {} of device memory ({} of weights) and this device has {}: ask for a smaller size or fewer images",
            if images == 1 { "" } else { "s" },
            gib(peak),
            gib(model.weights),
            gib(memory)
        )));
    }
    Ok(MemoryPlan {
        width,
        height,
        images,
        scale,
        weights: model.weights,
        unet,
        unet_rows,
        encode,
        decode,
        peak,
    })
}
