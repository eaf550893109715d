//! The micro-kernel: one `MR × NR` tile of C from a packed `MR`-row panel of A and a packed
//! `NR`-column panel of B, `kc` deep — `MR·NR` sums held in registers for the whole depth, each
//! step one broadcast of A per row and two 8-float loads of B for twelve fused multiply-adds.
//!
//! Two versions with one contract: AVX2 + FMA (x86-64, chosen at run time), and a portable one
//! the compiler vectorises as it can.

use super::{MR, NR};

/// Where the tile goes and how it is written.
pub(crate) struct Tile<'a> {
    /// Element (r, j) of the tile at `c + r·rs + j·cs`.
    pub c: *mut f32,
    pub rs: isize,
    pub cs: isize,
    /// The valid part (≤ MR × NR; the packed panels are zero-padded beyond it).
    pub rows: usize,
    pub cols: usize,
    /// Add what C holds (else overwrite it).
    pub load_c: bool,
    /// Added to every row (the layer's bias for these columns, zero-padded).
    pub bias: Option<&'a [f32; NR]>,
}

/// The product of the panels, written to the tile.
///
/// # Safety
/// `a` holds `kc·MR` floats, `b` holds `kc·NR` floats starting 32-byte aligned, and the tile's
/// valid part lies inside C, which nothing else accesses meanwhile.
pub(crate) unsafe fn tile(kc: usize, a: *const f32, b: *const f32, t: &Tile) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked); the rest is the caller's guarantee.
        unsafe { avx2::tile(kc, a, b, t) };
        return;
    }
    // SAFETY: the caller's guarantee.
    unsafe { portable_tile(kc, a, b, t) };
}

/// Whether the AVX2 + FMA kernel runs here (std caches the CPUID query).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// The kernel in plain Rust (also what the tests hold the AVX2 one to).
///
/// # Safety
/// As [`tile`].
pub(crate) unsafe fn portable_tile(kc: usize, a: *const f32, b: *const f32, t: &Tile) {
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..kc {
        // SAFETY: p < kc: inside both panels.
        let (ap, bp) = unsafe {
            (
                &*(a.add(p * MR) as *const [f32; MR]),
                &*(b.add(p * NR) as *const [f32; NR]),
            )
        };
        for (row, &av) in acc.iter_mut().zip(ap) {
            for (s, &bv) in row.iter_mut().zip(bp) {
                *s += av * bv;
            }
        }
    }
    // SAFETY: the caller's guarantee.
    unsafe { store(&acc, t) };
}

/// Writes finished sums (bias not yet added) to the tile's valid part.
///
/// # Safety
/// As [`tile`].
unsafe fn store(acc: &[[f32; NR]; MR], t: &Tile) {
    let zeros = [0.0; NR];
    let bias = t.bias.unwrap_or(&zeros);
    if t.rs == 1 {
        // C's columns are contiguous (the convolutions' transposed outputs): a column at a time.
        for j in 0..t.cols {
            // SAFETY: column j's first `rows` elements are in the valid part.
            let col =
                unsafe { std::slice::from_raw_parts_mut(t.c.offset(j as isize * t.cs), t.rows) };
            for (c, row) in col.iter_mut().zip(acc) {
                let v = row[j] + bias[j];
                *c = if t.load_c { *c + v } else { v };
            }
        }
        return;
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        for (j, (&s, &b)) in row.iter().zip(bias).enumerate().take(t.cols) {
            // SAFETY: (r, j) is in the valid part.
            unsafe {
                let c = t.c.offset(r as isize * t.rs + j as isize * t.cs);
                *c = if t.load_c { *c + s + b } else { s + b };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR, Tile, store};
    use std::arch::x86_64::*;

    /// [`super::tile`] on AVX2 + FMA: 12 accumulators (6 rows × 2 × 8 floats) of the 16 ymm
    /// registers, two for B, one for the broadcast.
    ///
    /// # Safety
    /// As [`super::tile`], on a CPU with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(kc: usize, a: *const f32, b: *const f32, t: &Tile) {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            // SAFETY: inside the panels (kc steps of MR and NR floats); B's rows are 64 bytes
            // apart from a 64-byte aligned start (`PackedB`).
            unsafe {
                let b0 = _mm256_load_ps(b);
                let b1 = _mm256_load_ps(b.add(8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let ar = _mm256_broadcast_ss(&*a.add(r));
                    row[0] = _mm256_fmadd_ps(ar, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(ar, b1, row[1]);
                }
                a = a.add(MR);
                b = b.add(NR);
            }
        }
        if t.rows == MR && t.cols == NR && t.cs == 1 {
            // SAFETY: a whole tile with contiguous rows: each row's 16 floats lie in C.
            unsafe {
                let (bias0, bias1) = match t.bias {
                    Some(bias) => (_mm256_loadu_ps(bias.as_ptr()), _mm256_loadu_ps(&bias[8])),
                    None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
                };
                for (r, row) in acc.iter().enumerate() {
                    let c = t.c.offset(r as isize * t.rs);
                    let mut v0 = _mm256_add_ps(row[0], bias0);
                    let mut v1 = _mm256_add_ps(row[1], bias1);
                    if t.load_c {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c.add(8)));
                    }
                    _mm256_storeu_ps(c, v0);
                    _mm256_storeu_ps(c.add(8), v1);
                }
            }
            return;
        }
        let mut sums = [[0.0f32; NR]; MR];
        for (s, row) in sums.iter_mut().zip(&acc) {
            // SAFETY: 16 floats into a [f32; 16].
            unsafe {
                _mm256_storeu_ps(s.as_mut_ptr(), row[0]);
                _mm256_storeu_ps(s.as_mut_ptr().add(8), row[1]);
            }
        }
        // SAFETY: the caller's guarantee.
        unsafe { store(&sums, t) };
    }
}
