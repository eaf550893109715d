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
//! Each tiling's filters (16 or 36 floats where the layer has 9) are transformed the first time
//! a layer sees an image that takes it, so a layer holds only the ones it uses.

mod f2;
mod f4;

use std::sync::OnceLock;

use rayon::prelude::*;

use super::gemm::{PackedB, gemm};
use super::{Operand, SharedMut};

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

    /// For each position ξ, `uᵀ_ξ` (`c_in × c_out`) packed for [`gemm`], from PyTorch's `[c_out,
    /// c_in, 3, 3]` weight.
    fn filters(self, weight: &[f32], c_out: usize, c_in: usize) -> Vec<PackedB> {
        let xi_count = self.positions();
        let mut u = vec![0.0f32; xi_count * c_out * c_in];
        let u_ptr = SharedMut(u.as_mut_ptr());
        // One task per output channel: a bank of 1280 × 2560 filters is millions of transforms.
        weight
            .par_chunks_exact(9 * c_in)
            .enumerate()
            .for_each(|(o, bank)| {
                let write = |c: usize, t: &[f64]| {
                    for (xi, v) in t.iter().enumerate() {
                        // SAFETY: element (ξ, o, c) is below ξ_count·c_out·c_in, and each task
                        // writes only its own output channel `o`; `u` outlives the join.
                        unsafe { *u_ptr.ptr().add((xi * c_out + o) * c_in + c) = *v as f32 };
                    }
                };
                for (c, g) in bank.chunks_exact(9).enumerate() {
                    let g: [f64; 9] = std::array::from_fn(|k| g[k] as f64);
                    match self {
                        Tiling::F2 => write(c, &f2::filter(&g)),
                        Tiling::F4 => write(c, &f4::filter(&g)),
                    }
                }
            });
        let size = c_out * c_in;
        (0..xi_count)
            .into_par_iter()
            .map(|xi| PackedB::from_transposed(&u[xi * size..(xi + 1) * size], c_in, c_out))
            .collect()
    }
}

/// A 3×3 filter bank, held as the tilings need it.
#[derive(Debug)]
pub struct Winograd {
    /// PyTorch's `[c_out, c_in, 3, 3]`, kept to transform for a tiling on its first use.
    weight: Vec<f32>,
    /// Transformed for F(2×2, 3×3) and for F(4×4, 3×3), each once an image needs it.
    transformed: [OnceLock<Vec<PackedB>>; 2],
    c_in: usize,
    c_out: usize,
}

impl Winograd {
    /// From PyTorch's `[c_out, c_in, 3, 3]` weight.
    pub fn new(weight: Vec<f32>, c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "a 3×3 filter bank");
        Winograd {
            weight,
            transformed: [OnceLock::new(), OnceLock::new()],
            c_in,
            c_out,
        }
    }

    /// Adds the convolution of one image `[c_in, h, w]` to `out` `[c_out, h, w]` (which holds the
    /// bias, or zeros).
    pub fn forward_image(&self, image: &[f32], h: usize, w: usize, out: &mut [f32]) {
        let tiling = if h.div_ceil(4) * w.div_ceil(4) >= F4_MIN_TILES {
            Tiling::F4
        } else {
            Tiling::F2
        };
        self.forward_banded(tiling, image, h, w, out, BAND_FLOATS);
    }

    /// The filters transformed for `tiling`.
    fn filters(&self, tiling: Tiling) -> &[PackedB] {
        self.transformed[tiling as usize]
            .get_or_init(|| tiling.filters(&self.weight, self.c_out, self.c_in))
    }

    /// [`Self::forward_image`] by `tiling`, with at most `band_floats` of transformed tiles at a
    /// time.
    fn forward_banded(
        &self,
        tiling: Tiling,
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
        let u = self.filters(tiling);
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
                winograd.forward_banded(tiling, &image, h, w, &mut out, band_floats);
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
