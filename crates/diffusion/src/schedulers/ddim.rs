//! `DDIMScheduler`: denoising diffusion implicit models (Song et al. 2021, eq. 12); fal's "DDIM".
//!
//! From `x_t` and the model output, DDIM forms the clean estimate x̂₀ and the noise estimate ε̂
//! (ε-prediction: `x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t`; v-prediction: `x̂₀ = √ᾱ_t x_t − √(1−ᾱ_t) v̂`,
//! `ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) x_t`; sample-prediction: `ε̂ = (x_t − √ᾱ_t x̂₀)/√(1−ᾱ_t)`), optionally
//! clamps x̂₀ to ±`clip_sample_range`, then jumps to the previous timestep `t' = t − ⌊T/n⌋`:
//!
//! `x_{t'} = √ᾱ_{t'} x̂₀ + √(1 − ᾱ_{t'} − σ_t²) ε̂ + σ_t z`,
//! `σ_t = η √((1−ᾱ_{t'})/(1−ᾱ_t) · (1 − ᾱ_t/ᾱ_{t'}))`.
//!
//! With η = 0 (the pipelines' default) the step is deterministic; with η > 0 one noise tensor `z`
//! is drawn per step. Past the first training level (`t' < 0`), ᾱ_{t'} is 1 with
//! `set_alpha_to_one`, else ᾱ_0. Note that `t' = t − ⌊T/n⌋` is used whatever the spacing, as in
//! diffusers (with "trailing"/"linspace" it is not always the next timestep of the schedule).

use super::config::{ALL_PREDICTIONS, refuse_flag};
use super::noise_schedule::{NoiseSchedule, descending_timesteps};
use super::{
    BetaSchedule, DiffusionScheduler, Latents, SchedulerConfig, SchedulerError, check_index,
    check_steps,
};
use super::{PredictionType, TimestepSpacing};

const CLASS: &str = "DDIMScheduler";

/// DDIM scheduler; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Ddim {
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    prediction: PredictionType,
    spacing: TimestepSpacing,
    steps_offset: usize,
    clip_sample: Option<f32>,
    eta: f32,
    num_inference_steps: Option<usize>,
    timesteps: Vec<i64>,
    timesteps_f32: Vec<f32>,
}

impl Ddim {
    /// Builds the scheduler from a config (defaults: linear β 0.0001–0.02, ε-prediction,
    /// leading spacing, `clip_sample` true with range 1, `set_alpha_to_one` true). η starts at 0.
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let betas = config.beta_config(CLASS, (0.0001, 0.02, BetaSchedule::Linear))?;
        let schedule = NoiseSchedule::new(&betas)?;
        refuse_flag(CLASS, "thresholding", config.thresholding)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        let clip_sample = config
            .clip_sample
            .unwrap_or(true)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        Ok(Self {
            schedule,
            final_alpha_cumprod,
            prediction: config.prediction(CLASS, ALL_PREDICTIONS)?,
            spacing: config.spacing(CLASS, TimestepSpacing::Leading)?,
            steps_offset: config.steps_offset.unwrap_or(0),
            clip_sample,
            eta: 0.0,
            num_inference_steps: None,
            timesteps: Vec::new(),
            timesteps_f32: Vec::new(),
        })
    }

    /// Sets η, the weight of the stochastic part (diffusers' `eta` argument of `step`).
    pub fn set_eta(&mut self, eta: f32) {
        self.eta = eta;
    }

    /// The training noise schedule.
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }
}

/// `√ᾱ_t x₀ + √(1−ᾱ_t) ε` at integer timestep `t` (DDIM, PNDM and LCM share it).
pub(crate) fn add_noise_at<L: Latents>(
    schedule: &NoiseSchedule,
    t: i64,
    original: &L,
    noise: &L,
) -> Result<L, SchedulerError> {
    let a = schedule.alpha_at(t)?;
    Ok(L::axpby(a.sqrt(), original, (1.0 - a).sqrt(), noise))
}

/// Integer timesteps from float64 values, refusing the ones outside the training range (e.g.
/// the `−1` numpy's `arange` gives "trailing" spacing for some step counts, which diffusers would
/// silently read as ᾱ of the last training level).
pub(crate) fn checked_timesteps(
    class: &'static str,
    values: &[f64],
    schedule: &NoiseSchedule,
    steps: usize,
) -> Result<Vec<i64>, SchedulerError> {
    let train = schedule.num_train_timesteps();
    values
        .iter()
        .map(|&v| {
            let t = v as i64;
            if t < 0 || t as usize >= train {
                Err(SchedulerError::InvalidSteps {
                    class,
                    steps,
                    reason: format!(
                        "this spacing yields timestep {t}, outside the training range \
                         0..{train}; choose another number of steps"
                    ),
                })
            } else {
                Ok(t)
            }
        })
        .collect()
}

impl<L: Latents> DiffusionScheduler<L> for Ddim {
    fn class_name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError> {
        check_steps(CLASS, num_inference_steps)?;
        let train = self.schedule.num_train_timesteps();
        if num_inference_steps > train {
            return Err(SchedulerError::InvalidSteps {
                class: CLASS,
                steps: num_inference_steps,
                reason: format!("at most num_train_timesteps = {train} steps"),
            });
        }
        let values = descending_timesteps(
            self.spacing,
            train,
            num_inference_steps,
            self.steps_offset,
            true,
        );
        self.timesteps = checked_timesteps(CLASS, &values, &self.schedule, num_inference_steps)?;
        self.timesteps_f32 = self.timesteps.iter().map(|&t| t as f32).collect();
        self.num_inference_steps = Some(num_inference_steps);
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
        let n = self.num_inference_steps.unwrap_or(self.timesteps.len());
        let t = self.timesteps[step_index];
        let prev_t = t - (self.schedule.num_train_timesteps() / n) as i64;
        let alpha_t = self.schedule.alpha_at(t)?;
        let alpha_prev = if prev_t >= 0 {
            self.schedule.alpha_at(prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let beta_t = 1.0 - alpha_t;
        let (sqrt_a, sqrt_b) = (alpha_t.sqrt(), beta_t.sqrt());
        let (mut pred_original, pred_epsilon) = match self.prediction {
            PredictionType::Epsilon => (
                L::axpby(1.0, sample, -sqrt_b, model_output).scale(1.0 / sqrt_a),
                model_output.clone(),
            ),
            PredictionType::Sample => (
                model_output.clone(),
                L::axpby(1.0, sample, -sqrt_a, model_output).scale(1.0 / sqrt_b),
            ),
            PredictionType::VPrediction => (
                L::axpby(sqrt_a, sample, -sqrt_b, model_output),
                L::axpby(sqrt_a, model_output, sqrt_b, sample),
            ),
        };
        if let Some(range) = self.clip_sample {
            pred_original = pred_original.clamp(-range, range);
        }
        let beta_prev = 1.0 - alpha_prev;
        let variance = beta_prev / beta_t * (1.0 - alpha_t / alpha_prev);
        let std_dev = self.eta * variance.sqrt();
        let direction = (1.0 - alpha_prev - std_dev * std_dev).sqrt();
        let prev = L::axpby(alpha_prev.sqrt(), &pred_original, direction, &pred_epsilon);
        if self.eta > 0.0 {
            let z = noise();
            return Ok(L::axpby(1.0, &prev, std_dev, &z));
        }
        Ok(prev)
    }

    fn noise_draws(&self, _step_index: usize) -> usize {
        usize::from(self.eta > 0.0)
    }

    fn add_noise(&self, original: &L, noise: &L, step_index: usize) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        add_noise_at(&self.schedule, self.timesteps[step_index], original, noise)
    }
}
