//! The scalar functions the kernels apply element-wise, written so that the compiler vectorises
//! the loops that call them (no branches, no library calls on the hot path).

/// `torch.nn.functional.gelu` (exact form): `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), the formula PyTorch's vectorised
/// CPU `erf` evaluates (ATen's `Vectorized<float>::erf`).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let y = 1.0 - poly * exp(-ax * ax);
    y.copysign(x)
}

/// eˣ in f32 to within 2 ulp (the accuracy of PyTorch's vectorised CPU `exp`), branch-free so
/// that loops over it vectorise: x = n·ln2 + r with |r| ≤ ln2/2, eʳ by its Taylor series to r⁶
/// (truncation below 1.2e-7 relative), 2ⁿ put into the exponent bits. Underflows to 0 below
/// -87.3 (below the smallest normal float), overflows to ∞ above 88.7; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LOWEST: f32 = -87.336_54;
    const HIGHEST: f32 = 88.722_83;
    // n = round(x·log₂e) by adding 1.5·2²³, which pushes the fraction out of the mantissa and
    // leaves n in the low bits: no `f32::round` (a library call on x86-64's baseline) and no
    // float-to-int cast (saturating in Rust), either of which stops the loop from vectorising.
    const ROUNDER: f32 = 12_582_912.0;
    let xc = x.clamp(LOWEST, HIGHEST);
    let t = xc * std::f32::consts::LOG2_E + ROUNDER;
    let n = t - ROUNDER;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ for n in [-126, 128], in two halves so that each is a normal float.
    // (Wrapping arithmetic: the values cannot overflow, and the debug build's overflow checks are
    // branches that would stop the vectorisation.)
    let half = ni >> 1;
    let scale = |e: i32| f32::from_bits((e.wrapping_add(127) as u32) << 23);
    let y = p * scale(half) * scale(ni.wrapping_sub(half));
    let y = if x < LOWEST { 0.0 } else { y };
    let y = if x > HIGHEST { f32::INFINITY } else { y };
    if x.is_nan() { x } else { y }
}

/// `torch.nn.functional.silu`: x · σ(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_its_bound() {
        for i in -400..=400 {
            let x = i as f64 / 100.0;
            let want = erf_f64(x);
            assert!(
                (erf(x as f32) as f64 - want).abs() < 3e-7,
                "erf({x}) = {} vs {want}",
                erf(x as f32)
            );
        }
        assert_eq!(gelu(0.0), 0.0);
        assert!(gelu(-10.0).abs() < 1e-6 && (gelu(10.0) - 10.0).abs() < 1e-5);
    }

    /// erf in f64 from its series (|x| < 3) and its asymptotic complement (|x| ≥ 3).
    fn erf_f64(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            // 1 - erfc, erfc(x) ~ e^{-x²}/(x√π) (1 - 1/(2x²) + 3/(4x⁴)): below 1e-5, far under f32.
            let a = x.abs();
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)));
            return (1.0 - erfc).copysign(x);
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(88.7).is_finite());
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!((silu(2.0) - 2.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        assert_eq!(silu(-100.0), 0.0);
    }
}
