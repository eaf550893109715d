//! F(4×4, 3×3): each 4×4 block of outputs from a 6×6 block of inputs, 36 products per channel
//! pair where the direct convolution takes 144. Interpolating at 0, ±1, ±2 and ∞:
//! ```text
//! Bᵀ = [ 4  0 -5  0  1  0     G = [ 1/4     0     0      Aᵀ = [ 1  1  1  1  1  0
//!        0 -4 -4  1  1  0          -1/6  -1/6  -1/6             0  1 -1  2 -2  0
//!        0  4 -4 -1  1  0          -1/6   1/6  -1/6             0  1  1  4  4  0
//!        0 -2 -1  2  1  0           1/24  1/12  1/6             0  1 -1  8 -8  1 ]
//!        0  2 -1 -2  1  0           1/24 -1/12  1/6
//!        0  4  0 -5  0  1 ]         0     0     1   ]
//! ```
//! Position `ξ = j·6 + i` of a transformed tile holds row `i`, column `j`, so that one column's
//! six positions are adjacent planes and the transforms run along whole tile rows at once.

use super::Band;

/// Outputs along a tile's side.
const OUT: usize = 4;
/// Inputs along a tile's side: `OUT + 2`.
const IN: usize = 6;

/// `G`: the filters' transform `G g Gᵀ`.
pub(super) const G: [[f32; 3]; IN] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// The position of row `i` (of `G g`), column `j` (of `(G g) Gᵀ`): one column's six positions
/// are adjacent.
pub(super) const fn xi(i: usize, j: usize) -> usize {
    j * IN + i
}

/// `Bᵀ x` for six inputs along one axis.
#[inline(always)]
fn b_t([x0, x1, x2, x3, x4, x5]: [f32; IN]) -> [f32; IN] {
    [
        4.0 * x0 - 5.0 * x2 + x4,
        (x3 + x4) - 4.0 * (x1 + x2),
        (x4 - x3) + 4.0 * (x1 - x2),
        (x4 - x2) + 2.0 * (x3 - x1),
        (x4 - x2) - 2.0 * (x3 - x1),
        4.0 * x1 - 5.0 * x3 + x5,
    ]
}

/// `Aᵀ m` for six products along one axis.
#[inline(always)]
fn a_t([m0, m1, m2, m3, m4, m5]: [f32; IN]) -> [f32; OUT] {
    let (d12, s12, d34, s34) = (m1 - m2, m1 + m2, m3 - m4, m3 + m4);
    [
        m0 + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + m5,
    ]
}

/// The first `N` chunks of `stride` floats of `data`, each cut to `len` floats from `start`.
fn strided_mut<const N: usize>(
    data: &mut [f32],
    stride: usize,
    start: usize,
    len: usize,
) -> [&mut [f32]; N] {
    let mut it = data.chunks_exact_mut(stride);
    std::array::from_fn(|_| match it.next() {
        Some(chunk) => &mut chunk[start..start + len],
        None => unreachable!("N chunks of `stride` floats"),
    })
}

/// `Bᵀ d B` for the band's tiles of one channel, into its 36 planes `v`.
pub(super) fn input(channel: &[f32], band: Band, v: &mut [f32]) {
    let (h, w, tiles_x) = (band.h, band.w, band.tiles_x);
    // One input row with a zero column on the left (x = -1) and zeros past the right edge: the
    // tile at tx reads padded columns OUT·tx .. OUT·tx + IN.
    let mut row = vec![0.0f32; OUT * tiles_x + 2];
    // d·B of the tile row's IN input rows: `rb[(k·IN + j)·tiles_x + tx]` for input row k.
    let mut rb = vec![0.0f32; IN * IN * tiles_x];
    for ty in band.ty0..band.ty0 + band.rows {
        for (k, rb) in rb.chunks_exact_mut(IN * tiles_x).enumerate() {
            let y = (OUT * ty + k) as isize - 1;
            row.fill(0.0);
            if y >= 0 && (y as usize) < h {
                row[1..1 + w].copy_from_slice(&channel[y as usize * w..][..w]);
            }
            for (tx, x) in row.windows(IN).step_by(OUT).enumerate() {
                let t = b_t(std::array::from_fn(|i| x[i]));
                for (j, t) in t.into_iter().enumerate() {
                    rb[j * tiles_x + tx] = t;
                }
            }
        }
        // Bᵀ along y, column j of every tile of the row at once.
        let t0 = (ty - band.ty0) * tiles_x;
        for j in 0..IN {
            let col: [&[f32]; IN] =
                std::array::from_fn(|k| &rb[(k * IN + j) * tiles_x..][..tiles_x]);
            // Column j's IN planes (positions j·IN .. j·IN + IN), at this tile row.
            let [p0, p1, p2, p3, p4, p5] =
                strided_mut(&mut v[j * IN * band.tiles..], band.tiles, t0, tiles_x);
            for t in 0..tiles_x {
                let [q0, q1, q2, q3, q4, q5] = b_t(std::array::from_fn(|k| col[k][t]));
                (p0[t], p1[t], p2[t], p3[t], p4[t], p5[t]) = (q0, q1, q2, q3, q4, q5);
            }
        }
    }
}

/// `Aᵀ m A` for the band's tiles of one output channel (its 36 planes `m`), added into the
/// channel's `plane` `[h, w]`.
pub(super) fn output(m: &[f32], band: Band, plane: &mut [f32]) {
    let (h, w, tiles_x, tiles) = (band.h, band.w, band.tiles_x, band.tiles);
    // Aᵀ m of the tile row: `s[(a·IN + j)·tiles_x + tx]` for output row a.
    let mut s = vec![0.0f32; OUT * IN * tiles_x];
    for ty in band.ty0..band.ty0 + band.rows {
        let t0 = (ty - band.ty0) * tiles_x;
        // Aᵀ along y, column j of every tile of the row at once.
        for j in 0..IN {
            let col: [&[f32]; IN] =
                std::array::from_fn(|i| &m[(j * IN + i) * tiles + t0..][..tiles_x]);
            let [s0, s1, s2, s3] = strided_mut(&mut s, IN * tiles_x, j * tiles_x, tiles_x);
            for t in 0..tiles_x {
                let [r0, r1, r2, r3] = a_t(std::array::from_fn(|i| col[i][t]));
                (s0[t], s1[t], s2[t], s3[t]) = (r0, r1, r2, r3);
            }
        }
        // ·A along x, tile by tile, into the output rows that exist.
        for (a, s) in s.chunks_exact(IN * tiles_x).enumerate() {
            let y = OUT * ty + a;
            if y >= h {
                break;
            }
            for (tx, out) in plane[y * w..][..w].chunks_mut(OUT).enumerate() {
                let r = a_t(std::array::from_fn(|j| s[j * tiles_x + tx]));
                for (o, r) in out.iter_mut().zip(r) {
                    *o += r;
                }
            }
        }
    }
}
