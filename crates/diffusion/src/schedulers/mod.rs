//! Noise schedulers, reproducing diffusers 0.42.1 (same inputs → same latents, to float32
//! rounding).
//!
//! A scheduler owns the discretisation of the reverse diffusion process: which training
//! timesteps the UNet is evaluated at ([`DiffusionScheduler::set_timesteps`]), how its input is
//! scaled ([`DiffusionScheduler::scale_model_input`]), how one model evaluation moves the latents
//! to the next noise level ([`DiffusionScheduler::step`]), and how clean latents are noised to a
//! given level for img2img and inpainting ([`DiffusionScheduler::add_noise`],
//! [`DiffusionScheduler::strength_schedule`]).
//!
//! | diffusers class | fal name(s) | file |
//! |---|---|---|
//! | `EulerDiscreteScheduler` | "Euler", "Euler (trailing timesteps)" | [`euler`] |
//! | `EulerAncestralDiscreteScheduler` | "Euler A" | [`euler_ancestral`] |
//! | `DDIMScheduler` | "DDIM" | [`ddim`] |
//! | `DPMSolverMultistepScheduler` | "DPM++ 2M", "DPM++ 2M Karras" | [`dpm_solver`] |
//! | `PNDMScheduler` | (SD 1.5's default) | [`pndm`] |
//! | `LCMScheduler` | "LCM", "LCM (trailing timesteps)" | [`lcm`] |
//!
//! The schedulers are generic over [`Latents`], the handful of elementwise operations they need,
//! so the same code drives Burn tensors and the `Vec<f32>` the tests use.
//!
//! # Driving a scheduler (what diffusers' SD/SDXL img2img and inpaint pipelines do)
//! ```text
//! let mut s = Scheduler::from_config(&config)?;          // one instance per generation
//! s.set_timesteps(steps)?;
//! let plan = s.strength_schedule(strength)?;              // begin index, like get_timesteps
//! let noise = rng.randn(shape);                           // the pipeline's draw
//! let mut x = if plan.is_strength_max { noise.scale(s.init_noise_sigma()) }
//!             else { s.add_noise(&image_latents, &noise, plan.begin_index)? };
//! for i in plan.begin_index..s.timesteps().len() {
//!     let t = s.timesteps()[i];                           // the value the UNet sees
//!     let input = s.scale_model_input(&x, i)?;
//!     let eps = unet(input, t);                           // + classifier-free guidance
//!     x = s.step(&eps, i, &x, &mut || rng.randn(shape))?;
//!     // 4-channel inpainting re-blend: add_noise(&image_latents, &noise, i + 1) if i + 1 < len
//! }
//! ```
//! Step indices are absolute positions in [`DiffusionScheduler::timesteps`] (diffusers'
//! `step_index` after `set_begin_index`), not loop counters.
//!
//! # Randomness
//! Schedulers never own a random generator: the noise that a stochastic step needs comes from
//! the `noise` closure passed to [`DiffusionScheduler::step`], so the pipeline keeps diffusers'
//! draw order on its PyTorch-compatible generator. Each closure call must return one standard
//! normal tensor shaped like the latents (diffusers draws it with `randn_tensor(model_output.shape,
//! dtype=model_output.dtype, generator=generator)`, after the UNet call of that step):
//! - Euler, DPM++ 2M, PNDM: never.
//! - Euler A: exactly once per step, every step (also the last one, whose σ_up is 0).
//! - DDIM: once per step if eta > 0, never if eta = 0 (the pipelines' default).
//! - LCM: once per step, except at the last step of the schedule (index n − 1).
//!
//! [`DiffusionScheduler::noise_draws`] tells how many draws a given step makes.
//!
//! # State
//! DPM-Solver keeps the previous model outputs and PNDM its ε history and counter: run one
//! generation per instance, and call `set_timesteps` again to start another. Those two refuse a
//! step whose index does not follow the previous one.
//!
//! # Arithmetic
//! Schedules are computed as diffusers computes them: numpy float64 where it uses numpy, torch
//! float32 where it uses torch (see [`noise_schedule`]). Integer timesteps match exactly;
//! fractional ones (Euler with Karras σ or continuous timesteps) and σ to ~1e-7, because
//! torch's CPU `sqrt` (MKL) is not correctly rounded. Step coefficients are float32 scalars
//! evaluated in torch's order, and latents are combined with [`Latents`]' float32 operations.
//! diffusers returns each step's latents in the model output's dtype (half precision when the
//! UNet runs in fp16); that rounding belongs to the [`Latents`] type the pipeline uses.

pub mod config;
pub mod ddim;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
pub mod lcm;
pub mod noise_schedule;
pub mod pndm;
mod scheduler;
#[cfg(test)]
mod tests;

pub use config::SchedulerConfig;
pub use ddim::Ddim;
pub use dpm_solver::DpmSolverMultistep;
pub use euler::EulerDiscrete;
pub use euler_ancestral::EulerAncestralDiscrete;
pub use lcm::Lcm;
pub use noise_schedule::NoiseSchedule;
pub use pndm::Pndm;
pub use scheduler::{FAL_SCHEDULER_NAMES, SUPPORTED_CLASSES, Scheduler, fal_config};

/// The elementwise vocabulary the schedulers need from a latent tensor.
///
/// Every operation is float32 and rounds like PyTorch's eager CPU kernels: `axpby` is
/// `round(round(a·x) + round(b·y))` (two products, one sum; no fused multiply-add).
pub trait Latents: Clone {
    /// `a · self`.
    fn scale(&self, a: f32) -> Self;
    /// `self + other`.
    fn add(&self, other: &Self) -> Self;
    /// `self − other`.
    fn sub(&self, other: &Self) -> Self;
    /// `a · x + b · y`.
    fn axpby(a: f32, x: &Self, b: f32, y: &Self) -> Self;
    /// Every element clamped into `[min, max]` (DDIM/LCM `clip_sample`); NaN stays NaN.
    fn clamp(&self, min: f32, max: f32) -> Self;
}

/// Plain vectors, for tests and CPU tools. The operands of a binary operation must have the same
/// length (panics otherwise: mixing latents of different shapes is a programming error).
impl Latents for Vec<f32> {
    fn scale(&self, a: f32) -> Self {
        self.iter().map(|x| a * x).collect()
    }

    fn add(&self, other: &Self) -> Self {
        same_len(self, other);
        self.iter().zip(other).map(|(x, y)| x + y).collect()
    }

    fn sub(&self, other: &Self) -> Self {
        same_len(self, other);
        self.iter().zip(other).map(|(x, y)| x - y).collect()
    }

    fn axpby(a: f32, x: &Self, b: f32, y: &Self) -> Self {
        same_len(x, y);
        x.iter().zip(y).map(|(x, y)| a * x + b * y).collect()
    }

    fn clamp(&self, min: f32, max: f32) -> Self {
        self.iter()
            .map(|&x| {
                if x < min {
                    min
                } else if x > max {
                    max
                } else {
                    x
                }
            })
            .collect()
    }
}

fn same_len(x: &[f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "latents of different lengths combined");
}

/// Everything that can go wrong configuring or driving a scheduler.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    #[error("unsupported scheduler class \"{0}\"; supported classes: {SUPPORTED_CLASSES_LIST}")]
    UnsupportedClass(String),
    #[error("unsupported scheduler \"{0}\"; supported schedulers: {FAL_NAMES_LIST}")]
    UnsupportedName(String),
    #[error("{class}: {field} = {value} is not supported (supported: {supported})")]
    UnsupportedConfig {
        class: &'static str,
        field: &'static str,
        value: String,
        supported: String,
    },
    #[error("invalid scheduler config: {0}")]
    InvalidConfig(String),
    #[error("{class}: cannot run {steps} inference steps: {reason}")]
    InvalidSteps {
        class: &'static str,
        steps: usize,
        reason: String,
    },
    #[error("strength must be between 0 and 1, got {0}")]
    InvalidStrength(f64),
    #[error(
        "no denoising step left: int({steps} steps × strength {strength}) = 0; \
         raise the strength or the number of steps"
    )]
    NoStepsLeft { steps: usize, strength: f64 },
    #[error("set_timesteps must be called before {0}")]
    TimestepsNotSet(&'static str),
    #[error("step index {index} is outside the schedule of {len} timesteps")]
    StepOutOfRange { index: usize, len: usize },
    #[error(
        "{class} keeps state between steps and expected step index {expected}, got {got}; \
         use one scheduler per generation and call set_timesteps to start a new one"
    )]
    StepOutOfOrder {
        class: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("timestep {timestep} is outside the training range 0..{num_train_timesteps}")]
    TimestepOutOfRange {
        timestep: i64,
        num_train_timesteps: usize,
    },
}

const SUPPORTED_CLASSES_LIST: &str = "EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, \
    DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, LCMScheduler";
const FAL_NAMES_LIST: &str = "\"Euler\", \"Euler (trailing timesteps)\", \"Euler A\", \"DDIM\", \
    \"DPM++ 2M\", \"DPM++ 2M Karras\", \"LCM\", \"LCM (trailing timesteps)\"";

/// Where an img2img / inpainting run starts in the schedule: diffusers' `get_timesteps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrengthSchedule {
    /// Index into `timesteps()` of the first step to run (`t_start · order`), also the level the
    /// image latents are noised to (`add_noise(.., begin_index)`).
    pub begin_index: usize,
    /// How many steps the pipeline reports (`num_inference_steps − t_start`; PNDM actually runs
    /// one more, see `timesteps().len() − begin_index`).
    pub num_inference_steps: usize,
    /// `strength == 1.0`: start from pure noise × `init_noise_sigma` instead of `add_noise`
    /// (inpaint pipelines; the img2img pipelines always call `add_noise`).
    pub is_strength_max: bool,
}

/// How β grows over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// β linear from `beta_start` to `beta_end`.
    Linear,
    /// √β linear, as in Stable Diffusion (0.00085 → 0.012).
    ScaledLinear,
    /// The cosine schedule of Nichol & Dhariwal, β capped at 0.999.
    SquaredCosCapV2,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise ε (SD 1.x, SDXL).
    Epsilon,
    /// The velocity v = √ᾱ ε − √(1−ᾱ) x₀ (SD 2.x 768).
    VPrediction,
    /// The clean sample x₀.
    Sample,
}

/// How the inference timesteps are picked among the training ones (Lin et al. 2023, table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    /// Evenly spaced from T−1 down to 0, endpoints included.
    Linspace,
    /// Multiples of ⌊T/n⌋ from 0, plus `steps_offset` (SD's "leading" spacing).
    Leading,
    /// Evenly spaced back from T−1, so the first step is always the noisiest level.
    Trailing,
}

/// The σ appended after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigmas {
    /// σ = 0: the last step lands on the clean sample.
    Zero,
    /// σ = σ of training level 0.
    SigmaMin,
}

/// The operations the img2img and inpaint pipelines need, with diffusers' semantics.
pub trait DiffusionScheduler<L: Latents> {
    /// The diffusers class name, e.g. "EulerDiscreteScheduler".
    fn class_name(&self) -> &'static str;

    /// diffusers' `scheduler.order` (1 for every scheduler here).
    fn order(&self) -> usize {
        1
    }

    /// Computes the inference timesteps (and σ) for `num_inference_steps`, and resets any state
    /// from a previous generation.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError>;

    /// The `num_inference_steps` last passed to `set_timesteps`.
    fn num_inference_steps(&self) -> Option<usize>;

    /// The timesteps the UNet is evaluated at, in order. Integer-valued for every scheduler but
    /// Euler with Karras σ, linspace spacing or continuous timesteps (diffusers passes float32
    /// there and int64 elsewhere; the UNet's embedding casts both to float32). Usually
    /// `num_inference_steps` long; PNDM has one more (PLMS repeats a timestep) or 9 more (PRK),
    /// and numpy's `arange` gives "trailing" spacing one extra step for some counts (e.g. 61).
    fn timesteps(&self) -> &[f32];

    /// σ per step plus the final σ (`timesteps().len() + 1` values), for the σ-parametrised
    /// schedulers (Euler, Euler A, DPM-Solver); `None` for the ᾱ-parametrised ones.
    fn sigmas(&self) -> Option<&[f32]>;

    /// Standard deviation of the initial noise: σ_max (or √(σ_max² + 1) for "leading" spacing)
    /// for Euler and Euler A, 1 for the others.
    fn init_noise_sigma(&self) -> f32;

    /// The UNet input for step `step_index`: `x / √(σ² + 1)` for Euler and Euler A (the
    /// variance-exploding latents back to unit variance), `x` unchanged for the others.
    fn scale_model_input(&self, sample: &L, step_index: usize) -> Result<L, SchedulerError>;

    /// One reverse step: from the latents `sample` at `timesteps()[step_index]` and the model's
    /// prediction there, the latents at the next noise level. `noise` is called as documented in
    /// the [module docs](self#randomness).
    fn step(
        &mut self,
        model_output: &L,
        step_index: usize,
        sample: &L,
        noise: &mut dyn FnMut() -> L,
    ) -> Result<L, SchedulerError>;

    /// How many times `step(.., step_index, ..)` calls its `noise` closure.
    fn noise_draws(&self, step_index: usize) -> usize;

    /// The forward process at step `step_index`'s noise level, as the pipelines call it (once
    /// with `begin_index` for the initial latents, then with `i + 1` after step `i` for the
    /// 4-channel inpainting re-blend): `x₀ + σ ε` (Euler, Euler A), `α x₀ + σ_t ε` with
    /// `α = 1/√(σ²+1)` (DPM-Solver), `√ᾱ_t x₀ + √(1−ᾱ_t) ε` (DDIM, PNDM, LCM).
    fn add_noise(&self, original: &L, noise: &L, step_index: usize) -> Result<L, SchedulerError>;

    /// diffusers' img2img/inpaint `get_timesteps(num_inference_steps, strength)` for the
    /// `num_inference_steps` given to `set_timesteps`: `init = min(⌊n·strength⌋, n)`,
    /// `t_start = max(n − init, 0)`, first step `t_start · order`. With SDXL inpainting's default
    /// strength 0.9999 and 30 steps, 29 steps run.
    fn strength_schedule(&self, strength: f64) -> Result<StrengthSchedule, SchedulerError> {
        let n = self
            .num_inference_steps()
            .ok_or(SchedulerError::TimestepsNotSet("strength_schedule"))?;
        if !(0.0..=1.0).contains(&strength) {
            return Err(SchedulerError::InvalidStrength(strength));
        }
        // Python's `int(n * strength)`: float64 product, truncated.
        let init = ((n as f64 * strength) as usize).min(n);
        let t_start = n - init;
        let begin_index = t_start * self.order();
        // diffusers' inpaint pipelines refuse this ("the number of pipeline steps is 0"); its
        // img2img pipelines fail on the empty schedule (or, with PNDM, run one stray step).
        if init == 0 || begin_index >= self.timesteps().len() {
            return Err(SchedulerError::NoStepsLeft { steps: n, strength });
        }
        Ok(StrengthSchedule {
            begin_index,
            num_inference_steps: n - t_start,
            is_strength_max: strength == 1.0,
        })
    }
}

/// Shared check: `step_index` names one of `len` timesteps.
pub(crate) fn check_index(step_index: usize, len: usize) -> Result<(), SchedulerError> {
    if len == 0 {
        return Err(SchedulerError::TimestepsNotSet("stepping"));
    }
    if step_index >= len {
        return Err(SchedulerError::StepOutOfRange {
            index: step_index,
            len,
        });
    }
    Ok(())
}

/// Shared check for `set_timesteps(0)`.
pub(crate) fn check_steps(class: &'static str, steps: usize) -> Result<(), SchedulerError> {
    if steps == 0 {
        return Err(SchedulerError::InvalidSteps {
            class,
            steps,
            reason: "at least one step is needed".into(),
        });
    }
    Ok(())
}
