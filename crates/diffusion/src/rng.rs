//! A random generator that draws, bit for bit, what PyTorch's CPU generator draws.
//!
//! diffusers users write `generator=torch.Generator("cpu").manual_seed(seed)`, and a seed is a
//! promise: the same seed, prompt and weights give the same image. [`TorchGenerator`] keeps that
//! promise by reproducing `torch.randn(shape, generator=g, dtype=torch.float32)` exactly (checked
//! bit for bit against torch 2.15's AVX2 CPU kernels, see the tests).
//!
//! # Engine
//! MT19937 (Matsumoto–Nishimura), seeded as torch's `manual_seed(s)`: `state[0] = s mod 2³²`,
//! `state[j] = 1812433253·(state[j−1] ⊕ (state[j−1] ≫ 30)) + j (mod 2³²)`, twisted on the first
//! draw, standard tempering. From it: `random() = u32`, `random64() = (u32₁ ≪ 32) | u32₂`, float
//! uniforms `(u32 & (2²⁴−1))·2⁻²⁴ ∈ [0, 1)` and double uniforms `(u64 & (2⁵³−1))·2⁻⁵³ ∈ [0, 1)`.
//!
//! # `randn` with n ≥ 16 elements: blocked Box–Muller in single precision
//! All n float uniforms are drawn first. Each block of 16 (`u[0..8]`, `u[8..16]`) becomes
//! `r = √(−2 ln(1 − u[j]))`, `θ = 2π·u[j+8]`, `out[j] = r cos θ`, `out[j+8] = r sin θ`.
//! When 16 does not divide n, 16 *fresh* uniforms are drawn and the last 16 outputs
//! `[n−16, n)` are recomputed from them (overwriting values already written), so n + 16 draws.
//!
//! torch's AVX2 kernel (what an x86-64 machine with AVX2 runs) evaluates `ln`, `sin` and `cos`
//! with the Cephes single-precision minimax polynomials (`log256_ps`, `sincos256_ps`), with
//! `θ = 6.2831855f32 · u`, and GCC contracts the Horner steps, the Cody–Waite range reduction and
//! a few other multiply-adds into FMAs. [`cephes_ln`] and [`cephes_sincos`] replay that arithmetic
//! operation for operation, with [`f32::mul_add`] exactly where the compiled kernel has a fused
//! `vfmadd`/`vfmsub`/`vfnmadd`, so the results are the same bits. (torch's scalar build instead
//! uses libm `logf`/`sinf`/`cosf`; the two differ by at most ~2·10⁻⁶.)
//!
//! # `randn` with n < 16 elements: Box–Muller in double precision, with a cache
//! Each element is `normal_distribution<double>`: if the generator holds a cached value, that
//! value is returned (and the cache emptied); else two double uniforms `u₁, u₂` (4 `u32` draws)
//! give `r = √(−2 log1p(−u₂))`, `θ = 2π·u₁`; `r cos θ` is returned and `r sin θ` is cached. The
//! result is rounded to `f32`. The cache lives in the generator, survives `randn` calls with
//! n ≥ 16 (they never touch it), and is emptied by [`TorchGenerator::manual_seed`].
//!
//! # Mapping diffusers' draws onto this API
//! A pipeline that reproduces diffusers makes the same draws, in the same order, on one
//! generator, each draw being one `randn(numel)` of the tensor's element count (row-major):
//! - SDXL inpaint, strength < 1 (default 0.9999): `randn` for the VAE-encode sample of the image
//!   latents (`mean + std·ε`), then `randn` for the initial noise, then `randn` for the VAE-encode
//!   sample of the masked image.
//! - SD 1.5 inpaint, strength 1.0: the noise, then the VAE-encode sample of the masked image.
//! - img2img (SD and SDXL): the VAE-encode sample, then the noise.
//! - Euler (non-ancestral, `s_churn = 0`) draws nothing per step; ancestral and SDE samplers call
//!   `randn` once per step, after the draws above.
//!
//! A batch is one draw of the whole batch's shape. Latents take the blocked path, with the tail
//! rule when `4·h·w` is not a multiple of 16 (e.g. a 65×65 latent); shapes of fewer than 16
//! elements take the cached double path, exactly as in torch.
//!
//! When the caller gives no seed, draw one with [`random_seed`] and report it, so the image can
//! be made again.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Number of 32-bit words of MT19937 state.
const MT_N: usize = 624;
/// The twist's middle offset.
const MT_M: usize = 397;
/// The twist matrix's last row.
const MT_MATRIX_A: u32 = 0x9908_b0df;

/// The MT19937 engine as torch's `at::mt19937` runs it (the standard generator).
#[derive(Clone)]
struct Mt19937 {
    state: [u32; MT_N],
    /// Next word of `state` to temper; `MT_N` means "twist before the next draw".
    index: usize,
}

impl Mt19937 {
    /// Knuth's linear-congruential initialisation of the state from a 32-bit seed.
    fn new(seed: u32) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = seed;
        for j in 1..MT_N {
            let prev = state[j - 1];
            // `j < 624`, so the cast is lossless.
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Self { state, index: MT_N }
    }

    /// Regenerates all 624 words: `x_k ← x_{k+397} ⊕ ((upper(x_k) | lower(x_{k+1})) A)`.
    fn twist(&mut self) {
        for k in 0..MT_N {
            let y = (self.state[k] & 0x8000_0000) | (self.state[(k + 1) % MT_N] & 0x7fff_ffff);
            let mag = if y & 1 == 0 { 0 } else { MT_MATRIX_A };
            self.state[k] = self.state[(k + MT_M) % MT_N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// The next tempered 32-bit output.
    fn next_u32(&mut self) -> u32 {
        if self.index >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// PyTorch's CPU generator: `torch.Generator("cpu").manual_seed(seed)`.
///
/// Cloning snapshots the whole state (engine and cached normal), like
/// `g.get_state()`/`g.set_state()`.
#[derive(Clone)]
pub struct TorchGenerator {
    engine: Mt19937,
    /// The seed as given (torch's `initial_seed()`); only its low 32 bits reach the engine.
    seed: u64,
    /// The second value of the last double-precision Box–Muller pair, not yet returned.
    next_double_normal: Option<f64>,
}

impl std::fmt::Debug for TorchGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchGenerator")
            .field("seed", &self.seed)
            .field("index", &self.engine.index)
            .field("next_double_normal", &self.next_double_normal)
            .finish_non_exhaustive()
    }
}

impl TorchGenerator {
    /// A generator in the state `torch.Generator("cpu").manual_seed(seed)` leaves. As in torch,
    /// only `seed mod 2³²` seeds the engine, so `2³² + 5` draws what `5` draws.
    pub fn new(seed: u64) -> Self {
        Self {
            engine: Mt19937::new(seed as u32), // truncation to the low 32 bits is torch's rule
            seed,
            next_double_normal: None,
        }
    }

    /// Re-seeds in place, as `g.manual_seed(seed)`: new engine state, cached normal dropped.
    pub fn manual_seed(&mut self, seed: u64) {
        *self = Self::new(seed);
    }

    /// The seed last given to [`new`](Self::new) or [`manual_seed`](Self::manual_seed), as
    /// torch's `g.initial_seed()` reports it (all 64 bits).
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    /// One raw 32-bit draw (torch's `random()`).
    pub fn random_u32(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// One raw 64-bit draw from two 32-bit ones, the first in the high half (torch's
    /// `random64()`).
    pub fn random_u64(&mut self) -> u64 {
        let hi = u64::from(self.random_u32());
        let lo = u64::from(self.random_u32());
        (hi << 32) | lo
    }

    /// `torch.randn(shape, generator=self, dtype=torch.float32)` for a contiguous tensor of
    /// `numel` elements, in row-major order. `numel` < 16 takes the double-precision path with
    /// the generator's cached value; `numel` ≥ 16 the blocked single-precision path (module
    /// docs). `numel == 0` draws nothing.
    pub fn randn(&mut self, numel: usize) -> Vec<f32> {
        if numel < 16 {
            // Rounding the double sample to f32 is torch's `static_cast<float>`.
            return (0..numel).map(|_| self.normal_f64() as f32).collect();
        }
        let mut out: Vec<f32> = (0..numel).map(|_| self.uniform_f32()).collect();
        for block in out.as_chunks_mut::<16>().0 {
            box_muller_16(block);
        }
        if !numel.is_multiple_of(16) {
            // Tail rule: 16 fresh uniforms, transformed, overwrite the last 16 outputs.
            if let Some(tail) = out.last_chunk_mut::<16>() {
                for u in tail.iter_mut() {
                    *u = self.uniform_f32();
                }
                box_muller_16(tail);
            }
        }
        out
    }

    /// `uniform_real_distribution<float>(0, 1)`: the low 24 bits of one draw, times 2⁻²⁴ (exact).
    fn uniform_f32(&mut self) -> f32 {
        (self.random_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: the low 53 bits of `random64`, times 2⁻⁵³.
    fn uniform_f64(&mut self) -> f64 {
        (self.random_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `normal_distribution<double>(0, 1)` with torch's one-value cache.
    fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        // u2 < 1, so log1p(−u2) is finite; u2 = 0 gives r = 0.
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// Box–Muller on one block of 16 uniforms, in place, as torch's AVX2 `NormalFill16` (8 lanes):
/// lane j pairs `u₁ = 1 − b[j] ∈ (0, 1]` with `u₂ = b[j+8]`, then `r = √(−2 ln u₁)`,
/// `θ = 2π u₂` in f32, `b[j] = r cos θ`, `b[j+8] = r sin θ`. (torch's final
/// `fma(n, std, mean)` with `std = 1`, `mean = 0` is the identity and is left out.)
fn box_muller_16(block: &mut [f32; 16]) {
    const TWO_PI: f32 = f32::from_bits(0x40c9_0fdb); // 6.2831855, 2π rounded to f32
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let radius = (-2.0 * cephes_ln(u1)).sqrt();
        let (sin, cos) = cephes_sincos(TWO_PI * block[j + 8]);
        block[j] = radius * cos;
        block[j + 8] = radius * sin;
    }
}

/// Natural logarithm, Cephes `logf` as in `log256_ps`, with the FMAs of torch's build.
///
/// Write `x = m·2^e` with `m ∈ [½, 1)`; if `m < √½` take `m ← 2m, e ← e − 1`, so
/// `m ∈ [√½, √2)` and `f = m − 1 ∈ [−0.293, 0.414]`. Then
/// `ln x = f − f²/2 + f³·P(f) + e·ln 2`, with `P` the degree-8 Cephes minimax polynomial and
/// `ln 2` split (Cody–Waite) into `q₂ = 0.693359375` (few bits, so `e·q₂` is exact) and
/// `q₁ = −2.12194440·10⁻⁴`. Inputs ≤ 0 give NaN; subnormals are flushed to `f32::MIN_POSITIVE`.
/// The order of operations and rounding is the kernel's, not the most accurate possible.
fn cephes_ln(x: f32) -> f32 {
    // Coefficients as the bits torch's kernel loads (p0 first, highest degree).
    const P: [u32; 9] = [
        0x3d90_21bb, // 7.0376836292e-2
        0xbdeb_d1b8, // -1.1514610310e-1
        0x3def_251a, // 1.1676998740e-1
        0xbdfe_5d4f, // -1.2420140846e-1
        0x3e11_e9bf, // 1.4249322787e-1
        0xbe2a_ae50, // -1.6668057665e-1
        0x3e4c_ceac, // 2.0000714765e-1
        0xbe7f_fffc, // -2.4999993993e-1
        0x3eaa_aaaa, // 3.3333331174e-1
    ];
    const Q1: f32 = f32::from_bits(0xb95e_8083); // -2.12194440e-4
    const Q2: f32 = f32::from_bits(0x3f31_8000); // 0.693359375
    const SQRT_HALF: f32 = f32::from_bits(0x3f35_04f3); // 0.70710677

    if x.is_nan() || x <= 0.0 {
        return f32::NAN;
    }
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    // Unbiased exponent for a mantissa in [½, 1): the biased exponent − 127 + 1.
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0x3f00_0000);
    let small = m < SQRT_HALF;
    let extra = if small { m } else { 0.0 };
    m -= 1.0;
    if small {
        e -= 1.0;
    }
    let f = m + extra; // 2m − 1 or m − 1, computed as the kernel does
    let z = f * f;
    let mut y = f32::from_bits(P[0]);
    for &p in &P[1..] {
        y = y.mul_add(f, f32::from_bits(p)); // vfmadd: Horner step
    }
    y = (y * f).mul_add(z, e * Q1); // f³·P(f) + e·q₁, one FMA
    y = (-z).mul_add(0.5, y); // − f²/2 (vfnmadd; exact either way)
    e.mul_add(Q2, f + y) // + e·q₂
}

/// `(sin x, cos x)`, Cephes `sinf`/`cosf` as in `sincos256_ps`, with the FMAs of torch's build.
///
/// Octant reduction: `j = ⌊|x|·4/π⌋` rounded up to even, and `x' = |x| − j·π/4` with `π/4`
/// split in three (Cody–Waite, `DP1 + DP2 + DP3`), each step one FMA, so `x' ∈ [−π/4, π/4]`.
/// On that interval `cos x' ≈ 1 − z/2 + z²·C(z)` and `sin x' ≈ x' + x'·z·S(z)` with `z = x'²`
/// (Cephes minimax `C`, `S` of degree 2). Bit 1 of `j` swaps the two polynomials; bit 2 of `j`
/// flips the sine's sign (and the input's sign flips it too), and the cosine's sign is flipped
/// when bit 2 of `j − 2` is clear. Valid while `|x|·4/π` fits an `i32` (here `x ∈ [0, 2π)`).
fn cephes_sincos(x: f32) -> (f32, f32) {
    const FOUR_OVER_PI: f32 = f32::from_bits(0x3fa2_f983); // 1.2732395
    const MINUS_DP1: f32 = f32::from_bits(0xbf49_0000); // -0.78515625
    const MINUS_DP2: f32 = f32::from_bits(0xb97d_a000); // -2.4187564849853515625e-4
    const MINUS_DP3: f32 = f32::from_bits(0xb322_2169); // -3.77489497744594108e-8
    const COS_P: [u32; 3] = [0x37cc_f5ce, 0xbab6_061a, 0x3d2a_aaa5]; // 2.4433157e-5, ...
    const SIN_P: [u32; 3] = [0xb94c_a1f9, 0x3c08_839e, 0xbe2a_aaa3]; // -1.9515296e-4, ...
    const SIGN: u32 = 0x8000_0000;

    let abs = x.abs();
    // Truncation toward zero (cvttps2dq), then j = (j + 1) & !1.
    let j = ((abs * FOUR_OVER_PI) as i32).wrapping_add(1) & !1;
    let y = j as f32;
    let sin_sign = (x.to_bits() & SIGN) ^ (((j & 4) as u32) << 29);
    let cos_sign = ((!j.wrapping_sub(2) & 4) as u32) << 29;
    let use_cos_poly_for_cos = j & 2 == 0;

    let r = y.mul_add(MINUS_DP1, abs);
    let r = y.mul_add(MINUS_DP2, r);
    let r = y.mul_add(MINUS_DP3, r);
    let z = r * r;

    let c = f32::from_bits(COS_P[0]).mul_add(z, f32::from_bits(COS_P[1]));
    let c = c.mul_add(z, f32::from_bits(COS_P[2]));
    let c = z.mul_add(c * z, -(z * 0.5)) + 1.0; // vfmsub: z·(C·z) − z/2, then + 1

    let s = f32::from_bits(SIN_P[0]).mul_add(z, f32::from_bits(SIN_P[1]));
    let s = s.mul_add(z, f32::from_bits(SIN_P[2]));
    let s = r.mul_add(z * s, r); // x' + x'·(z·S)

    let (sin, cos) = if use_cos_poly_for_cos { (s, c) } else { (c, s) };
    (
        f32::from_bits(sin.to_bits() ^ sin_sign),
        f32::from_bits(cos.to_bits() ^ cos_sign),
    )
}

/// A fresh seed for a request that gave none, in `[0, 2³²)`.
///
/// torch keeps only a seed's low 32 bits, so this range reaches every distinct noise, and it
/// survives JSON and JavaScript numbers (exact below 2⁵³) when reported back to the caller.
/// Entropy: on wasm32 the browser's `crypto.getRandomValues` (through `getrandom`); natively,
/// and as a fallback, std's per-process random `RandomState` keys hashed with a counter and
/// the clock. Not for cryptography.
pub fn random_seed() -> u64 {
    entropy_u64() & 0xffff_ffff
}

#[cfg(target_arch = "wasm32")]
fn entropy_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| std_entropy_u64())
}

#[cfg(not(target_arch = "wasm32"))]
fn entropy_u64() -> u64 {
    std_entropy_u64()
}

/// SipHash, keyed by std's randomly seeded `RandomState`, of a process-wide counter (so two
/// calls never repeat) and, where a clock exists, the time.
fn std_entropy_u64() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    #[cfg(not(target_arch = "wasm32"))]
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    //! Reference values come from torch 2.15.0 CPU (AVX2 kernels), printed as shortest
    //! round-trip f32 decimals (`str(np.float32(v))`), with hashes of whole tensors:
    //! ```python
    //! g = torch.Generator("cpu").manual_seed(7)
    //! x = torch.randn((1, 4, 64, 64), generator=g, dtype=torch.float32).flatten()
    //! h = 0xcbf29ce484222325                      # FNV-1a 64 over the f32 bytes
    //! for b in x.numpy().tobytes(): h = ((h ^ b) * 0x100000001b3) % 2**64
    //! ```
    //! Tolerance: none — every comparison is on the exact f32 bits.
    use super::*;

    /// FNV-1a (64-bit) over the little-endian bytes of the values, as the script computes it.
    fn fnv1a64(values: &[f32]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in values.iter().flat_map(|v| v.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// Exact bit equality, with the first differing index in the message.
    fn assert_bits(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "index {i}: got {g}, want {w}");
        }
    }

    #[test]
    fn mt19937_matches_the_standard_engine() {
        // std::mt19937 with its default seed 5489: the 10000th output is 4123659995 (C++11).
        let mut g = TorchGenerator::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.random_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn uniforms_match_torch_rand() {
        // torch.rand(4, float32) then torch.rand(4, float64) on seed 99.
        let mut g = TorchGenerator::new(99);
        let f32s: Vec<f32> = (0..4).map(|_| g.uniform_f32()).collect();
        assert_bits(&f32s, &[0.10330969, 0.9701559, 0.9480701, 0.97870874]);
        let f64s: Vec<f64> = (0..4).map(|_| g.uniform_f64()).collect();
        let want: [f64; 4] = [
            0.614109866172126,
            0.4022000794453864,
            0.8863244978490372,
            0.384461392091782,
        ];
        for (got, want) in f64s.iter().zip(want) {
            assert_eq!(got.to_bits(), want.to_bits());
        }
    }

    #[test]
    fn reference_check_values() {
        // The check values of reference/torch-rng.md, written with the digits that round-trip
        // (the note prints 8 significant digits: its -0.11171857 is torch's -0.111718565).
        let x = TorchGenerator::new(1234).randn(4 * 128 * 128);
        assert_bits(&x[..4], &[-0.111718565, -0.4965901, 0.1630737, -0.88168776]);
        assert_bits(&TorchGenerator::new(0).randn(1), &[1.5409961]);
        assert_bits(&TorchGenerator::new(0).randn(7), &SEED0_N7);
        assert_bits(&TorchGenerator::new(0).randn(16), &SEED0_N16);
        assert_bits(&TorchGenerator::new(0).randn(17), &SEED0_N17);
        assert_bits(&TorchGenerator::new(42).randn(20), &SEED42_N20);
        let mut g = TorchGenerator::new(1234);
        let _first = g.randn(4 * 16 * 16);
        assert_bits(
            &g.randn(4 * 16 * 16)[..3],
            &[0.5410755, 0.88997424, -0.27049756],
        );
    }

    #[test]
    fn seed7_latent_shape_every_element() {
        // (1, 4, 64, 64): all 16384 values through their hash, plus readable anchors.
        let x = TorchGenerator::new(7).randn(4 * 64 * 64);
        #[rustfmt::skip]
        let first8 = [
            -0.8201345, 0.39563116, 0.8989085, -1.3884039, -0.16699602, 0.28514996, -0.6410915,
            -0.8936554,
        ];
        #[rustfmt::skip]
        let last8 = [
            -0.86096567, -0.13185193, -0.69960517, 0.7843886, -0.7932922, 0.32648817, -0.15291516,
            -0.25150964,
        ];
        assert_bits(&x[..8], &first8);
        assert_bits(&x[x.len() - 8..], &last8);
        let sampled: Vec<f32> = x.iter().step_by(128).copied().collect();
        assert_bits(&sampled, &SEED7_EVERY_128TH);
        let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - 85.15984359715367).abs() < 1e-9, "sum {sum}");
        assert_eq!(fnv1a64(&x), 0xac03_23b2_83b0_c3d2);
    }

    #[test]
    fn seed11_tail_rule() {
        // (1, 4, 33, 47) = 6204 elements, 6204 mod 16 = 12: the last 16 are redrawn.
        let x = TorchGenerator::new(11).randn(4 * 33 * 47);
        assert_bits(&x[..4], &[-0.51079756, 1.0282718, -0.3531516, 0.122991316]);
        assert_bits(
            &x[x.len() - 4..],
            &[-1.5674244, -0.02841471, 0.36751065, 0.6593347],
        );
        assert_eq!(fnv1a64(&x), 0xc5f8_49f8_773f_fe8b);
    }

    #[test]
    fn mixed_small_and_large_calls_share_the_cache() {
        let mut g = TorchGenerator::new(2024);
        let calls = [3, 20, 1, 16, 5, 33, 2, 1, 15, 64];
        let got: Vec<f32> = calls.iter().flat_map(|&n| g.randn(n)).collect();
        assert_bits(&got, &MIXED_2024);
    }

    #[test]
    fn seeds_wrap_at_2_pow_32_and_manual_seed_resets() {
        let want = [1.8423299, 0.51888716, -1.7119213, -1.7013793];
        let mut g = TorchGenerator::new((1 << 32) + 5);
        assert_eq!(g.initial_seed(), (1 << 32) + 5);
        assert_bits(&g.randn(20)[..4], &want);
        // Leave a cached normal behind (odd count), then re-seed: it must be gone.
        let _ = g.randn(3);
        g.manual_seed(0);
        assert_bits(&g.randn(1), &[1.5409961]);
        assert_eq!(g.initial_seed(), 0);
        assert!(g.randn(0).is_empty());
    }

    #[test]
    fn random_u64_is_two_u32_high_first() {
        let mut a = TorchGenerator::new(3);
        let mut b = a.clone();
        let hi = u64::from(a.random_u32());
        let lo = u64::from(a.random_u32());
        assert_eq!(b.random_u64(), (hi << 32) | lo);
    }

    #[test]
    fn kernels_on_edge_inputs() {
        assert_eq!(cephes_ln(1.0), 0.0);
        assert!(cephes_ln(0.0).is_nan() && cephes_ln(-1.0).is_nan());
        // The smallest u1 the kernel sees is 2^-24: ln = -24 ln 2 = -16.635532.
        assert!((cephes_ln(f32::from_bits(0x3380_0000)) + 16.635532).abs() < 2e-6);
        let (s, c) = cephes_sincos(0.0);
        assert_eq!((s, c), (0.0, 1.0));
        for k in 0..=64 {
            let x = k as f32 * std::f32::consts::TAU / 64.0;
            let (s, c) = cephes_sincos(x);
            assert!(
                (s - x.sin()).abs() < 1e-6 && (c - x.cos()).abs() < 1e-6,
                "x {x}"
            );
        }
    }

    #[test]
    fn random_seeds_fit_32_bits_and_differ() {
        let seeds: Vec<u64> = (0..8).map(|_| random_seed()).collect();
        assert!(seeds.iter().all(|&s| s <= u64::from(u32::MAX)));
        let mut unique = seeds.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seeds.len(), "{seeds:?}");
    }

    /// Seed 0, n = 7 (cached double path).
    #[rustfmt::skip]
    const SEED0_N7: [f32; 7] = [
        1.5409961, -0.2934289, -2.1787894, 0.56843126, -1.0845224, -1.3985955, 0.40334684,
    ];

    /// Seed 0, n = 16 (one block).
    #[rustfmt::skip]
    const SEED0_N16: [f32; 16] = [
        -1.1258398, -1.1523602, -0.25057858, -0.4338788, 0.84871036, 0.69200915, -0.31601277,
        -2.1152194, 0.32227492, -1.2633348, 0.3499832, 0.30813393, 0.11984151, 1.2376579, 1.1167772,
        -0.24727815,
    ];

    /// Seed 0, n = 17 (one block, then the tail rule).
    #[rustfmt::skip]
    const SEED0_N17: [f32; 17] = [
        -1.1258398, -1.6959312, 0.5666506, 0.79350835, 0.59883946, -1.5550951, -0.3413604,
        1.8530061, 0.4680964, -0.58549756, -0.17339675, 0.18347794, 1.3893661, 1.5863342,
        0.94629836, -0.84367675, 0.9318266,
    ];

    /// Seed 42, n = 20.
    #[rustfmt::skip]
    const SEED42_N20: [f32; 20] = [
        1.9269153, 1.4872841, 0.9007172, -2.105521, -0.75813115, 1.0783176, 0.80080056, 1.6806206,
        0.3558599, -0.686623, -0.49335635, 0.24148779, -0.23162432, 0.04175949, -0.2515753,
        0.8598585, -0.30972677, -0.3957105, 0.80340934, -0.6215954,
    ];

    /// Seed 7, (1, 4, 64, 64): elements 0, 128, 256, …
    #[rustfmt::skip]
    const SEED7_EVERY_128TH: [f32; 128] = [
        -0.8201345, 0.5688964, 0.006349292, 0.50110006, 0.38114327, 1.5356324, -1.2954732,
        0.16006885, 0.8511407, -0.8042364, -0.7985116, 0.8489982, -0.37639844, -0.7787747,
        0.7887001, -0.8677384, -1.2404397, -0.6535819, -0.37851435, -1.7743671, -0.15714599,
        0.3067929, 1.6178939, -1.7204138, 0.72080564, 0.6238148, 1.9044461, -0.2137949, 2.7773309,
        -1.3174378, 1.9366376, 0.84670854, 1.8027574, -0.2433517, 0.87913275, -1.138764, 0.73075736,
        -1.9981378, 0.5755636, 0.4480476, -1.1818424, -0.7173664, 1.072862, -0.6548781, 1.6038551,
        -0.33983627, -1.0471154, -0.51913035, -0.21365555, -2.04594, -0.16282505, 1.5411594,
        -1.1439288, -1.3447648, -1.064508, -0.9667423, -2.2730877, -2.5349574, 0.68480444,
        0.034190096, 0.39772487, 0.26208234, 2.5375206, 0.9909968, -1.6044819, -1.336654,
        0.38548025, 0.66679895, -0.5226253, -0.32154673, 0.11716213, -0.68042195, 0.72240835,
        -0.45805448, -0.9591587, 0.20777117, 0.020956751, -0.7159206, 1.0398473, 0.30451846,
        -0.8759897, 0.5778941, 1.7829322, -0.4075423, -0.4390018, 0.34447128, 0.5207632, -1.0815293,
        0.43733063, -0.97077113, -0.6767933, -0.22306105, -0.4425742, -0.44333735, 1.1611878,
        -2.3048167, 1.9959501, 1.3499053, 0.46808997, -0.43139932, -0.67772114, -0.27862138,
        -0.54590935, -0.22009505, -0.57510906, 0.95808923, -1.5734102, -0.7300731, 2.7625196,
        0.8103682, -0.5423681, 0.80881107, 0.40249136, 1.1112257, -2.2357492, 1.5730177, 1.2041519,
        0.28815225, 1.5043873, 0.045517787, 1.3828226, -1.6853056, 0.10781711, 1.1229722,
        0.22500758, 1.0166134, -0.8568552, 0.7808715,
    ];

    /// Seed 2024, calls of 3, 20, 1, 16, 5, 33, 2, 1, 15, 64 elements, concatenated.
    #[rustfmt::skip]
    const MIXED_2024: [f32; 160] = [
        -0.040429167, 1.7259921, -0.81403875, -0.386738, 1.3890886, 0.049501244, -0.99017227,
        -0.37117368, 0.13774034, -0.5199303, -0.3496606, 2.72656, -1.4753386, -1.4808176,
        0.04983941, -0.15957089, 0.35689133, 0.6595385, -0.14516342, 0.8272602, 0.45944318,
        0.39222175, -1.0766988, 1.3721666, -0.36263618, -1.0656822, -0.16161814, -2.649181,
        0.7202829, -1.4107652, -0.43837062, 0.3550669, 3.1244183, -0.55654866, 1.0855402,
        0.033148598, -0.12266787, 0.4022214, -1.429499, -0.56557626, -0.26687512, 0.2686035,
        -1.0352362, 0.37246612, -1.0862856, -1.8187258, -1.0216751, -0.82268095, 0.54901356,
        -0.9570149, -0.11747908, -1.0930823, 0.69104064, -0.52992564, -0.2560624, 0.11917035,
        0.29874015, -2.2807643, -0.87256634, 1.4115072, -0.37981057, -1.1321865, 1.1292758,
        0.025637243, 1.6880169, 2.0645418, 0.37377796, 0.9074825, -1.1491115, 0.46938694, 1.1108779,
        -0.97365826, 0.9405807, -1.5233872, -1.2582028, -0.40102464, 0.5672789, -2.3166838,
        0.08707216, 0.02737646, -0.16315742, -0.44221145, -1.3386455, 0.4303737, -0.0079088565,
        -0.2511542, 0.4722504, -0.8409219, -0.41383258, 0.5627511, -1.7912545, -0.056714475,
        1.9693147, -0.36476845, 1.2061391, -0.8339457, -1.3707654, 0.15650994, -0.500144, 1.6846588,
        -0.93643564, -0.5062131, -0.1276389, 0.79460907, -0.72279894, 1.273814, 1.0944053,
        1.3549564, -0.0838503, 0.41914356, 0.53911173, -1.1081486, 1.0739969, -0.09177934,
        1.7538068, 0.35925257, -0.65935373, 0.29005444, 0.9279306, 0.17293777, -0.9515095,
        -0.45082092, -0.9086396, -2.353484, 0.35438037, -2.1068177, -0.34860143, -2.3794637,
        -0.9715499, -0.3696979, 1.4295665, 0.7370177, -0.20835342, 1.8954986, 0.64082307,
        -0.81446856, 0.61329144, 0.52441365, -1.0687397, 0.7236534, 0.39444155, -0.418596,
        0.5970663, 1.7563341, 0.65809953, -1.6530128, 0.25512147, 0.48877734, -0.63355947,
        0.4761006, -1.1217157, -0.14491783, 0.01957147, -1.0059832, 0.8388714, -0.597908,
        0.35845736, -0.9655467, 0.09219566, 0.8666748,
    ];
}
