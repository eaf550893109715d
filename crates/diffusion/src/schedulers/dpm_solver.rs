//! `DPMSolverMultistepScheduler` with `algorithm_type = "dpmsolver++"`: the multistep DPM-Solver++
//! of Lu et al. 2022 ("DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
//! Models", Algorithm 2); fal's "DPM++ 2M" and, with Karras σ, "DPM++ 2M Karras".
//!
//! Write the forward process as `x_t = α_t x₀ + σ_t ε` with `α_t = 1/√(σ²+1)`, `σ_t = σ α_t`
//! (σ the variance-exploding noise level of the schedule) and the half-log-SNR
//! `λ_t = log α_t − log σ_t`. DPM-Solver++ integrates the ODE in λ with the data prediction
//! `x̂₀` (ε-prediction: `(x − σ_t ε̂)/α_t`; v-prediction: `α_t x − σ_t v̂`; sample-prediction:
//! the output). With `h = λ_t − λ_s` and `φ = e^{−h} − 1`, from step s to step t:
//!
//! - 1st order (DDIM-equivalent): `x_t = (σ_t/σ_s) x_s − α_t φ D₀`, `D₀ = x̂₀(s)`;
//! - 2nd order ("2M", multistep): with the previous estimate `x̂₀(s₁)`, `r₀ = (λ_s − λ_{s₁})/h`,
//!   `D₁ = (x̂₀(s) − x̂₀(s₁))/r₀`: midpoint `x_t = (σ_t/σ_s) x_s − α_t φ D₀ − ½ α_t φ D₁`,
//!   or Heun `… + α_t (φ/h + 1) D₁`;
//! - 3rd order (`solver_order = 3`): the analogous formula with a second difference D₂.
//!
//! The first step has no history and runs 1st order. The last step also runs 1st order when
//! the final σ is 0, with `euler_at_final`, or when `lower_order_final` and fewer than 15 steps
//! (and then the one before it is at most 2nd order) — this stabilises few-step sampling.
//!
//! Timesteps: "linspace" `round(linspace(0, T−1, n+1))` reversed without the 0, "leading"
//! `i · ⌊T/(n+1)⌋ + offset` for i = n‥1, "trailing" `round(arange(T, 0, −T/n)) − 1`; σ by linear
//! interpolation of the training σ, or Karras' ρ = 7 schedule between the training σ_min and
//! σ_max with timesteps recovered by log-σ interpolation and rounded. Deterministic (the SDE
//! variants, fal's "DPM++ 2M SDE", are not supported).

use super::config::{ALL_PREDICTIONS, choice, refuse_flag};
use super::noise_schedule::{
    NoiseSchedule, karras_sigmas, log_table, np_arange, np_interp, np_linspace, np_round,
    sigma_to_t,
};
use super::{
    BetaSchedule, DiffusionScheduler, Latents, SchedulerConfig, SchedulerError, check_index,
    check_steps,
};
use super::{FinalSigmas, PredictionType, TimestepSpacing};

const CLASS: &str = "DPMSolverMultistepScheduler";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// Multistep DPM-Solver++; see the [module docs](self). Keeps the last `solver_order` data
/// predictions between steps: one instance per generation.
#[derive(Debug, Clone)]
pub struct DpmSolverMultistep<L> {
    schedule: NoiseSchedule,
    cosine_betas: bool,
    prediction: PredictionType,
    spacing: TimestepSpacing,
    steps_offset: usize,
    karras: bool,
    final_sigmas: FinalSigmas,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    lambda_min_clipped: f64,
    num_inference_steps: Option<usize>,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
    /// The most recent data predictions x̂₀, oldest first, at most `solver_order` of them.
    model_outputs: Vec<L>,
    lower_order_nums: usize,
    last_step: Option<usize>,
}

impl<L: Latents> DpmSolverMultistep<L> {
    /// Builds the scheduler from a config (defaults: linear β 0.0001–0.02, ε-prediction,
    /// dpmsolver++ of order 2 with the midpoint rule, linspace spacing, `lower_order_final`,
    /// final σ 0).
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let betas = config.beta_config(CLASS, (0.0001, 0.02, BetaSchedule::Linear))?;
        let mut schedule = NoiseSchedule::new(&betas)?;
        if betas.rescale_betas_zero_snr {
            schedule.floor_final_alpha();
        }
        // diffusers maps "deis" to "dpmsolver++"; the deprecated "dpmsolver" and the SDE
        // variants are not implemented here.
        choice(
            CLASS,
            "algorithm_type",
            config.algorithm_type.as_deref(),
            (),
            &[("dpmsolver++", ()), ("deis", ())],
        )?;
        let solver_type = choice(
            CLASS,
            "solver_type",
            config.solver_type.as_deref(),
            SolverType::Midpoint,
            &[
                ("midpoint", SolverType::Midpoint),
                ("heun", SolverType::Heun),
                ("logrho", SolverType::Midpoint),
                ("bh1", SolverType::Midpoint),
                ("bh2", SolverType::Midpoint),
            ],
        )?;
        let solver_order = config.solver_order.unwrap_or(2);
        if !(1..=3).contains(&solver_order) {
            return Err(SchedulerError::UnsupportedConfig {
                class: CLASS,
                field: "solver_order",
                value: solver_order.to_string(),
                supported: "1, 2, 3".into(),
            });
        }
        refuse_flag(CLASS, "thresholding", config.thresholding)?;
        refuse_flag(
            CLASS,
            "use_exponential_sigmas",
            config.use_exponential_sigmas,
        )?;
        refuse_flag(CLASS, "use_beta_sigmas", config.use_beta_sigmas)?;
        refuse_flag(CLASS, "use_lu_lambdas", config.use_lu_lambdas)?;
        refuse_flag(CLASS, "use_flow_sigmas", config.use_flow_sigmas)?;
        refuse_flag(CLASS, "use_dynamic_shifting", config.use_dynamic_shifting)?;
        if let Some(v @ ("learned" | "learned_range")) = config.variance_type.as_deref() {
            return Err(SchedulerError::UnsupportedConfig {
                class: CLASS,
                field: "variance_type",
                value: v.to_owned(),
                supported: "null".into(),
            });
        }
        Ok(Self {
            schedule,
            cosine_betas: betas.beta_schedule == BetaSchedule::SquaredCosCapV2,
            prediction: config.prediction(CLASS, ALL_PREDICTIONS)?,
            spacing: config.spacing(CLASS, TimestepSpacing::Linspace)?,
            steps_offset: config.steps_offset.unwrap_or(0),
            karras: config.use_karras_sigmas.unwrap_or(false),
            final_sigmas: config.final_sigmas(CLASS)?,
            solver_order,
            solver_type,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            lambda_min_clipped: config.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY),
            num_inference_steps: None,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            model_outputs: Vec::new(),
            lower_order_nums: 0,
            last_step: None,
        })
    }

    /// The training noise schedule.
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The inference timesteps as float64 values before the int64 cast.
    fn spaced_timesteps(&self, n: usize) -> Vec<f64> {
        let train = self.schedule.num_train_timesteps();
        // λ_min clipping (for cosine schedules): skip the noisiest levels whose λ is below it.
        let lambdas: Vec<f32> = self
            .schedule
            .alphas_cumprod()
            .iter()
            .map(|&a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
            .collect();
        let clipped = lambdas
            .iter()
            .rev()
            .position(|&l| f64::from(l) >= self.lambda_min_clipped)
            .unwrap_or(train);
        let last = train - clipped;
        match self.spacing {
            TimestepSpacing::Linspace => {
                let mut t: Vec<f64> = np_linspace(0.0, last as f64 - 1.0, n + 1, true)
                    .into_iter()
                    .rev()
                    .map(np_round)
                    .collect();
                t.pop();
                t
            }
            TimestepSpacing::Leading => {
                let ratio = last / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => np_arange(last as f64, 0.0, -(train as f64 / n as f64))
                .into_iter()
                .map(|v| np_round(v) - 1.0)
                .collect(),
        }
    }

    /// x̂₀ from the model output at step `i` (diffusers' `convert_model_output`).
    fn data_prediction(&self, model_output: &L, i: usize, sample: &L) -> L {
        let (alpha, sigma) = alpha_sigma(self.sigmas[i]);
        match self.prediction {
            PredictionType::Epsilon => {
                L::axpby(1.0, sample, -sigma, model_output).scale(1.0 / alpha)
            }
            PredictionType::Sample => model_output.clone(),
            PredictionType::VPrediction => L::axpby(alpha, sample, -sigma, model_output),
        }
    }

    /// One DPM-Solver++ update of the given order from step `i` to `i + 1`.
    fn update(&self, order: usize, i: usize, sample: &L) -> L {
        let k = self.model_outputs.len();
        let m = |back: usize| &self.model_outputs[k - 1 - back];
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let lambda_t = alpha_t.ln() - sigma_t.ln();
        let lambda_s0 = alpha_s0.ln() - sigma_s0.ln();
        let h = lambda_t - lambda_s0;
        let phi = (-h).exp() - 1.0;
        // (σ_t/σ_s) x − α_t φ D₀, common to every order.
        let base = L::axpby(sigma_t / sigma_s0, sample, -(alpha_t * phi), m(0));
        if order == 1 {
            return base;
        }
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[i - 1]);
        let lambda_s1 = alpha_s1.ln() - sigma_s1.ln();
        let r0 = (lambda_s0 - lambda_s1) / h;
        let d1_0 = m(0).sub(m(1)).scale(1.0 / r0);
        if order == 2 {
            let c = match self.solver_type {
                SolverType::Midpoint => -(0.5 * (alpha_t * phi)),
                SolverType::Heun => alpha_t * (phi / h + 1.0),
            };
            return L::axpby(1.0, &base, c, &d1_0);
        }
        let (alpha_s2, sigma_s2) = alpha_sigma(self.sigmas[i - 2]);
        let lambda_s2 = alpha_s2.ln() - sigma_s2.ln();
        let r1 = (lambda_s1 - lambda_s2) / h;
        let d1_1 = m(1).sub(m(2)).scale(1.0 / r1);
        let diff = d1_0.sub(&d1_1);
        let d1 = L::axpby(1.0, &d1_0, r0 / (r0 + r1), &diff);
        let d2 = diff.scale(1.0 / (r0 + r1));
        let x = L::axpby(1.0, &base, alpha_t * (phi / h + 1.0), &d1);
        L::axpby(1.0, &x, -(alpha_t * ((phi + h) / (h * h) - 0.5)), &d2)
    }
}

/// (α_t, σ_t) = (1/√(σ²+1), σ/√(σ²+1)) in float32, as diffusers' `_sigma_to_alpha_sigma_t`.
fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

impl<L: Latents> DiffusionScheduler<L> for DpmSolverMultistep<L> {
    fn class_name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError> {
        check_steps(CLASS, num_inference_steps)?;
        let mut timesteps = self.spaced_timesteps(num_inference_steps);
        let train_sigmas = self.schedule.train_sigmas();
        let sigmas: Vec<f64> = if self.karras {
            let (Some(&min), Some(&max)) = (train_sigmas.first(), train_sigmas.last()) else {
                return Err(SchedulerError::InvalidConfig("empty noise schedule".into()));
            };
            let sigmas = karras_sigmas(f64::from(min), f64::from(max), num_inference_steps);
            let log_sigmas = log_table(&train_sigmas);
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    // Rounded, except for cosine betas where the int64 cast truncates.
                    if self.cosine_betas {
                        t.trunc()
                    } else {
                        np_round(t)
                    }
                })
                .collect();
            sigmas
        } else {
            let table: Vec<f64> = train_sigmas.iter().map(|&s| f64::from(s)).collect();
            timesteps.iter().map(|&t| np_interp(t, &table)).collect()
        };
        let last = match self.final_sigmas {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => {
                let a0 = self.schedule.alphas_cumprod()[0];
                ((1.0 - a0) / a0).sqrt()
            }
        };
        self.sigmas = sigmas.iter().map(|&s| s as f32).chain([last]).collect();
        self.timesteps = timesteps.iter().map(|&t| t as i64 as f32).collect();
        self.num_inference_steps = Some(num_inference_steps);
        self.model_outputs.clear();
        self.lower_order_nums = 0;
        self.last_step = None;
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
        _noise: &mut dyn FnMut() -> L,
    ) -> Result<L, SchedulerError> {
        let n = self.timesteps.len();
        check_index(step_index, n)?;
        if let Some(last) = self.last_step
            && step_index != last + 1
        {
            return Err(SchedulerError::StepOutOfOrder {
                class: CLASS,
                expected: last + 1,
                got: step_index,
            });
        }
        let few_steps = self.lower_order_final && n < 15;
        let lower_order_final = step_index == n - 1
            && (self.euler_at_final || few_steps || self.final_sigmas == FinalSigmas::Zero);
        let lower_order_second = step_index + 2 == n && few_steps;

        let x0 = self.data_prediction(model_output, step_index, sample);
        if self.model_outputs.len() == self.solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(x0);

        let order = if self.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            1
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            2
        } else {
            3
        };
        let prev = self.update(order, step_index, sample);
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        self.last_step = Some(step_index);
        Ok(prev)
    }

    fn noise_draws(&self, _step_index: usize) -> usize {
        0
    }

    fn add_noise(&self, original: &L, noise: &L, step_index: usize) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        let (alpha, sigma) = alpha_sigma(self.sigmas[step_index]);
        Ok(L::axpby(alpha, original, sigma, noise))
    }
}
