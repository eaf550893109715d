//! `LCMScheduler`: multistep consistency sampling for latent consistency models (Luo et al.
//! 2023, Algorithm 1); fal's "LCM" and "LCM (trailing timesteps)".
//!
//! A consistency model maps any noisy latent straight to its clean endpoint. With the boundary
//! condition of Song et al. (σ_data = 0.5, `s = 10 · t`), the consistency function is
//! `f(x_t) = c_skip(t) x_t + c_out(t) x̂₀`, `c_skip = σ_data²/(s² + σ_data²)`,
//! `c_out = s/√(s² + σ_data²)`, where x̂₀ is the DDIM clean estimate from the model output
//! (ε: `(x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t`, v: `√ᾱ_t x_t − √(1−ᾱ_t) v̂`, sample: the output). Each step
//! denoises to `f(x_t)` and then re-noises it to the next timestep t':
//! `x_{t'} = √ᾱ_{t'} f(x_t) + √(1−ᾱ_{t'}) z`; the last step returns `f(x_t)` itself.
//!
//! Timesteps: the distillation schedule `t_k = k·⌊T/N⌋ − 1` (k = 1‥N, N =
//! `original_inference_steps`, 50 by default), reversed, then n of them taken at
//! `⌊i·N/n⌋` (i = 0‥n−1). `timestep_spacing` is ignored, as in diffusers — so fal's
//! "LCM (trailing timesteps)" runs exactly the same schedule as "LCM".
//!
//! Noise: one draw per step, except at the last step of the schedule (index n − 1).

use super::PredictionType;
use super::config::{ALL_PREDICTIONS, refuse_flag};
use super::ddim::add_noise_at;
use super::noise_schedule::{NoiseSchedule, np_linspace};
use super::{
    BetaSchedule, DiffusionScheduler, Latents, SchedulerConfig, SchedulerError, check_index,
    check_steps,
};

const CLASS: &str = "LCMScheduler";

/// Latent-consistency-model sampler; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Lcm {
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    prediction: PredictionType,
    original_inference_steps: usize,
    clip_sample: Option<f32>,
    timestep_scaling: f32,
    num_inference_steps: Option<usize>,
    timesteps: Vec<i64>,
    timesteps_f32: Vec<f32>,
}

impl Lcm {
    /// Builds the scheduler from a config (defaults: scaled-linear β 0.00085–0.012,
    /// ε-prediction, 50 original steps, `set_alpha_to_one` true, no clipping, timestep scaling 10).
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let betas = config.beta_config(CLASS, (0.00085, 0.012, BetaSchedule::ScaledLinear))?;
        let schedule = NoiseSchedule::new(&betas)?;
        refuse_flag(CLASS, "thresholding", config.thresholding)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        let clip_sample = config
            .clip_sample
            .unwrap_or(false)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(Self {
            schedule,
            final_alpha_cumprod,
            prediction: config.prediction(CLASS, ALL_PREDICTIONS)?,
            original_inference_steps: config.original_inference_steps.unwrap_or(50),
            clip_sample,
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0) as f32,
            num_inference_steps: None,
            timesteps: Vec::new(),
            timesteps_f32: Vec::new(),
        })
    }

    /// The training noise schedule.
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn invalid(&self, steps: usize, reason: String) -> SchedulerError {
        SchedulerError::InvalidSteps {
            class: CLASS,
            steps,
            reason,
        }
    }
}

impl<L: Latents> DiffusionScheduler<L> for Lcm {
    fn class_name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError> {
        let n = num_inference_steps;
        check_steps(CLASS, n)?;
        let train = self.schedule.num_train_timesteps();
        let original = self.original_inference_steps;
        if original == 0 || original > train {
            return Err(self.invalid(
                n,
                format!("original_inference_steps = {original} must be in 1..={train}"),
            ));
        }
        if n > original {
            return Err(self.invalid(
                n,
                format!("at most original_inference_steps = {original} steps"),
            ));
        }
        let k = train / original;
        // The distillation schedule, noisiest first: N·k − 1, …, 2k − 1, k − 1.
        let origin: Vec<i64> = (1..=original).rev().map(|i| (i * k) as i64 - 1).collect();
        self.timesteps = np_linspace(0.0, original as f64, n, false)
            .into_iter()
            .map(|i| origin[i.floor() as usize])
            .collect();
        self.timesteps_f32 = self.timesteps.iter().map(|&t| t as f32).collect();
        self.num_inference_steps = Some(n);
        Ok(())
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps_f32
    }

    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    fn init_noise_sigma(&self) -> f32 {
        1.0
    }

    fn scale_model_input(&self, sample: &L, step_index: usize) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &L,
        step_index: usize,
        sample: &L,
        noise: &mut dyn FnMut() -> L,
    ) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        let t = self.timesteps[step_index];
        let prev_t = self.timesteps.get(step_index + 1).copied().unwrap_or(t);
        let alpha = self.schedule.alpha_at(t)?;
        let alpha_prev = if prev_t >= 0 {
            self.schedule.alpha_at(prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let (beta, beta_prev) = (1.0 - alpha, 1.0 - alpha_prev);
        // Boundary-condition scalings, float32 as torch computes them from the int64 timestep.
        let scaled = t as f32 * self.timestep_scaling;
        let denom = scaled * scaled + 0.25;
        let c_skip = 0.25 / denom;
        let c_out = scaled / denom.sqrt();
        let mut pred_original = match self.prediction {
            PredictionType::Epsilon => {
                L::axpby(1.0, sample, -beta.sqrt(), model_output).scale(1.0 / alpha.sqrt())
            }
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => {
                L::axpby(alpha.sqrt(), sample, -beta.sqrt(), model_output)
            }
        };
        if let Some(range) = self.clip_sample {
            pred_original = pred_original.clamp(-range, range);
        }
        let denoised = L::axpby(c_out, &pred_original, c_skip, sample);
        if DiffusionScheduler::<L>::noise_draws(self, step_index) == 0 {
            return Ok(denoised);
        }
        let z = noise();
        Ok(L::axpby(alpha_prev.sqrt(), &denoised, beta_prev.sqrt(), &z))
    }

    fn noise_draws(&self, step_index: usize) -> usize {
        usize::from(Some(step_index + 1) != self.num_inference_steps)
    }

    fn add_noise(&self, original: &L, noise: &L, step_index: usize) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        add_noise_at(&self.schedule, self.timesteps[step_index], original, noise)
    }
}
