//! `PNDMScheduler`: pseudo numerical methods for diffusion models (Liu et al. 2022) — Stable
//! Diffusion 1.x's default scheduler, which runs it with `skip_prk_steps = true` (pure PLMS).
//!
//! PNDM treats DDIM's deterministic update as the "transfer" φ(x_t, ε, t → t') and feeds it a
//! linear multistep (Adams–Bashforth) combination of past noise predictions instead of the
//! current one. With `δ = ⌊T/n⌋`, `ᾱ`, `ᾱ'` at t and t' = t − δ:
//!
//! `φ = √(ᾱ'/ᾱ) x_t − (ᾱ' − ᾱ) ε / (ᾱ √(1−ᾱ') + √(ᾱ (1−ᾱ) ᾱ'))`
//! (v-prediction is first turned into ε = √ᾱ v + √(1−ᾱ) x_t), and ε is, with e₁ the newest:
//! - PLMS with k = 1‥4 history entries: e₁; ½(3e₁ − e₂); (23e₁ − 16e₂ + 5e₃)/12;
//!   (55e₁ − 59e₂ + 37e₃ − 9e₄)/24;
//! - `skip_prk_steps`: the first step uses e₁, then the schedule repeats the second timestep so
//!   that the second model call improves the first step Heun-style: it restarts from the first
//!   step's input with ε = ½(e₁ + e₀) (this is why the schedule has n + 1 timesteps);
//! - otherwise (PRK warm-up): the first three steps are 4-stage Runge–Kutta steps at the top
//!   three levels (12 model calls on half steps), then PLMS. This needs at least 4 steps.
//!
//! Deterministic. The state (history, counter) lives in the scheduler: one instance per
//! generation. Like diffusers, the counter — not the step index — decides which formula runs,
//! so an img2img run that starts mid-schedule begins with the first-step formulas.

use super::config::EPS_V_PREDICTIONS;
use super::ddim::{add_noise_at, checked_timesteps};
use super::noise_schedule::{NoiseSchedule, np_arange, np_linspace, np_round};
use super::{
    BetaSchedule, DiffusionScheduler, Latents, SchedulerConfig, SchedulerError, check_index,
    check_steps,
};
use super::{PredictionType, TimestepSpacing};

const CLASS: &str = "PNDMScheduler";

/// PNDM (PLMS, optionally with PRK warm-up); see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Pndm<L> {
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    prediction: PredictionType,
    spacing: TimestepSpacing,
    steps_offset: usize,
    skip_prk_steps: bool,
    num_inference_steps: Option<usize>,
    /// How many of the leading timesteps are Runge–Kutta stages (0 or 12).
    prk_len: usize,
    timesteps: Vec<i64>,
    timesteps_f32: Vec<f32>,
    counter: usize,
    /// Past noise predictions, oldest first (at most 4 are used).
    ets: Vec<L>,
    cur_sample: Option<L>,
    cur_model_output: Option<L>,
    last_step: Option<usize>,
}

impl<L: Latents> Pndm<L> {
    /// Builds the scheduler from a config (defaults: linear β 0.0001–0.02, ε-prediction, leading
    /// spacing, `skip_prk_steps` false, `set_alpha_to_one` false).
    pub fn new(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let betas = config.beta_config(CLASS, (0.0001, 0.02, BetaSchedule::Linear))?;
        let schedule = NoiseSchedule::new(&betas)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            schedule.alphas_cumprod()[0]
        };
        Ok(Self {
            schedule,
            final_alpha_cumprod,
            prediction: config.prediction(CLASS, EPS_V_PREDICTIONS)?,
            spacing: config.spacing(CLASS, TimestepSpacing::Leading)?,
            steps_offset: config.steps_offset.unwrap_or(0),
            skip_prk_steps: config.skip_prk_steps.unwrap_or(false),
            num_inference_steps: None,
            prk_len: 0,
            timesteps: Vec::new(),
            timesteps_f32: Vec::new(),
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            cur_model_output: None,
            last_step: None,
        })
    }

    /// The training noise schedule.
    pub fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// ⌊T/n⌋, the nominal distance between two timesteps.
    fn step_ratio(&self) -> i64 {
        let n = self.num_inference_steps.unwrap_or(1).max(1);
        (self.schedule.num_train_timesteps() / n) as i64
    }

    /// The transfer φ from `t` to `prev_t` (DDIM's deterministic update in PNDM's form).
    fn prev_sample(&self, sample: &L, t: i64, prev_t: i64, eps: &L) -> Result<L, SchedulerError> {
        let alpha = self.schedule.alpha_at(t)?;
        let alpha_prev = if prev_t >= 0 {
            self.schedule.alpha_at(prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let (beta, beta_prev) = (1.0 - alpha, 1.0 - alpha_prev);
        let eps = match self.prediction {
            PredictionType::VPrediction => L::axpby(alpha.sqrt(), eps, beta.sqrt(), sample),
            _ => eps.clone(),
        };
        let sample_coeff = (alpha_prev / alpha).sqrt();
        let denom = alpha * beta_prev.sqrt() + (alpha * beta * alpha_prev).sqrt();
        Ok(L::axpby(
            sample_coeff,
            sample,
            -((alpha_prev - alpha) / denom),
            &eps,
        ))
    }

    /// One Runge–Kutta stage (counter < 12 without `skip_prk_steps`).
    fn step_prk(&mut self, model_output: &L, t: i64, sample: &L) -> Result<L, SchedulerError> {
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            self.step_ratio() / 2
        };
        let prev_t = t - diff_to_prev;
        let stage_t = self.timesteps[self.counter / 4 * 4];
        let eps = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(model_output.scale(1.0 / 6.0));
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            1 | 2 => {
                let acc = match self.cur_model_output.take() {
                    Some(acc) => L::axpby(1.0, &acc, 1.0 / 3.0, model_output),
                    None => model_output.scale(1.0 / 3.0),
                };
                self.cur_model_output = Some(acc);
                model_output.clone()
            }
            _ => match self.cur_model_output.take() {
                Some(acc) => L::axpby(1.0, &acc, 1.0 / 6.0, model_output),
                None => model_output.scale(1.0 / 6.0),
            },
        };
        let start = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let prev = self.prev_sample(&start, stage_t, prev_t, &eps)?;
        self.counter += 1;
        Ok(prev)
    }

    /// One linear multistep (PLMS) step.
    fn step_plms(&mut self, model_output: &L, t: i64, sample: &L) -> Result<L, SchedulerError> {
        let ratio = self.step_ratio();
        let (mut t, mut prev_t) = (t, t - ratio);
        if self.counter == 1 {
            // The repeated timestep: redo the first step from its start with averaged ε.
            prev_t = t;
            t += ratio;
        } else {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.clone());
        }
        let mut start = sample.clone();
        let k = self.ets.len();
        let e = |back: usize| &self.ets[k - 1 - back];
        let eps = match (k, self.counter) {
            (1, 0) => {
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            (1, 1) => {
                if let Some(first) = self.cur_sample.take() {
                    start = first;
                }
                model_output.add(e(0)).scale(0.5)
            }
            (2, _) => L::axpby(3.0, e(0), -1.0, e(1)).scale(0.5),
            (3, _) => {
                let x = L::axpby(23.0, e(0), -16.0, e(1));
                L::axpby(1.0, &x, 5.0, e(2)).scale(1.0 / 12.0)
            }
            (4.., _) => {
                let x = L::axpby(55.0, e(0), -59.0, e(1));
                let x = L::axpby(1.0, &x, 37.0, e(2));
                L::axpby(1.0, &x, -9.0, e(3)).scale(1.0 / 24.0)
            }
            _ => model_output.clone(),
        };
        let prev = self.prev_sample(&start, t, prev_t, &eps)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl<L: Latents> DiffusionScheduler<L> for Pndm<L> {
    fn class_name(&self) -> &'static str {
        CLASS
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError> {
        let n = num_inference_steps;
        check_steps(CLASS, n)?;
        let train = self.schedule.num_train_timesteps();
        // Ascending base timesteps.
        let base: Vec<f64> = match self.spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (train - 1) as f64, n, true)
                .into_iter()
                .map(np_round)
                .collect(),
            TimestepSpacing::Leading => (0..n)
                .map(|i| (i * (train / n) + self.steps_offset) as f64)
                .collect(),
            TimestepSpacing::Trailing => np_arange(train as f64, 0.0, -(train as f64 / n as f64))
                .into_iter()
                .rev()
                .map(|v| np_round(v) - 1.0)
                .collect(),
        };
        let len = base.len();
        let (prk, plms): (Vec<f64>, Vec<f64>) = if self.skip_prk_steps {
            // t₀ … t_{n−2}, t_{n−2}, t_{n−1}, reversed: the second timestep is repeated.
            let mut plms: Vec<f64> = base[..len - 1].to_vec();
            if len >= 2 {
                plms.push(base[len - 2]);
            }
            plms.push(base[len - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if len < 4 {
                return Err(SchedulerError::InvalidSteps {
                    class: CLASS,
                    steps: n,
                    reason: "the PRK warm-up (skip_prk_steps = false) needs at least 4 steps"
                        .into(),
                });
            }
            // The top four levels, each followed by its half step: a, a+h, b, b+h, …, d.
            let half = (train / n / 2) as f64;
            let mut stages: Vec<f64> = base[len - 4..]
                .iter()
                .flat_map(|&t| [t, t + half])
                .collect();
            stages.pop();
            let doubled: Vec<f64> = stages.iter().flat_map(|&t| [t, t]).collect();
            let mut prk = doubled[1..doubled.len() - 1].to_vec();
            prk.reverse();
            let plms: Vec<f64> = base[..len - 3].iter().rev().copied().collect();
            (prk, plms)
        };
        self.prk_len = prk.len();
        let all: Vec<f64> = prk.into_iter().chain(plms).collect();
        self.timesteps = checked_timesteps(CLASS, &all, &self.schedule, n)?;
        self.timesteps_f32 = self.timesteps.iter().map(|&t| t as f32).collect();
        self.num_inference_steps = Some(n);
        self.counter = 0;
        self.ets.clear();
        self.cur_sample = None;
        self.cur_model_output = None;
        self.last_step = None;
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
        _noise: &mut dyn FnMut() -> L,
    ) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        if let Some(last) = self.last_step
            && step_index != last + 1
        {
            return Err(SchedulerError::StepOutOfOrder {
                class: CLASS,
                expected: last + 1,
                got: step_index,
            });
        }
        let t = self.timesteps[step_index];
        let prev = if !self.skip_prk_steps && self.counter < self.prk_len {
            self.step_prk(model_output, t, sample)?
        } else {
            self.step_plms(model_output, t, sample)?
        };
        self.last_step = Some(step_index);
        Ok(prev)
    }

    fn noise_draws(&self, _step_index: usize) -> usize {
        0
    }

    fn add_noise(&self, original: &L, noise: &L, step_index: usize) -> Result<L, SchedulerError> {
        check_index(step_index, self.timesteps.len())?;
        add_noise_at(&self.schedule, self.timesteps[step_index], original, noise)
    }
}
