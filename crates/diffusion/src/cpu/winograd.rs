//! 3×3 convolutions (stride 1, padding 1: every ResNet and up-sampling convolution of a UNet and a
//! VAE) by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016): each 2×2 block of outputs from a 4×4 block of inputs
//! with 16 multiplications per channel pair instead of 36, so the products are 16 sgemms of
//! `tiles × c_in × c_out`, 2.25× fewer flops than im2col's one sgemm.
//!
//! With `d` a 4×4 input tile, `g` a 3×3 filter and ⊙ the element-wise product:
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, where
//! `Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]`, `G = [[1,0,0],[½,½,½],[½,-½,½],[0,0,1]]`,
//! `Aᵀ = [[1,1,1,0],[0,1,-1,-1]]`. Every coefficient is 0, ±1 or ½, so the transforms add no
//! rounding beyond the sums' own: F(2×2, 3×3) is as accurate in f32 as the direct product (larger
//! tiles, F(4×4, 3×3), would save more but lose digits to their fractions).

use rayon::prelude::*;

use super::SharedMut;

/// The most floats the transformed inputs and products of one band of tile rows take (32 MiB).
const BAND_FLOATS: usize = 8 << 20;

/// A 3×3 filter bank transformed for F(2×2, 3×3): `u[ξ][o][c]` for the 16 positions ξ of a tile.
#[derive(Debug)]
pub struct Winograd {
    u: Vec<f32>,
    c_in: usize,
    c_out: usize,
}

impl Winograd {
    /// From PyTorch's `[c_out, c_in, 3, 3]` weight.
    pub fn new(weight: &[f32], c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "a 3×3 filter bank");
        let mut u = vec![0.0f32; 16 * c_out * c_in];
        for o in 0..c_out {
            for c in 0..c_in {
                let g = &weight[(o * c_in + c) * 9..][..9];
                let g = |r: usize, s: usize| g[r * 3 + s] as f64;
                // G g: 4×3.
                let gg: [[f64; 3]; 4] = [
                    std::array::from_fn(|s| g(0, s)),
                    std::array::from_fn(|s| 0.5 * (g(0, s) + g(1, s) + g(2, s))),
                    std::array::from_fn(|s| 0.5 * (g(0, s) - g(1, s) + g(2, s))),
                    std::array::from_fn(|s| g(2, s)),
                ];
                // (G g) Gᵀ: 4×4.
                for (i, row) in gg.iter().enumerate() {
                    let t = [
                        row[0],
                        0.5 * (row[0] + row[1] + row[2]),
                        0.5 * (row[0] - row[1] + row[2]),
                        row[2],
                    ];
                    for (j, v) in t.iter().enumerate() {
                        u[((i * 4 + j) * c_out + o) * c_in + c] = *v as f32;
                    }
                }
            }
        }
        Winograd { u, c_in, c_out }
    }

    /// Adds the convolution of one image `[c_in, h, w]` to `out` `[c_out, h, w]` (which holds the
    /// bias, or zeros).
    pub fn forward_image(&self, image: &[f32], h: usize, w: usize, out: &mut [f32]) {
        self.forward_banded(image, h, w, out, BAND_FLOATS);
    }

    /// [`Self::forward_image`] with at most `band_floats` of transformed tiles at a time.
    fn forward_banded(
        &self,
        image: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        band_floats: usize,
    ) {
        let (c_in, c_out) = (self.c_in, self.c_out);
        let (tiles_y, tiles_x) = (h.div_ceil(2), w.div_ceil(2));
        if tiles_y == 0 || tiles_x == 0 {
            return;
        }
        let band = (band_floats / (16 * (c_in + c_out) * tiles_x).max(1)).clamp(1, tiles_y);
        let tiles = band * tiles_x;
        // v[c][ξ][t] and m[o][ξ][t]: one channel's 16 planes contiguous, so that channels are
        // transformed in parallel; sgemm reads the ξ-th planes with strides.
        let mut v = vec![0.0f32; c_in * 16 * tiles];
        let mut m = vec![0.0f32; c_out * 16 * tiles];
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
            v.par_chunks_mut(16 * tiles)
                .zip(image.par_chunks(h * w))
                .for_each(|(v, channel)| transform_input(channel, this, v));
            let m_ptr = SharedMut(m.as_mut_ptr());
            (0..16).into_par_iter().for_each(|xi| {
                // mᵀ_ξ (t × c_out) = vᵀ_ξ (t × c_in) · uᵀ_ξ (c_in × c_out), the 16 products
                // spread over the cores.
                // SAFETY: A element (t, c) at c·16·tiles + ξ·tiles + t < c_in·16·tiles (t <
                // t_count ≤ tiles); B element (c, o) at (ξ·c_out + o)·c_in + c < 16·c_out·c_in;
                // C element (t, o) at o·16·tiles + ξ·tiles + t < c_out·16·tiles, and the tasks
                // write disjoint ξ planes. C does not alias A or B; all outlive the call.
                unsafe {
                    matrixmultiply::sgemm(
                        t_count,
                        c_in,
                        c_out,
                        1.0,
                        v.as_ptr().add(xi * tiles),
                        1,
                        (16 * tiles) as isize,
                        self.u.as_ptr().add(xi * c_out * c_in),
                        1,
                        c_in as isize,
                        0.0,
                        m_ptr.ptr().add(xi * tiles),
                        1,
                        (16 * tiles) as isize,
                    );
                }
            });
            out.par_chunks_mut(h * w)
                .zip(m.par_chunks(16 * tiles))
                .for_each(|(plane, m)| transform_output(m, this, plane));
        }
    }
}

/// One band of tile rows of an `h × w` image: tile rows `ty0..ty0 + rows`, `tiles_x` tiles per
/// row, tile `(ty - ty0)·tiles_x + tx` at that index of each of a channel's 16 planes, which are
/// `tiles` long.
#[derive(Clone, Copy)]
struct Band {
    h: usize,
    w: usize,
    ty0: usize,
    rows: usize,
    tiles_x: usize,
    tiles: usize,
}

/// `Bᵀ d B` for the band's tiles of one channel, into its 16 planes `v`.
fn transform_input(channel: &[f32], band: Band, v: &mut [f32]) {
    let (h, w, ty0, tiles_x, tiles) = (band.h, band.w, band.ty0, band.tiles_x, band.tiles);
    // Input rows with a zero column on the left (x = -1) and zeros past the right edge: a tile
    // at tx reads padded columns 2·tx .. 2·tx + 4.
    let width = 2 * tiles_x + 2;
    let mut d = vec![0.0f32; 4 * width];
    let mut r = vec![0.0f32; 4 * width];
    for ty in ty0..ty0 + band.rows {
        for (i, row) in d.chunks_exact_mut(width).enumerate() {
            let y = (2 * ty + i) as isize - 1;
            row.fill(0.0);
            if y >= 0 && (y as usize) < h {
                row[1..1 + w].copy_from_slice(&channel[y as usize * w..][..w]);
            }
        }
        // Bᵀ d along y, whole rows at once.
        let (d0, rest) = d.split_at(width);
        let (d1, rest) = rest.split_at(width);
        let (d2, d3) = rest.split_at(width);
        let (r0, rest) = r.split_at_mut(width);
        let (r1, rest) = rest.split_at_mut(width);
        let (r2, r3) = rest.split_at_mut(width);
        for x in 0..width {
            r0[x] = d0[x] - d2[x];
            r1[x] = d1[x] + d2[x];
            r2[x] = d2[x] - d1[x];
            r3[x] = d1[x] - d3[x];
        }
        // ·B along x, tile by tile.
        let t0 = (ty - ty0) * tiles_x;
        for (i, row) in [&*r0, &*r1, &*r2, &*r3].into_iter().enumerate() {
            let (p0, rest) = v[i * 4 * tiles..].split_at_mut(tiles);
            let (p1, rest) = rest.split_at_mut(tiles);
            let (p2, rest) = rest.split_at_mut(tiles);
            let p3 = &mut rest[..tiles];
            for tx in 0..tiles_x {
                let x = &row[2 * tx..2 * tx + 4];
                let t = t0 + tx;
                p0[t] = x[0] - x[2];
                p1[t] = x[1] + x[2];
                p2[t] = x[2] - x[1];
                p3[t] = x[1] - x[3];
            }
        }
    }
}

/// `Aᵀ m A` for the band's tiles of one output channel (its 16 planes `m`), added into the
/// channel's `plane` `[h, w]`.
fn transform_output(m: &[f32], band: Band, plane: &mut [f32]) {
    let (h, w, ty0, tiles_x, tiles) = (band.h, band.w, band.ty0, band.tiles_x, band.tiles);
    let p = |xi: usize| &m[xi * tiles..(xi + 1) * tiles];
    let planes: [&[f32]; 16] = std::array::from_fn(p);
    for ty in ty0..ty0 + band.rows {
        let t0 = (ty - ty0) * tiles_x;
        let y = 2 * ty;
        for tx in 0..tiles_x {
            let t = t0 + tx;
            let q = |i: usize, j: usize| planes[i * 4 + j][t];
            // Aᵀ along y: s[a][j].
            let s: [[f32; 4]; 2] = [
                std::array::from_fn(|j| q(0, j) + q(1, j) + q(2, j)),
                std::array::from_fn(|j| q(1, j) - q(2, j) - q(3, j)),
            ];
            let x = 2 * tx;
            for (a, s) in s.iter().enumerate() {
                if y + a >= h {
                    break;
                }
                let row = &mut plane[(y + a) * w..][..w];
                row[x] += s[0] + s[1] + s[2];
                if x + 1 < w {
                    row[x + 1] += s[1] - s[2] - s[3];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::values;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Device, Tensor, TensorData};

    /// Against Burn's direct `conv2d` (bias added by both): even and odd sizes (partial tiles on
    /// the right and bottom), a single pixel, one tile row per band and the whole image in one.
    #[test]
    fn winograd_matches_direct_convolution() {
        let device = Device::flex();
        for (c_in, c_out, h, w) in [(3, 4, 6, 8), (5, 6, 9, 11), (2, 3, 1, 1), (16, 8, 13, 7)] {
            let weight = values(c_out * c_in * 9, 31)
                .iter()
                .map(|v| v * 0.5)
                .collect::<Vec<_>>();
            let bias = values(c_out, 32);
            let image = values(c_in * h * w, 33);
            let want = conv2d(
                Tensor::<4>::from_data(TensorData::new(image.clone(), [1, c_in, h, w]), &device),
                Tensor::<4>::from_data(
                    TensorData::new(weight.clone(), [c_out, c_in, 3, 3]),
                    &device,
                ),
                Some(Tensor::<1>::from_data(
                    TensorData::new(bias.clone(), [c_out]),
                    &device,
                )),
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            )
            .into_data();
            let winograd = Winograd::new(&weight, c_out, c_in);
            for band_floats in [1, usize::MAX] {
                let mut out: Vec<f32> = bias
                    .iter()
                    .flat_map(|b| std::iter::repeat_n(*b, h * w))
                    .collect();
                winograd.forward_banded(&image, h, w, &mut out, band_floats);
                TensorData::new(out, [1, c_out, h, w])
                    .assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(2e-5));
            }
        }
    }
}
