//! Our single-precision matrix product, for right-hand sides packed ahead of time: a layer's
//! weights are packed once, at load, into the layout the micro-kernel streams, so a forward pass
//! packs only its activations.
//!
//! The loops are BLIS's: C's rows are split across rayon's pool; each task takes the depth in
//! blocks of at most [`KC`], packs [`MC`] rows of A at a time into `MR`-row panels, and runs the
//! `MR × NR` micro-kernel ([`kernel`]) over every (B panel, A panel) pair with the B panel
//! (`KC × NR`, 16 KiB) held in L1 while the A block (≤ 96 KiB) stays in L2.
//!
//! Why not matrixmultiply for these: it packs both operands on every call (the weights included),
//! and its 8 × 8 AVX2 kernel reached 25–32 GFLOP/s a thread on the UNet's shapes here (`engine_bench
//! gemm` prints both).

mod kernel;

use rayon::prelude::*;

use super::{Operand, SharedMut};
use kernel::Tile;

/// Rows of the micro-kernel's tile.
pub(crate) const MR: usize = 6;
/// Columns of the micro-kernel's tile.
pub(crate) const NR: usize = 16;
/// The most depth one pass of the micro-kernel takes (a B panel of `KC × NR` floats fills half
/// of a 32 KiB L1).
const KC: usize = 256;
/// Rows of A packed at a time (a multiple of MR).
const MC: usize = 96;

/// Floats aligned to 64 bytes (a cache line), zero-initialised.
#[derive(Debug, Clone)]
pub(crate) struct Aligned {
    lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl Aligned {
    fn zeroed(floats: usize) -> Self {
        Aligned {
            lines: vec![Line([0.0; 16]); floats.div_ceil(16)],
        }
    }

    #[cfg(test)]
    fn as_ptr(&self) -> *const f32 {
        self.lines.as_ptr() as *const f32
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        let len = self.lines.len() * 16;
        // SAFETY: `Line` is 16 f32s with no padding (64 bytes, align 64); the vector holds `len`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut f32, len) }
    }
}

/// A `k × n` right-hand side in the micro-kernel's layout: `NR`-column panels, each `k` rows of
/// `NR` floats (columns past `n` are zeros), so any depth range of a panel is contiguous.
///
/// The panels start on a 64-byte boundary (a cache line): `start` floats into `data`. The
/// micro-kernel's 32-byte loads of B then never straddle two lines; from a plain allocation's
/// 16-byte alignment every other one did, and the UNet's steps took 40 % longer on this CPU.
#[derive(Debug, Clone)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
    start: usize,
}

/// Floats a packed `k × n` matrix takes: whole `NR`-column panels.
fn panel_floats(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k * NR
}

/// Floats from `ptr` to the next 64-byte boundary.
fn to_line(ptr: *const f32) -> usize {
    (64 - ptr as usize % 64) % 64 / 4
}

impl PackedB {
    /// Packs B, element (p, j) at `b.ptr + p·b.rows + j·b.cols`.
    ///
    /// # Safety
    /// B must be valid for `k × n` elements at those strides.
    pub unsafe fn pack(k: usize, n: usize, b: Operand) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panel_floats(k, n) + 15];
        let start = to_line(data.as_ptr());
        for (jp, panel) in data[start..]
            .chunks_exact_mut((k * NR).max(1))
            .take(panels)
            .enumerate()
        {
            let cols = NR.min(n - jp * NR);
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (jj, v) in row[..cols].iter_mut().enumerate() {
                    let j = jp * NR + jj;
                    // SAFETY: p < k, j < n: the caller's guarantee.
                    *v = unsafe { *b.ptr.offset(p as isize * b.rows + j as isize * b.cols) };
                }
            }
        }
        PackedB { k, n, data, start }
    }

    /// From a row-major `[n, k]` matrix (PyTorch's `Linear.weight`: B = its transpose).
    #[cfg(test)]
    pub fn from_transposed(weight: &[f32], k: usize, n: usize) -> Self {
        Self::from_transposed_vec(weight.to_vec(), k, n)
    }

    /// [`Self::from_transposed`] in the weight's own memory: a panel's `NR` rows of the weight
    /// (`NR·k` consecutive floats) take exactly the floats of the packed panel, so each panel is
    /// transposed in place through a scratch of its size, the panels in parallel. A model's
    /// weights are packed at load without a second copy of them ever existing.
    pub fn from_transposed_vec(mut weight: Vec<f32>, k: usize, n: usize) -> Self {
        assert_eq!(weight.len(), k * n, "weight is not {n} × {k}");
        if k == 0 || n == 0 {
            return PackedB::empty();
        }
        // The last panel's missing columns: zeros after the weight's last row.
        weight.resize(panel_floats(k, n), 0.0);
        weight.par_chunks_mut(k * NR).enumerate().for_each_init(
            || vec![0.0f32; k * NR],
            |scratch, (jp, panel)| {
                scratch.copy_from_slice(panel);
                let cols = NR.min(n - jp * NR);
                for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                    for (jj, v) in row.iter_mut().enumerate() {
                        // Row jj of the weight's panel, column p; zeros past n.
                        *v = if jj < cols { scratch[jj * k + p] } else { 0.0 };
                    }
                }
            },
        );
        // Then moved to a line boundary: within the allocation (a large one grows in place, by
        // remapping), one pass.
        let len = weight.len();
        weight.reserve_exact(15);
        let start = to_line(weight.as_ptr());
        weight.resize(len + start, 0.0);
        weight.copy_within(0..len, start);
        PackedB {
            k,
            n,
            data: weight,
            start,
        }
    }

    /// An empty `0 × 0` matrix, to be [`Self::reshape`]d.
    pub fn empty() -> Self {
        PackedB {
            k: 0,
            n: 0,
            data: Vec::new(),
            start: 0,
        }
    }

    /// Makes this a `k × n` matrix, keeping the allocation where it is large enough, and returns
    /// its panels (panel `jp`'s row `p` at `(jp·k + p)·NR`) for the caller to fill: every float,
    /// the zero columns past `n` included (the contents are whatever was there before).
    pub fn reshape(&mut self, k: usize, n: usize) -> &mut [f32] {
        let floats = panel_floats(k, n);
        if self.data.capacity() < floats + 15 {
            self.data = Vec::with_capacity(floats + 15);
        }
        self.start = to_line(self.data.as_ptr());
        // Only ever longer: shrinking and growing again would zero the difference each time.
        if self.data.len() < self.start + floats {
            self.data.resize(self.start + floats, 0.0);
        }
        (self.k, self.n) = (k, n);
        &mut self.data[self.start..self.start + floats]
    }

    /// Multiplies every element by `s`.
    pub fn scale(&mut self, s: f32) {
        let floats = panel_floats(self.k, self.n);
        self.data[self.start..self.start + floats]
            .iter_mut()
            .for_each(|v| *v *= s);
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }
}

/// `C = A·B + bias` (or `C += A·B + bias` with `accumulate`): A `m × k` with any strides, B
/// packed, `bias` one value per column of C, C `m × n` at `c + i·c_rows + j·c_cols`. Every element
/// of C is written, so without `accumulate` C may start uninitialised. With `parallel`, C's rows
/// are split across rayon's pool when the product is big enough (callers that already run one
/// product per core pass `false`).
///
/// # Safety
/// A must be valid for `m × k` elements at its strides, C for `m × n` at its, C must not alias A,
/// B or the bias, and nothing else may access C during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    a: Operand,
    b: &PackedB,
    bias: Option<&[f32]>,
    accumulate: bool,
    c: SharedMut,
    c_rows: isize,
    c_cols: isize,
    parallel: bool,
) {
    let (k, n) = (b.k, b.n);
    if let Some(bias) = bias {
        assert_eq!(
            bias.len(),
            n,
            "bias has {} values for {n} columns",
            bias.len()
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                let add = bias.map_or(0.0, |b| b[j]);
                // SAFETY: (i, j) inside C.
                unsafe {
                    let at = c.ptr().offset(i as isize * c_rows + j as isize * c_cols);
                    *at = if accumulate { *at + add } else { add };
                }
            }
        }
        return;
    }
    // Depth blocks of equal size, at most KC.
    let k_blocks = k.div_ceil(KC);
    let kc_max = k.div_ceil(k_blocks);
    // Row tasks: one per core when there are ≥ 2 MFLOP, each a multiple of MR rows.
    let threads = rayon::current_num_threads().max(1);
    let tasks = if parallel && m * k * n >= 1 << 20 {
        threads.min(m.div_ceil(4 * MR)).max(1)
    } else {
        1
    };
    let per_task = m.div_ceil(tasks).next_multiple_of(MR);
    let run = |task: usize| {
        let (a, c) = (a, c);
        let i0 = task * per_task;
        if i0 >= m {
            // Rounding the tasks' rows up to whole panels can leave the last ones nothing.
            return;
        }
        let i1 = m.min(i0 + per_task);
        let mut packed_a = Aligned::zeroed(MC * kc_max);
        let packed_a = packed_a.as_mut_slice();
        for kb in 0..k_blocks {
            let p0 = kb * kc_max;
            let kc = kc_max.min(k - p0);
            for ic in (i0..i1).step_by(MC) {
                let mc = MC.min(i1 - ic);
                // SAFETY: rows ic..ic + mc < m and depths p0..p0 + kc ≤ k of A.
                unsafe { pack_a(a, ic, mc, p0, kc, packed_a) };
                for jp in 0..n.div_ceil(NR) {
                    let cols = NR.min(n - jp * NR);
                    let mut bias_tile = [0.0f32; NR];
                    let bias_tile = match bias {
                        Some(bias) if kb == 0 => {
                            bias_tile[..cols].copy_from_slice(&bias[jp * NR..jp * NR + cols]);
                            Some(&bias_tile)
                        }
                        _ => None,
                    };
                    // Panel jp's depths p0..p0 + kc: contiguous.
                    let b_panel = b.data.as_ptr().wrapping_add(b.start + (jp * k + p0) * NR);
                    for ir in 0..mc.div_ceil(MR) {
                        let i = ic + ir * MR;
                        let tile = Tile {
                            // SAFETY: (i, jp·NR) is inside C.
                            c: unsafe {
                                c.ptr()
                                    .offset(i as isize * c_rows + (jp * NR) as isize * c_cols)
                            },
                            rs: c_rows,
                            cs: c_cols,
                            rows: MR.min(i1 - i),
                            cols,
                            load_c: accumulate || kb > 0,
                            bias: bias_tile,
                        };
                        // SAFETY: A's panel ir holds kc·MR packed floats, B's kc·NR from an
                        // aligned start; the tile's valid part is rows i.. of this task's rows,
                        // columns of panel jp, inside C and written by this task alone.
                        unsafe {
                            kernel::tile(kc, packed_a.as_ptr().add(ir * kc * MR), b_panel, &tile)
                        };
                    }
                }
            }
        }
    };
    if tasks == 1 {
        run(0);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// Rows `i0..i0 + mc`, depths `p0..p0 + kc` of A into `MR`-row panels: panel r's element (p, ii)
/// at `(r·kc + p)·MR + ii`, rows past the block zero.
///
/// # Safety
/// A must be valid for those rows and depths.
unsafe fn pack_a(a: Operand, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [f32]) {
    for (r, panel) in out
        .chunks_exact_mut(kc * MR)
        .take(mc.div_ceil(MR))
        .enumerate()
    {
        let rows = MR.min(mc - r * MR);
        let first = (i0 + r * MR) as isize;
        // SAFETY (all three ways): rows first.. first + rows and depths p0..p0 + kc are inside A
        // (the caller's guarantee).
        let at = |ii: usize, p: usize| unsafe {
            a.ptr
                .offset((first + ii as isize) * a.rows + (p0 + p) as isize * a.cols)
        };
        if rows == MR && a.rows == 1 {
            // Column-major A: a panel's depth step is MR contiguous floats.
            for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                // SAFETY: MR floats from row `first` at depth p.
                dst.copy_from_slice(unsafe { std::slice::from_raw_parts(at(0, p), MR) });
            }
        } else if rows == MR && a.cols == 1 {
            // Row-major A: MR rows read side by side.
            // SAFETY: each row's kc floats from depth p0.
            let src: [&[f32]; MR] =
                std::array::from_fn(|ii| unsafe { std::slice::from_raw_parts(at(ii, 0), kc) });
            for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                for (d, s) in dst.iter_mut().zip(&src) {
                    *d = s[p];
                }
            }
        } else {
            for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                for (ii, d) in dst.iter_mut().enumerate() {
                    // SAFETY: as above, for the block's rows only.
                    *d = if ii < rows {
                        unsafe { *at(ii, p) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::values;

    /// A·B in f64, row-major.
    fn definition(
        m: usize,
        k: usize,
        n: usize,
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
    ) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a(i, p) as f64 * b(p, j) as f64).sum();
            }
        }
        c
    }

    /// However a packed matrix is made, its panels start on a cache line (the kernel's aligned
    /// loads rely on it), and packing in place equals packing a copy.
    #[test]
    fn packed_panels_start_on_a_cache_line() {
        for (k, n) in [(1, 1), (3, 17), (70, 15), (64, 48), (257, 300)] {
            let w = values(k * n, 7);
            let in_place = PackedB::from_transposed_vec(w.clone(), k, n);
            // SAFETY: element (p, j) of B is w[j·k + p], inside w.
            let copied = unsafe { PackedB::pack(k, n, Operand::new(&w, 1, k)) };
            let mut reshaped = PackedB::empty();
            for (kk, nn) in [(k, n), (2 * k, n + 5), (k, n)] {
                reshaped.reshape(kk, nn);
                assert_eq!(reshaped.data[reshaped.start..].as_ptr() as usize % 64, 0);
            }
            for p in [&in_place, &copied] {
                assert_eq!(p.data[p.start..].as_ptr() as usize % 64, 0, "{k}×{n}");
            }
            let panels = panel_floats(k, n);
            assert_eq!(
                in_place.data[in_place.start..][..panels],
                copied.data[copied.start..][..panels],
                "{k}×{n}"
            );
        }
    }

    /// Shapes across every edge (rows not a multiple of MR or of MC, columns not of NR, depths
    /// of one, of exactly KC and past it, split into unequal and several blocks), row-major and
    /// transposed A, C row-major and column-major inside a larger buffer, with and without bias
    /// and accumulation, on the thread pool and off it.
    #[test]
    fn gemm_matches_the_definition() {
        for (m, k, n) in [
            (1, 1, 1),
            (5, 3, 17),
            (6, 256, 16),
            (7, 257, 33),
            (97, 70, 15),
            (301, 600, 50),
            (130, 40, 300),
        ] {
            let a_vals = values(m * k, 61);
            let b_vals = values(k * n, 62);
            let bias_vals = values(n, 63);
            let b = PackedB::from_transposed(&b_vals, k, n); // B(p, j) = b_vals[j·k + p]
            for a_transposed in [false, true] {
                for c_transposed in [false, true] {
                    for (bias, accumulate) in [(None, false), (Some(&bias_vals[..]), true)] {
                        let a_op = if a_transposed {
                            Operand::new(&a_vals, 1, m) // (i, p) at p·m + i
                        } else {
                            Operand::new(&a_vals, k, 1)
                        };
                        let a_at = |i: usize, p: usize| {
                            a_vals[if a_transposed { p * m + i } else { i * k + p }]
                        };
                        let want = definition(m, k, n, a_at, |p, j| b_vals[j * k + p]);
                        // C inside a buffer with 3 spare rows/columns around it.
                        let (c_rows, c_cols) = if c_transposed { (1, m + 3) } else { (n + 3, 1) };
                        let len = m.max(n) * (m.max(n) + 3);
                        let c0 = values(len, 64);
                        let mut c = c0.clone();
                        // SAFETY: A, B and C hold their shapes; C is ours alone.
                        unsafe {
                            gemm(
                                m,
                                a_op,
                                &b,
                                bias,
                                accumulate,
                                SharedMut(c.as_mut_ptr()),
                                c_rows as isize,
                                c_cols as isize,
                                true,
                            );
                        }
                        let mut inside = vec![false; len];
                        for i in 0..m {
                            for j in 0..n {
                                let at = i * c_rows + j * c_cols;
                                inside[at] = true;
                                let mut w = want[i * n + j];
                                if let Some(bias) = bias {
                                    w += bias[j] as f64;
                                }
                                if accumulate {
                                    w += c0[at] as f64;
                                }
                                let got = c[at] as f64;
                                assert!(
                                    (got - w).abs() < 1e-5 * (1.0 + k as f64).sqrt(),
                                    "{m}×{k}×{n} (A transposed {a_transposed}, C transposed \
                                     {c_transposed}, bias {}): C[{i},{j}] = {got}, want {w}",
                                    bias.is_some()
                                );
                            }
                        }
                        for (at, &inside) in inside.iter().enumerate() {
                            if !inside {
                                assert_eq!(c[at], c0[at], "{m}×{k}×{n}: wrote outside C at {at}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 kernel and the portable one agree on a full tile and on a partial one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernels_agree() {
        if !kernel::avx2_fma() {
            return;
        }
        let kc = 37;
        let mut a = Aligned::zeroed(kc * MR);
        let mut b = Aligned::zeroed(kc * NR);
        a.as_mut_slice()[..kc * MR].copy_from_slice(&values(kc * MR, 71));
        b.as_mut_slice()[..kc * NR].copy_from_slice(&values(kc * NR, 72));
        let bias: [f32; NR] = std::array::from_fn(|j| j as f32 * 0.25);
        for (rows, cols) in [(MR, NR), (4, 9)] {
            let c0 = values(MR * NR, 73);
            let (mut c1, mut c2) = (c0.clone(), c0.clone());
            for (c, portable) in [(&mut c1, false), (&mut c2, true)] {
                let t = Tile {
                    c: c.as_mut_ptr(),
                    rs: NR as isize,
                    cs: 1,
                    rows,
                    cols,
                    load_c: true,
                    bias: Some(&bias),
                };
                // SAFETY: the panels hold kc steps; C holds the whole tile.
                unsafe {
                    if portable {
                        kernel::portable_tile(kc, a.as_ptr(), b.as_ptr(), &t)
                    } else {
                        kernel::tile(kc, a.as_ptr(), b.as_ptr(), &t)
                    }
                }
            }
            for (x, y) in c1.iter().zip(&c2) {
                assert!((x - y).abs() < 1e-5, "{rows}×{cols}: {x} vs {y}");
            }
            assert_ne!(c1, c0, "the kernel wrote nothing");
        }
    }
}
