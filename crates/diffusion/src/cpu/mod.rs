//! The CPU device's hot kernels, in f32, native only:
//!
//! - `gemm/`: the matrix product every kernel below runs, with its right-hand side packed ahead
//!   (a layer's weights once, at load) and a 6 × 16 AVX2/FMA micro-kernel;
//! - `linear.rs`: `Linear` layers (and GEGLU, fused after the product) as one product;
//! - `winograd/`: 3×3 stride-1 convolutions by Winograd's F(4×4, 3×3) on images of 64×64 and
//!   more, F(2×2, 3×3) below; `conv.rs`: the others as im2col + product;
//! - `attention.rs`: scaled dot-product attention as two strided products per head, a blocked
//!   softmax between them;
//! - `norm.rs`: GroupNorm fused with the SiLU that follows it;
//! - `math.rs`: `exp`, `erf`, `gelu`, `silu`, written so that the loops over them vectorise.
//!
//! Why: burn-flex multiplies with the `gemm` crate, which on this project's 2-core machine (AMD
//! EPYC, Zen 1: AVX2 at 128 bits a cycle, 16 flops per cycle and core at most) runs the UNet's
//! shapes at 30–44 GFLOP/s; `matrixmultiply` ran them at 46–61 on two threads, but packs the
//! weights again on every call; our product reads them packed and reached 45–70 (`engine_bench
//! gemm` prints all three; PyTorch's MKL: 59–67, README). And burn-flex's element-wise ops are a
//! pass over memory each.
//! So on the CPU device, in f32, the layers keep their weights packed as the product reads them
//! (not Burn tensors, so the weights are held once), and inputs and outputs cross into Burn
//! without copies (burn-flex hands over a uniquely owned contiguous buffer and adopts a `Vec`).
//!
//! One thread pool: the kernels split their work (rows of a product, Winograd's 16 or 36
//! products, attention's heads and blocks) across rayon's pool, the one burn-flex uses too. With
//! a library's own threads taking turns with rayon's, two cores ran the mid-size UNet step only
//! 1.2× faster than one; with one pool, a 32×32 step went from 1150 to 827 ms.

use burn::tensor::{DType, Tensor};

use crate::weights::store::Weights;

/// Whether layers built from `w` with parameters of `dtype` take the CPU kernels: real values (not
/// a shapes-only store, whose broadcast tensors must never be materialised), f32, on the CPU.
pub fn takes_cpu_kernels(w: &Weights, dtype: DType) -> bool {
    w.holds_values() && dtype == DType::F32 && crate::device::is_cpu(w.device())
}

mod attention;
mod conv;
mod gemm;
mod linear;
mod math;
mod norm;
mod winograd;

pub use attention::attention;
pub use conv::CpuConv2d;
pub use linear::CpuLinear;
pub use math::{erf, exp, gelu, silu};
pub use norm::group_norm;

use rayon::prelude::*;

/// Below this many output floats a pass runs on the calling thread: the pool's hand-off costs
/// more than the work.
pub(crate) const SERIAL_FLOATS: usize = 1 << 15;

/// `f(source row, destination row)` for every row, on the thread pool when there is enough work.
pub(crate) fn parallel_rows(
    src: &[f32],
    dst: &mut [f32],
    src_width: usize,
    dst_width: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync + Send,
) {
    let (src_width, dst_width) = (src_width.max(1), dst_width.max(1));
    if dst.len() < SERIAL_FLOATS {
        for (s, d) in src
            .chunks_exact(src_width)
            .zip(dst.chunks_exact_mut(dst_width))
        {
            f(s, d);
        }
        return;
    }
    // Rows in runs of at least SERIAL_FLOATS outputs, so a task is never a sliver.
    let min_rows = SERIAL_FLOATS.div_ceil(dst_width);
    src.par_chunks_exact(src_width)
        .zip(dst.par_chunks_exact_mut(dst_width))
        .with_min_len(min_rows)
        .for_each(|(s, d)| f(s, d));
}

/// `f(index, chunk)` for every `len`-float chunk of `data`, in place, on the thread pool when
/// there is enough work.
pub(crate) fn parallel_chunks(
    data: &mut [f32],
    len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let len = len.max(1);
    if data.len() < SERIAL_FLOATS {
        data.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.par_chunks_mut(len)
            .enumerate()
            .with_min_len(SERIAL_FLOATS.div_ceil(len))
            .for_each(|(i, c)| f(i, c));
    }
}

/// Where an sgemm operand starts and how it steps: element (i, j) at `ptr + i·rows + j·cols`.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub ptr: *const f32,
    pub rows: isize,
    pub cols: isize,
}
// SAFETY: read-only, and only read while its owner keeps it alive (during `sgemm`).
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}

impl Operand {
    pub fn new(data: &[f32], rows: usize, cols: usize) -> Self {
        Operand {
            ptr: data.as_ptr(),
            rows: rows as isize,
            cols: cols as isize,
        }
    }
}

/// A raw pointer the pool's tasks may share, each writing its own disjoint part of the buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: only used by tasks that write disjoint elements and are all joined (rayon's `for_each`
// returns after them) before the buffer's owner goes on.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole, shareable value).
    pub fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// An activation's values as an owned row-major `Vec` (burn-flex hands its buffer over when the
/// tensor is uniquely owned and contiguous, and copies otherwise).
pub(crate) fn activations<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    floats(t).expect("the CPU kernels are taken only for f32 tensors")
}

/// A tensor's values as an owned row-major `Vec`, or why they are not f32.
pub(crate) fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| format!("expected f32 weights: {e:?}"))
}

#[cfg(test)]
pub(crate) mod tests {
    /// Deterministic test values in [-1, 1).
    pub fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }
}
