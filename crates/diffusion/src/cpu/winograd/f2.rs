//! F(2×2, 3×3): each 2×2 block of outputs from a 4×4 block of inputs, 16 products per channel
//! pair where the direct convolution takes 36:
//! `Bᵀ = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]`, `G = [[1,0,0],[½,½,½],[½,-½,½],[0,0,1]]`,
//! `Aᵀ = [[1,1,1,0],[0,1,-1,-1]]`. Every coefficient is 0, ±1 or ½, so the transforms add no
//! rounding beyond the sums' own. Position `ξ = i·4 + j` holds row `i`, column `j`.

use super::Band;

/// `G`: the filters' transform `G g Gᵀ` (exact in f32: every coefficient is 0, ±1 or ½).
pub(super) const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// The position of row `i` (of `G g`), column `j` (of `(G g) Gᵀ`).
pub(super) const fn xi(i: usize, j: usize) -> usize {
    i * 4 + j
}

/// `Bᵀ d B` for the band's tiles of one channel, into its 16 planes `v`.
pub(super) fn input(channel: &[f32], band: Band, v: &mut [f32]) {
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
pub(super) fn output(m: &[f32], band: Band, plane: &mut [f32]) {
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
