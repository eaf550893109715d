//! `EulerDiscreteScheduler`: Euler's method on the probability-flow ODE (Karras et al. 2022,
//! Algorithm 1 without churn) — SDXL inpainting's default scheduler; fal's "Euler".
//!
//! In the variance-exploding parametrisation `x = x₀ + σ ε` the probability-flow ODE is
//! `dx/dσ = (x − x̂₀(x, σ)) / σ`, where the model's prediction gives the denoised estimate
//! `x̂₀ = x − σ ε̂` (ε-prediction), `x̂₀ = −σ/√(σ²+1) · v̂ + x/(σ²+1)` (v-prediction) or
//! `x̂₀ = output` (sample-prediction). One step is a single Euler step from σ_i to σ_{i+1}:
//! `x_{i+1} = x_i + (σ_{i+1} − σ_i) · (x_i − x̂₀)/σ_i`. The UNet was trained on unit-variance
//! inputs `√ᾱ x₀ + √(1−ᾱ) ε = x/√(σ²+1)`, hence [`scale_model_input`](EulerDiscrete).
//!
//! The inference σ are the training σ(t) linearly interpolated at the chosen timesteps, or, with
//! `use_karras_sigmas`, Karras' ρ = 7 schedule between the first and last of those, mapped back
//! to fractional timesteps by log-σ interpolation. A final σ (0, or σ of level 0) is appended.
//! Deterministic: no noise is drawn (diffusers' `s_churn` is 0 in the pipelines).

use super::config::{ALL_PREDICTIONS, choice, refuse_flag};
use super::noise_schedule::{
    NoiseSchedule, descending_timesteps, karras_sigmas, log_table, np_interp, sigma_to_t,
};
use super::{
    BetaSchedule, DiffusionScheduler, Latents, SchedulerConfig, SchedulerError, check_index,
    check_steps,
};
use super::{FinalSigmas, PredictionType, TimestepSpacing};

const CLASS: &str = "EulerDiscreteScheduler";

/// Euler (probability-flow ODE) scheduler; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    schedule: NoiseSchedule,
    prediction: PredictionType,
    spacing: TimestepSpacing,
    steps_offset: usize,
    karras: bool,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    final_sigmas: FinalSigmas,
    continuous_timesteps: bool,
    num_inference_steps: Option<usize>,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
}

impl EulerDiscrete {
    /// Builds the scheduler from a config (defaults: linear β 0.0001–0.02, ε-prediction,
    /// linspace spacing, linear interpolation, final σ 0).
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let betas = config.beta_config(CLASS, (0.0001, 0.02, BetaSchedule::Linear))?;
        let mut schedule = NoiseSchedule::new(&betas)?;
        if betas.rescale_betas_zero_snr {
            schedule.floor_final_alpha();
        }
        choice(
            CLASS,
            "interpolation_type",
            config.interpolation_type.as_deref(),
            (),
            &[("linear", ())],
        )?;
        refuse_flag(
            CLASS,
            "use_exponential_sigmas",
            config.use_exponential_sigmas,
        )?;
        refuse_flag(CLASS, "use_beta_sigmas", config.use_beta_sigmas)?;
        let prediction = choice(
            CLASS,
            "prediction_type",
            config.prediction_type.as_deref(),
            PredictionType::Epsilon,
            &[
                ALL_PREDICTIONS,
                &[("original_sample", PredictionType::Sample)],
            ]
            .concat(),
        )?;
        let continuous = choice(
            CLASS,
            "timestep_type",
            config.timestep_type.as_deref(),
            false,
            &[("discrete", false), ("continuous", true)],
        )?;
        Ok(Self {
            schedule,
            prediction,
            spacing: config.spacing(CLASS, TimestepSpacing::Linspace)?,
            steps_offset: config.steps_offset.unwrap_or(0),
            karras: config.use_karras_sigmas.unwrap_or(false),
            sigma_min: config.sigma_min,
            sigma_max: config.sigma_max,
            final_sigmas: config.final_sigmas(CLASS)?,
            // diffusers only uses continuous timesteps together with v-prediction.
            continuous_timesteps: continuous && prediction == PredictionType::VPrediction,
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

/// `√(σ² + 1)` in float32, as torch evaluates `(sigma**2 + 1) ** 0.5`.
pub(crate) fn sqrt_sigma2_plus_1(sigma: f32) -> f32 {
    (sigma * sigma + 1.0).sqrt()
}

/// The denoised estimate x̂₀ from the model output at σ (the Euler schedulers' shared rule).
pub(crate) fn euler_pred_original<L: Latents>(
    prediction: PredictionType,
    sigma: f32,
    model_output: &L,
    sample: &L,
) -> L {
    match prediction {
        PredictionType::Epsilon => L::axpby(1.0, sample, -sigma, model_output),
        PredictionType::VPrediction => {
            let c_out = -sigma / sqrt_sigma2_plus_1(sigma);
            let c_skip = 1.0 / (sigma * sigma + 1.0);
            L::axpby(c_out, model_output, c_skip, sample)
        }
        PredictionType::Sample => model_output.clone(),
    }
}

impl<L: Latents> DiffusionScheduler<L> for EulerDiscrete {
    fn class_name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError> {
        check_steps(CLASS, num_inference_steps)?;
        let train = self.schedule.num_train_timesteps();
        // float32 timesteps, as `np.float32` arrays in diffusers.
        let mut timesteps: Vec<f64> = descending_timesteps(
            self.spacing,
            train,
            num_inference_steps,
            self.steps_offset,
            false,
        )
        .into_iter()
        .map(|t| f64::from(t as f32))
        .collect();
        let train_sigmas = self.schedule.train_sigmas();
        let table: Vec<f64> = train_sigmas.iter().map(|&s| f64::from(s)).collect();
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| np_interp(t, &table)).collect();
        if self.karras {
            let (Some(&first), Some(&last)) = (sigmas.first(), sigmas.last()) else {
                return Err(SchedulerError::InvalidSteps {
                    class: CLASS,
                    steps: num_inference_steps,
                    reason: "empty schedule".into(),
                });
            };
            let sigma_min = self.sigma_min.unwrap_or(last);
            let sigma_max = self.sigma_max.unwrap_or(first);
            sigmas = karras_sigmas(sigma_min, sigma_max, num_inference_steps);
            let log_sigmas = log_table(&train_sigmas);
            timesteps = sigmas
                .iter()
                .map(|&s| f64::from(sigma_to_t(s, &log_sigmas) as f32))
                .collect();
        }
        let last = match self.final_sigmas {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => {
                let a0 = self.schedule.alphas_cumprod()[0];
                ((1.0 - a0) / a0).sqrt()
            }
        };
        self.sigmas = sigmas.iter().map(|&s| s as f32).chain([last]).collect();
        self.timesteps = if self.continuous_timesteps {
            let n = self.sigmas.len() - 1;
            self.sigmas[..n].iter().map(|s| 0.25 * s.ln()).collect()
        } else {
            timesteps.iter().map(|&t| t as f32).collect()
        };
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
        _noise: &mut dyn FnMut() -> L,
    ) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        let sigma = self.sigmas[step_index];
        let pred_original = euler_pred_original(self.prediction, sigma, model_output, sample);
        let derivative = sample.sub(&pred_original).scale(1.0 / sigma);
        let dt = self.sigmas[step_index + 1] - sigma;
        Ok(L::axpby(1.0, sample, dt, &derivative))
    }

    fn noise_draws(&self, _step_index: usize) -> usize {
        0
    }

    fn add_noise(&self, original: &L, noise: &L, step_index: usize) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        Ok(L::axpby(1.0, original, self.sigmas[step_index], noise))
    }
}

/// σ_max for "linspace"/"trailing" spacing, √(σ_max² + 1) for "leading" — float32. Before
/// `set_timesteps`, σ_max of the training schedule, as in diffusers.
pub(crate) fn init_noise_sigma(
    schedule: &NoiseSchedule,
    sigmas: &[f32],
    spacing: TimestepSpacing,
) -> f32 {
    let max = if sigmas.is_empty() {
        schedule.train_sigmas().into_iter().fold(0.0, f32::max)
    } else {
        sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    };
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => sqrt_sigma2_plus_1(max),
    }
}
