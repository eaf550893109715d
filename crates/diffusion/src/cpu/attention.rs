//! Scaled dot-product attention as two products per (batch, head) with a softmax between them, on
//! q, k and v as the projections leave them: `[batch, tokens, heads · head_dim]`, each head a
//! strided column block that the products read in place (k and v packed for [`gemm`] per head),
//! with no transposes and no head-split copies.
//!
//! Scores are computed a block of query rows at a time (at most [`SCORE_TILE_FLOATS`]), so the
//! VAE's 4096-token self-attention at 512×512 holds 4 MiB of scores, not 64 MiB.

use burn::tensor::{Tensor, TensorData};

use rayon::prelude::*;

use super::gemm::{PackedB, gemm};
use super::{Operand, SERIAL_FLOATS, SharedMut, activations, exp};

/// The most scores one block of query rows holds.
const SCORE_TILE_FLOATS: usize = 1 << 20;

/// `softmax(q·kᵀ / √head_dim) · v` for each head: `q` `[batch, n, heads · d]`, `k` and `v`
/// `[batch, m, heads · d]` → `[batch, n, heads · d]`, the heads side by side as they went in (what
/// the output projection takes).
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let device = q.device();
    let [b, n, inner] = q.dims();
    let m = k.dims()[1];
    assert!(
        heads > 0 && inner % heads == 0 && k.dims() == [b, m, inner] && v.dims() == [b, m, inner],
        "attention: q {:?}, k {:?}, v {:?}, {heads} heads",
        q.dims(),
        k.dims(),
        v.dims()
    );
    let d = inner / heads;
    let (q, k, v) = (activations(q), activations(k), activations(v));
    let mut out = vec![0.0f32; b * n * inner];
    if n == 0 || m == 0 || d == 0 {
        return Tensor::from_data(TensorData::new(out, [b, n, inner]), &device);
    }
    let scale = 1.0 / (d as f32).sqrt();
    // Tasks: (batch, head, block of query rows), spread over the cores; each has its own scores
    // and writes its own rows of one head's columns of `out`.
    let rows = (SCORE_TILE_FLOATS / m).clamp(1, n);
    let blocks = n.div_ceil(rows);
    let s = inner as isize;
    // Each (batch, head)'s kᵀ (carrying the 1/√d) and v packed once, for all its blocks.
    let packed: Vec<(PackedB, PackedB)> = (0..b * heads)
        .into_par_iter()
        .map(|bh| {
            // Head `head` of batch `batch`: a column block `d` wide at `head · d`, rows `inner`
            // apart.
            let k_at = bh / heads * m * inner + bh % heads * d;
            // SAFETY: kᵀ is d×m read from k (element (i, j) at k_at + j·inner + i, the last <
            // b·m·inner); v's head is m×d with row stride `inner` from k_at, the same extent.
            let (mut k_t, v_head) = unsafe {
                (
                    PackedB::pack(
                        d,
                        m,
                        Operand {
                            ptr: k.as_ptr().add(k_at),
                            rows: 1,
                            cols: s,
                        },
                    ),
                    PackedB::pack(
                        m,
                        d,
                        Operand {
                            ptr: v.as_ptr().add(k_at),
                            rows: s,
                            cols: 1,
                        },
                    ),
                )
            };
            k_t.scale(scale);
            (k_t, v_head)
        })
        .collect();
    let out_ptr = SharedMut(out.as_mut_ptr());
    let task = |t: usize| {
        let (batch, head, block) = (t / (heads * blocks), t / blocks % heads, t % blocks);
        let (k_t, v_head) = &packed[batch * heads + head];
        let r0 = block * rows;
        let r = rows.min(n - r0);
        let q_at = (batch * n + r0) * inner + head * d;
        let mut scores = Vec::with_capacity(r * m);
        let mut sums = vec![0.0f32; r];
        // SAFETY: the q block is r×d with row stride `inner` from q_at, its last element at
        // q_at + (r-1)·inner + d - 1 < b·n·inner; the scores are r×m row-major in the capacity
        // of `scores`, every element of which gemm writes before the length is set. Nothing
        // aliases; all outlive the call.
        unsafe {
            gemm(
                r,
                Operand {
                    ptr: q.as_ptr().add(q_at),
                    rows: s,
                    cols: 1,
                },
                k_t,
                None,
                false,
                SharedMut(scores.as_mut_ptr()),
                m as isize,
                1,
                false,
            );
            scores.set_len(r * m);
        }
        softmax_rows(&mut scores, m, &mut sums);
        // SAFETY: P is r×m row-major in `scores`; the output block is r×d with row stride
        // `inner` from q_at inside `out` (same extent as q's block), written by this task alone.
        // The softmax's division is then applied to those r×d outputs instead of the r×m scores.
        unsafe {
            gemm(
                r,
                Operand::new(&scores, m, 1),
                v_head,
                None,
                false,
                SharedMut(out_ptr.ptr().add(q_at)),
                s,
                1,
                false,
            );
            for (i, sum) in sums.iter().enumerate() {
                let row = std::slice::from_raw_parts_mut(out_ptr.ptr().add(q_at + i * inner), d);
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|o| *o *= inv);
            }
        }
    };
    (0..b * heads * blocks).into_par_iter().for_each(task);
    Tensor::from_data(TensorData::new(out, [b, n, inner]), &device)
}

/// Each `width`-long row of `scores` becomes `exp(row - max(row))`; its sum goes to `sums`.
fn softmax_rows(scores: &mut [f32], width: usize, sums: &mut [f32]) {
    // Eight lanes at a time, so that the max, the exponentials and the sum vectorise.
    let one = |(row, sum): (&mut [f32], &mut f32)| {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut eights = row.chunks_exact(8);
        for eight in &mut eights {
            for (l, v) in lanes.iter_mut().zip(eight) {
                *l = l.max(*v);
            }
        }
        let max = eights
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let mut lanes = [0.0f32; 8];
        let mut eights = row.chunks_exact_mut(8);
        for eight in &mut eights {
            for (l, v) in lanes.iter_mut().zip(eight) {
                *v = exp(*v - max);
                *l += *v;
            }
        }
        let mut total: f32 = lanes.iter().sum();
        for v in eights.into_remainder() {
            *v = exp(*v - max);
            total += *v;
        }
        *sum = total;
    };
    if scores.len() < SERIAL_FLOATS {
        scores.chunks_mut(width).zip(sums.iter_mut()).for_each(one);
    } else {
        scores
            .par_chunks_mut(width)
            .zip(sums.par_iter_mut())
            .with_min_len(SERIAL_FLOATS.div_ceil(width))
            .for_each(one);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::values;
    use burn::tensor::Device;
    use burn::tensor::module::attention as burn_attention;
    use burn::tensor::ops::AttentionModuleOptions;

    /// Against Burn's attention on the same device, heads split and merged by Burn's reshapes:
    /// self-attention over several score blocks (n·m above the tile), cross-attention with a short
    /// context, one head and several.
    #[test]
    fn attention_matches_burn() {
        let device = Device::flex();
        for (b, n, m, heads, d) in [(2, 1100, 1100, 2, 8), (2, 64, 77, 4, 16), (1, 5, 3, 1, 32)] {
            let inner = heads * d;
            let t = |len: usize, seed: u32| {
                Tensor::<3>::from_data(
                    TensorData::new(
                        values(b * len * inner, seed)
                            .iter()
                            .map(|v| v * 3.0)
                            .collect::<Vec<_>>(),
                        [b, len, inner],
                    ),
                    &device,
                )
            };
            let (q, k, v) = (t(n, 21), t(m, 22), t(m, 23));
            let split = |t: Tensor<3>, len: usize| t.reshape([b, len, heads, d]).swap_dims(1, 2);
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: false,
            };
            let want = burn_attention(
                split(q.clone(), n),
                split(k.clone(), m),
                split(v.clone(), m),
                None,
                None,
                options,
            )
            .swap_dims(1, 2)
            .reshape([b, n, inner]);
            let got = attention(q, k, v, heads);
            got.into_data().assert_approx_eq::<f32>(
                &want.into_data(),
                burn::tensor::Tolerance::absolute(2e-5),
            );
        }
    }
}
