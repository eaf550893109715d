//! The training noise schedule (β_t, ᾱ_t) and the numerical helpers every scheduler shares.
//!
//! A discrete DDPM-family model is trained on `T` (usually 1000) noise levels. Level `t` mixes
//! the clean latent `x₀` with Gaussian noise `ε` as `x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε`, with
//! `ᾱ_t = ∏_{s ≤ t} (1 − β_s)`. The Karras-style schedulers work with the equivalent
//! "variance-exploding" parametrisation `σ_t = √((1 − ᾱ_t) / ᾱ_t)`, i.e. `x_t / √ᾱ_t = x₀ + σ_t ε`.
//!
//! # Reproducing diffusers bit for bit
//! diffusers builds these tables with a mix of torch float32 and numpy float64 arithmetic, and
//! the choice matters at the last bit of the timesteps (which the UNet sees) and at ~1e-7 in σ:
//! - `betas` are a **float32** `torch.linspace`. PyTorch's CPU kernel evaluates element `i` as
//!   `start + step·i` for the first half and `end − step·(n−1−i)` for the second, each with a
//!   single rounding (the compiler fuses it into an FMA), with `step = (end − start)/(n − 1)` in
//!   float32. `torch_linspace_f32` does exactly that with `f32::mul_add`.
//! - `alphas_cumprod` is a float32 `torch.cumprod`, which accumulates in **float64** and rounds
//!   each prefix product to float32.
//! - Inference timesteps and interpolated σ are numpy float64 (`np.linspace`, `np.arange`,
//!   `np.interp`, round-half-to-even), then cast to float32. The helpers below reproduce numpy's
//!   own formulas, including `np.arange`'s occasional extra element (e.g. 62 "trailing" timesteps
//!   for 61 steps, as diffusers really produces).

use super::BetaSchedule;
use super::SchedulerError;

/// How the training betas are defined: the resolved beta-related fields of a scheduler config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BetaConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub rescale_betas_zero_snr: bool,
}

/// β_t and ᾱ_t for t = 0‥T−1, in float32 as diffusers keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    pub(crate) fn new(config: &BetaConfig) -> Result<Self, SchedulerError> {
        let n = config.num_train_timesteps;
        if n == 0 {
            return Err(SchedulerError::InvalidConfig(
                "num_train_timesteps must be at least 1".into(),
            ));
        }
        let mut betas = match (&config.trained_betas, config.beta_schedule) {
            (Some(trained), _) => {
                if trained.len() != n {
                    return Err(SchedulerError::InvalidConfig(format!(
                        "trained_betas has {} values but num_train_timesteps is {n}",
                        trained.len()
                    )));
                }
                trained.iter().map(|&b| b as f32).collect()
            }
            (None, BetaSchedule::Linear) => {
                torch_linspace_f32(config.beta_start, config.beta_end, n)
            }
            (None, BetaSchedule::ScaledLinear) => {
                // Linear in √β, then squared in float32 (`torch.linspace(...) ** 2`).
                torch_linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (None, BetaSchedule::SquaredCosCapV2) => cosine_betas(n),
        };
        if config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod = cumprod(&alphas);
        Ok(Self {
            betas,
            alphas_cumprod,
        })
    }

    /// β_t, t = 0‥T−1.
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// ᾱ_t, t = 0‥T−1.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// T, the number of training noise levels.
    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Zero-terminal-SNR rescaling leaves ᾱ_{T−1} = 0, i.e. σ = ∞; the σ-based schedulers
    /// (Euler, Euler ancestral, DPM-Solver) replace it with 2⁻²⁴ as diffusers does.
    pub(crate) fn floor_final_alpha(&mut self) {
        if let Some(last) = self.alphas_cumprod.last_mut() {
            *last = 2f32.powi(-24);
        }
    }

    /// σ_t = √((1 − ᾱ_t)/ᾱ_t) in float32, t = 0‥T−1 (ascending in t).
    pub(crate) fn train_sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// ᾱ at an integer timestep, with a clear error outside 0‥T−1.
    pub(crate) fn alpha_at(&self, t: i64) -> Result<f32, SchedulerError> {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i).copied())
            .ok_or(SchedulerError::TimestepOutOfRange {
                timestep: t,
                num_train_timesteps: self.alphas_cumprod.len(),
            })
    }
}

/// `torch.linspace(start, end, n, dtype=float32)` on CPU, bit for bit (see the module docs).
pub(crate) fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (a, b) = (start as f32, end as f32);
    if n <= 1 {
        return vec![a; n];
    }
    let step = (b - a) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, a)
            } else {
                (-step).mul_add((n - 1 - i) as f32, b)
            }
        })
        .collect()
}

/// The "squaredcos_cap_v2" betas of Nichol & Dhariwal: ᾱ(t) = cos²((t + 0.008)/1.008 · π/2),
/// β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999), computed in float64 and stored as float32.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// Float32 cumulative product accumulated in float64, like `torch.cumprod` on CPU.
fn cumprod(values: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    values
        .iter()
        .map(|&v| {
            acc *= f64::from(v);
            acc as f32
        })
        .collect()
}

/// Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1:
/// shift and scale √ᾱ so that √ᾱ_{T−1} = 0 (zero terminal SNR) while keeping √ᾱ_0, then turn
/// the rescaled ᾱ back into betas. Float32 throughout, as diffusers does it in torch.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_bar: Vec<f32> = cumprod(&alphas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = match (sqrt_bar.first(), sqrt_bar.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => return Vec::new(),
    };
    let gain = first / (first - last);
    for s in &mut sqrt_bar {
        *s -= last;
        *s *= gain;
    }
    let bar: Vec<f32> = sqrt_bar.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// numpy's round-half-to-even (`np.round`, `ndarray.round()`).
pub(crate) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.linspace(start, stop, n, endpoint)` in float64, with numpy's own evaluation order
/// (`i · step + start`, last element forced to `stop`).
pub(crate) fn np_linspace(start: f64, stop: f64, n: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { n.saturating_sub(1) } else { n };
    if n == 0 {
        return Vec::new();
    }
    if div == 0 {
        return vec![start];
    }
    let delta = stop - start;
    let step = delta / div as f64;
    let mut out: Vec<f64> = (0..n)
        .map(|i| {
            if step == 0.0 {
                i as f64 / div as f64 * delta + start
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    if endpoint && n > 1 {
        out[n - 1] = stop;
    }
    out
}

/// `np.arange(start, stop, step)` in float64: length `ceil((stop − start)/step)`, values
/// `start + i·δ` with `δ = (start + step) − start`, as numpy fills float ranges.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len < 1.0 {
        return Vec::new();
    }
    let len = len as usize;
    let second = start + step;
    let delta = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, arange(len(fp)), fp)`: piecewise-linear interpolation on integer knots,
/// clamped to the end values outside them.
pub(crate) fn np_interp(x: f64, fp: &[f64]) -> f64 {
    let Some(&last) = fp.last() else {
        return f64::NAN;
    };
    if x.is_nan() {
        return x;
    }
    let top = (fp.len() - 1) as f64;
    if x < 0.0 {
        return fp[0];
    }
    if x >= top {
        return last;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / 1.0;
    slope * (x - j as f64) + fp[j]
}

/// Karras et al. 2022 (EDM), eq. 5: σ_i = (σ_max^{1/ρ} + i/(n−1) · (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ
/// with ρ = 7, in float64.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n, true)
        .into_iter()
        .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// The (fractional) training timestep whose σ is `sigma`: linear interpolation in log σ between
/// the two neighbouring training levels, clamped to the table — diffusers' `_sigma_to_t`,
/// including its float32 `log σ` table and the float32 difference of the two neighbours.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let len = log_sigmas.len();
    if len < 2 {
        return 0.0;
    }
    // Index of the last table entry at or below log σ (0 when there is none), at most len − 2.
    let low = log_sigmas
        .iter()
        .rposition(|&ls| log_sigma - f64::from(ls) >= 0.0)
        .unwrap_or(0)
        .min(len - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((f64::from(lo) - log_sigma) / f64::from(lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// `np.log` of the float32 σ table, as float32.
pub(crate) fn log_table(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|&s| f64::from(s).ln() as f32).collect()
}

/// The descending inference timesteps of Euler, Euler ancestral and DDIM (float64 values before
/// each scheduler's own dtype cast), for `n` steps out of `T` training levels:
/// - linspace: `linspace(0, T−1, n)` reversed (rounded to integers when `round_linspace`);
/// - leading: `i · ⌊T/n⌋` for i = n−1‥0, plus `steps_offset`;
/// - trailing: `round(arange(T, 0, −T/n)) − 1`.
pub(crate) fn descending_timesteps(
    spacing: super::TimestepSpacing,
    num_train_timesteps: usize,
    n: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    use super::TimestepSpacing;
    let t = num_train_timesteps;
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (t - 1) as f64, n, true)
            .into_iter()
            .rev()
            .map(|v| if round_linspace { np_round(v) } else { v })
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = t / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange(t as f64, 0.0, -(t as f64 / n as f64))
            .into_iter()
            .map(|v| np_round(v) - 1.0)
            .collect(),
    }
}
