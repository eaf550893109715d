//! `EulerAncestralDiscreteScheduler`: ancestral sampling with Euler steps (k-diffusion's
//! `sample_euler_ancestral`); fal's "Euler A".
//!
//! Each step splits the move from σ_from to σ_to into a deterministic Euler step down to
//! `σ_down` followed by fresh noise of standard deviation `σ_up`, chosen so that
//! `σ_down² + σ_up² = σ_to²` and the ancestral (DDPM posterior) variance is matched:
//!
//! `σ_up = √(σ_to² (σ_from² − σ_to²) / σ_from²)`, `σ_down = √(σ_to² − σ_up²)`,
//! `x' = x + (σ_down − σ_from) · (x − x̂₀)/σ_from + σ_up · z`, `z ~ N(0, I)`.
//!
//! x̂₀ as in [`euler`](super::euler) (ε- or v-prediction). σ are the training σ interpolated at
//! the timesteps, then 0 (no Karras option in this class).
//!
//! Noise: exactly one draw per step, every step — including the last, where σ_up = 0 — because
//! diffusers draws unconditionally.

use super::config::EPS_V_PREDICTIONS;
use super::euler::{euler_pred_original, init_noise_sigma, sqrt_sigma2_plus_1};
use super::noise_schedule::{NoiseSchedule, descending_timesteps, np_interp};
use super::{
    BetaSchedule, DiffusionScheduler, Latents, SchedulerConfig, SchedulerError, check_index,
    check_steps,
};
use super::{PredictionType, TimestepSpacing};

const CLASS: &str = "EulerAncestralDiscreteScheduler";

/// Euler ancestral scheduler; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscrete {
    schedule: NoiseSchedule,
    prediction: PredictionType,
    spacing: TimestepSpacing,
    steps_offset: usize,
    num_inference_steps: Option<usize>,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
}

impl EulerAncestralDiscrete {
    /// Builds the scheduler from a config (defaults: linear β 0.0001–0.02, ε-prediction,
    /// linspace spacing).
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let betas = config.beta_config(CLASS, (0.0001, 0.02, BetaSchedule::Linear))?;
        let mut schedule = NoiseSchedule::new(&betas)?;
        if betas.rescale_betas_zero_snr {
            schedule.floor_final_alpha();
        }
        Ok(Self {
            schedule,
            // diffusers raises NotImplementedError for "sample".
            prediction: config.prediction(CLASS, EPS_V_PREDICTIONS)?,
            spacing: config.spacing(CLASS, TimestepSpacing::Linspace)?,
            steps_offset: config.steps_offset.unwrap_or(0),
            num_inference_steps: None,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    /// The training noise schedule.
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
}

impl<L: Latents> DiffusionScheduler<L> for EulerAncestralDiscrete {
    fn class_name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError> {
        check_steps(CLASS, num_inference_steps)?;
        let timesteps: Vec<f32> = descending_timesteps(
            self.spacing,
            self.schedule.num_train_timesteps(),
            num_inference_steps,
            self.steps_offset,
            false,
        )
        .into_iter()
        .map(|t| t as f32)
        .collect();
        let table: Vec<f64> = self
            .schedule
            .train_sigmas()
            .iter()
            .map(|&s| f64::from(s))
            .collect();
        self.sigmas = timesteps
            .iter()
            .map(|&t| np_interp(f64::from(t), &table) as f32)
            .chain([0.0])
            .collect();
        self.timesteps = timesteps;
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f32 {
        init_noise_sigma(&self.schedule, &self.sigmas, self.spacing)
    }

    fn scale_model_input(&self, sample: &L, step_index: usize) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        Ok(sample.scale(1.0 / sqrt_sigma2_plus_1(self.sigmas[step_index])))
    }

    fn step(
        &mut self,
        model_output: &L,
        step_index: usize,
        sample: &L,
        noise: &mut dyn FnMut() -> L,
    ) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        let sigma_from = self.sigmas[step_index];
        let sigma_to = self.sigmas[step_index + 1];
        let pred_original = euler_pred_original(self.prediction, sigma_from, model_output, sample);
        let (from2, to2) = (sigma_from * sigma_from, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = sample.sub(&pred_original).scale(1.0 / sigma_from);
        let dt = sigma_down - sigma_from;
        let prev = L::axpby(1.0, sample, dt, &derivative);
        let z = noise();
        Ok(L::axpby(1.0, &prev, sigma_up, &z))
    }

    fn noise_draws(&self, _step_index: usize) -> usize {
        1
    }

    fn add_noise(&self, original: &L, noise: &L, step_index: usize) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        Ok(L::axpby(1.0, original, self.sigmas[step_index], noise))
    }
}
