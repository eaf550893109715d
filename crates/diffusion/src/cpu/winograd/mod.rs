//! 3×3 convolutions (stride 1, padding 1: every ResNet and up-sampling convolution of a UNet and a
//! VAE) by Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016). With `d` an input tile, `g` a 3×3 filter and ⊙ the element-wise product,
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: the products are one GEMM of `tiles × c_in × c_out` per
//! position ξ of a transformed tile, spread over the cores.
//!
//! Two tilings, chosen per image:
//! - F(2×2, 3×3) (`f2.rs`): 16 products for 4 outputs, 2.25× fewer flops than the direct
//!   convolution, exact transforms. Used below [`F4_MIN_TILES`], where F(4×4, 3×3)'s four times
//!   fewer tiles made the products too short to run efficiently (measured with matrixmultiply).
//! - F(4×4, 3×3) (`f4.rs`): 36 products for 16 outputs, 4× fewer flops, and transformed tiles of
//!   2.25 floats per pixel and channel instead of 4 — about 30 % faster on the VAE's full-size
//!   layers. Its transforms' integer coefficients (up to 8) cost a few bits: at 256 input
//!   channels the outputs are within 9e-6 of the largest output of the exact convolution (the
//!   test), and the pipelines' latents stay within 6.1e-5 of diffusers' (tests/pipeline.rs;
//!   3.7e-5 with F(2×2, 3×3) alone; the bound is 1e-4).
//!
//! A layer holds only its 3×3 weights. Its transformed filters (16 or 36 floats where the layer
//! has 9: kept for the model's life they were 2–4 times its convolutions' weights, 3.6 GB of
//! SD1.5-inpainting's peak) are made at each call, for all the batch's images and bands at once,
//! into scratch buffers that calls reuse: 16 output channels at a time (one packed panel, the
//! micro-kernel's width), a transform vectorised across those channels, written straight in the
//! layout the products read.

mod f2;
mod f4;

use std::sync::Mutex;

use rayon::prelude::*;

use super::gemm::{NR, PackedB, gemm};
use super::{Operand, SharedMut};

/// Sets of transformed filters (one packed `c_in × c_out` matrix per position ξ) kept between
/// calls, so that a call allocates none: one set per convolution running at the same time
/// (usually one), each as large as the largest layer it has served, 16 or 36 · c_in · c_out
/// floats: 210 MB for the 2560 → 1280 layers of SD1.5 at 512² and SDXL at 1024² (F(2×2, 3×3));
/// at 2048² SDXL's take F(4×4, 3×3), 472 MB.
static SCRATCH: Mutex<Vec<Vec<PackedB>>> = Mutex::new(Vec::new());

/// Images with at least this many 4×4 tiles (64×64 pixels) go through F(4×4, 3×3).
const F4_MIN_TILES: usize = 256;

/// The most floats the transformed inputs and products of one band of tile rows take (32 MiB).
const BAND_FLOATS: usize = 8 << 20;

/// One of the two tilings.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tiling {
    F2,
    F4,
}

impl Tiling {
    /// Outputs along a tile's side.
    fn out(self) -> usize {
        match self {
            Tiling::F2 => 2,
            Tiling::F4 => 4,
        }
    }

    /// Positions of a transformed tile: `(out + 2)²`.
    fn positions(self) -> usize {
        (self.out() + 2) * (self.out() + 2)
    }

    /// For each position ξ, `uᵀ_ξ` (`c_in × c_out`) packed for [`gemm`] into `u[ξ]` (reshaped,
    /// its allocations reused), from PyTorch's `[c_out, c_in, 3, 3]` weight.
    fn filters_into(self, weight: &[f32], c_out: usize, c_in: usize, u: &mut Vec<PackedB>) {
        let xi_count = self.positions();
        // Never fewer: a set that served F(4×4, 3×3) keeps its 36 matrices for the next one.
        if u.len() < xi_count {
            u.resize_with(xi_count, PackedB::empty);
        }
        let planes: Vec<SharedMut> = u[..xi_count]
            .iter_mut()
            .map(|p| SharedMut(p.reshape(c_in, c_out).as_mut_ptr()))
            .collect();
        // One task per panel of NR output channels: each writes its panel of every ξ's matrix.
        (0..c_out.div_ceil(NR)).into_par_iter().for_each(|jp| {
            let panel = Panel {
                weight,
                c_out,
                c_in,
                jp,
                planes: &planes,
            };
            // SAFETY: each plane holds c_out.div_ceil(NR)·c_in·NR floats; this task writes panel
            // jp's only, and the planes outlive the join.
            unsafe {
                match self {
                    Tiling::F2 => transform_panel(&f2::G, f2::xi, panel),
                    Tiling::F4 => transform_panel(&f4::G, f4::xi, panel),
                }
            }
        });
    }
}

/// Panel `jp` of a filter bank's transform: PyTorch's `[c_out, c_in, 3, 3]` weight, and the
/// packed matrix of each position ξ to write it into.
#[derive(Clone, Copy)]
struct Panel<'a> {
    weight: &'a [f32],
    c_out: usize,
    c_in: usize,
    jp: usize,
    planes: &'a [SharedMut],
}

/// `G g Gᵀ` of the filters of output channels `jp·NR ..` (NR lanes, zeros past `c_out`) for
/// every input channel, written as panel `jp` of each ξ's packed matrix; position (i, j) is
/// `xi(i, j)`.
///
/// # Safety
/// Each of `planes` must be valid for panel `jp` (`(jp·c_in + c)·NR + lane`), and no other thread
/// may access that panel meanwhile.
unsafe fn transform_panel<const S: usize>(
    g_matrix: &[[f32; 3]; S],
    xi: fn(usize, usize) -> usize,
    panel: Panel,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features are there; the rest is the caller's guarantee.
        return unsafe { transform_panel_avx2(g_matrix, xi, panel) };
    }
    // SAFETY: the caller's guarantee.
    unsafe { transform_panel_lanes(g_matrix, xi, panel) }
}

/// [`transform_panel`] compiled for AVX2 and FMA (the lanes are one loop the compiler widens).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_panel_avx2<const S: usize>(
    g_matrix: &[[f32; 3]; S],
    xi: fn(usize, usize) -> usize,
    panel: Panel,
) {
    // SAFETY: the caller's guarantee.
    unsafe { transform_panel_lanes(g_matrix, xi, panel) }
}

#[inline(always)]
unsafe fn transform_panel_lanes<const S: usize>(
    g_matrix: &[[f32; 3]; S],
    xi: fn(usize, usize) -> usize,
    Panel {
        weight,
        c_out,
        c_in,
        jp,
        planes,
    }: Panel,
) {
    let lanes = NR.min(c_out - jp * NR);
    for c in 0..c_in {
        // The NR filters' taps, lane by lane (zeros past c_out, so the panel's padding is zero).
        let mut g = [[0.0f32; NR]; 9];
        for lane in 0..lanes {
            let taps = &weight[((jp * NR + lane) * c_in + c) * 9..][..9];
            for (k, tap) in taps.iter().enumerate() {
                g[k][lane] = *tap;
            }
        }
        // G g: S × 3.
        let mut t = [[[0.0f32; NR]; 3]; S];
        for (i, row) in g_matrix.iter().enumerate() {
            for s in 0..3 {
                for r in 0..3 {
                    for lane in 0..NR {
                        t[i][s][lane] += row[r] * g[r * 3 + s][lane];
                    }
                }
            }
        }
        // (G g) Gᵀ, each position's NR lanes one store.
        for (i, t) in t.iter().enumerate() {
            for (j, col) in g_matrix.iter().enumerate() {
                let mut u = [0.0f32; NR];
                for s in 0..3 {
                    for lane in 0..NR {
                        u[lane] += t[s][lane] * col[s];
                    }
                }
                // SAFETY: the caller's guarantee: panel jp, depth c of ξ's matrix.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        u.as_ptr(),
                        planes[xi(i, j)].ptr().add((jp * c_in + c) * NR),
                        NR,
                    )
                };
            }
        }
    }
}

/// A 3×3 filter bank, as PyTorch holds it.
#[derive(Debug)]
pub struct Winograd {
    /// PyTorch's `[c_out, c_in, 3, 3]`, transformed at each call.
    weight: Vec<f32>,
    c_in: usize,
    c_out: usize,
}

impl Winograd {
    /// From PyTorch's `[c_out, c_in, 3, 3]` weight.
    pub fn new(weight: Vec<f32>, c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "a 3×3 filter bank");
        Winograd {
            weight,
            c_in,
            c_out,
        }
    }

    /// Adds the convolution of `images` (`[batch, c_in, h, w]`) to `out` (`[batch, c_out, h, w]`,
    /// which holds the bias, or zeros).
    pub fn forward(&self, images: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let tiling = if h.div_ceil(4) * w.div_ceil(4) >= F4_MIN_TILES {
            Tiling::F4
        } else {
            Tiling::F2
        };
        self.forward_with(tiling, images, h, w, out, BAND_FLOATS);
    }

    /// [`Self::forward`] by `tiling`, with at most `band_floats` of transformed tiles at a time.
    fn forward_with(
        &self,
        tiling: Tiling,
        images: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        band_floats: usize,
    ) {
        let (c_in, c_out) = (self.c_in, self.c_out);
        if h * w == 0 || c_in * c_out == 0 {
            return;
        }
        let mut u = SCRATCH
            .lock()
            .map(|mut sets| sets.pop())
            .unwrap_or_default()
            .unwrap_or_default();
        tiling.filters_into(&self.weight, c_out, c_in, &mut u);
        for (image, out) in images
            .chunks_exact(c_in * h * w)
            .zip(out.chunks_exact_mut(c_out * h * w))
        {
            self.forward_banded(
                tiling,
                &u[..tiling.positions()],
                image,
                h,
                w,
                out,
                band_floats,
            );
        }
        if let Ok(mut sets) = SCRATCH.lock() {
            sets.push(u);
        }
    }

    /// One image by `tiling` with its transformed filters `u`, at most `band_floats` of
    /// transformed tiles at a time.
    #[allow(clippy::too_many_arguments)]
    fn forward_banded(
        &self,
        tiling: Tiling,
        u: &[PackedB],
        image: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        band_floats: usize,
    ) {
        let (c_in, c_out) = (self.c_in, self.c_out);
        let (side, xi_count) = (tiling.out(), tiling.positions());
        let (tiles_y, tiles_x) = (h.div_ceil(side), w.div_ceil(side));
        if tiles_y == 0 || tiles_x == 0 {
            return;
        }
        let band = (band_floats / (xi_count * (c_in + c_out) * tiles_x).max(1)).clamp(1, tiles_y);
        let tiles = band * tiles_x;
        // v[c][ξ][t] and m[o][ξ][t]: one channel's planes contiguous, so that channels are
        // transformed in parallel; the products read the ξ-th planes with strides.
        let mut v = vec![0.0f32; c_in * xi_count * tiles];
        let mut m = vec![0.0f32; c_out * xi_count * tiles];
        for ty0 in (0..tiles_y).step_by(band) {
            let rows = band.min(tiles_y - ty0);
            let t_count = rows * tiles_x;
            let this = Band {
                h,
                w,
                ty0,
                rows,
                tiles_x,
                tiles,
            };
            v.par_chunks_mut(xi_count * tiles)
                .zip(image.par_chunks(h * w))
                .for_each(|(v, channel)| match tiling {
                    Tiling::F2 => f2::input(channel, this, v),
                    Tiling::F4 => f4::input(channel, this, v),
                });
            let m_ptr = SharedMut(m.as_mut_ptr());
            (0..xi_count).into_par_iter().for_each(|xi| {
                // mᵀ_ξ (t × c_out) = vᵀ_ξ (t × c_in) · uᵀ_ξ (c_in × c_out), one product per
                // task (the 16 or 36 of them are the parallelism).
                // SAFETY: A element (t, c) at c·XI·tiles + ξ·tiles + t < c_in·XI·tiles (t <
                // t_count ≤ tiles, XI = xi_count); B is packed c_in × c_out; C element (t, o)
                // at o·XI·tiles + ξ·tiles + t < c_out·XI·tiles, and the tasks write disjoint ξ
                // planes. C does not alias A or B; all outlive the call.
                unsafe {
                    gemm(
                        t_count,
                        Operand {
                            ptr: v.as_ptr().add(xi * tiles),
                            rows: 1,
                            cols: (xi_count * tiles) as isize,
                        },
                        &u[xi],
                        None,
                        false,
                        SharedMut(m_ptr.ptr().add(xi * tiles)),
                        1,
                        (xi_count * tiles) as isize,
                        false,
                    );
                }
            });
            out.par_chunks_mut(h * w)
                .zip(m.par_chunks(xi_count * tiles))
                .for_each(|(plane, m)| match tiling {
                    Tiling::F2 => f2::output(m, this, plane),
                    Tiling::F4 => f4::output(m, this, plane),
                });
        }
    }
}

/// One band of tile rows of an `h × w` image: tile rows `ty0..ty0 + rows`, `tiles_x` tiles per
/// row, tile `(ty - ty0)·tiles_x + tx` at that index of each of a channel's planes (one per
/// position ξ), which are `tiles` long.
#[derive(Clone, Copy)]
struct Band {
    h: usize,
    w: usize,
    ty0: usize,
    rows: usize,
    tiles_x: usize,
    tiles: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::values;

    /// The convolution by definition, in f64.
    fn direct(image: &[f32], weight: &[f32], bias: &[f32], dims: [usize; 4]) -> Vec<f64> {
        let [c_in, c_out, h, w] = dims;
        let mut out = vec![0.0f64; c_out * h * w];
        for o in 0..c_out {
            for y in 0..h {
                for x in 0..w {
                    let mut acc = bias[o] as f64;
                    for c in 0..c_in {
                        for r in 0..3 {
                            for s in 0..3 {
                                let (yy, xx) = ((y + r) as isize - 1, (x + s) as isize - 1);
                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                    acc += image[(c * h + yy as usize) * w + xx as usize] as f64
                                        * weight[((o * c_in + c) * 3 + r) * 3 + s] as f64;
                                }
                            }
                        }
                    }
                    out[(o * h + y) * w + x] = acc;
                }
            }
        }
        out
    }

    /// Both tilings against the definition: even and odd sizes (partial tiles on the right and
    /// bottom), a single pixel, a UNet-like 256 input channels; one tile row per band and the
    /// whole image in one. The bound is on the largest error relative to the largest output:
    /// F(2×2, 3×3) is as close as a direct f32 sum, F(4×4, 3×3) loses a few bits to its
    /// transforms' coefficients (9e-6 at 256 channels).
    #[test]
    fn winograd_matches_the_definition() {
        let mut worst = [0f64; 2];
        for (c_in, c_out, h, w) in [
            (3, 4, 6, 8),
            (5, 6, 9, 11),
            (2, 3, 1, 1),
            (16, 8, 13, 7),
            (256, 8, 16, 18),
        ] {
            let weight = values(c_out * c_in * 9, 31)
                .iter()
                .map(|v| v * 0.5)
                .collect::<Vec<_>>();
            let bias = values(c_out, 32);
            let image = values(c_in * h * w, 33);
            let want = direct(&image, &weight, &bias, [c_in, c_out, h, w]);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let winograd = Winograd::new(weight.clone(), c_out, c_in);
            for (tiling, band_floats) in [Tiling::F2, Tiling::F4]
                .into_iter()
                .flat_map(|t| [(t, 1), (t, usize::MAX)])
            {
                let mut out: Vec<f32> = bias
                    .iter()
                    .flat_map(|b| std::iter::repeat_n(*b, h * w))
                    .collect();
                winograd.forward_with(tiling, &image, h, w, &mut out, band_floats);
                let err = out
                    .iter()
                    .zip(&want)
                    .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()))
                    / scale;
                let bound = if tiling == Tiling::F2 { 2e-6 } else { 2e-5 };
                assert!(
                    err <= bound,
                    "{tiling:?}, {c_in}→{c_out} at {h}×{w}: relative error {err:.2e}"
                );
                worst[tiling as usize] = worst[tiling as usize].max(err);
            }
        }
        eprintln!(
            "against the definition, relative error: F(2×2, 3×3) ≤ {:.2e}, F(4×4, 3×3) ≤ {:.2e}",
            worst[0], worst[1]
        );
    }
}
