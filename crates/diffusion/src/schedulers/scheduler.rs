//! [`Scheduler`]: the supported schedulers behind one type, built from a repository's config or
//! from one of fal's scheduler names.

use std::fmt;

use super::{
    Ddim, DiffusionScheduler, DpmSolverMultistep, EulerAncestralDiscrete, EulerDiscrete, Latents,
    Lcm, Pndm, SchedulerConfig, SchedulerError,
};

/// The diffusers classes [`Scheduler::from_config`] accepts.
pub const SUPPORTED_CLASSES: &[&str] = &[
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "PNDMScheduler",
    "LCMScheduler",
];

/// fal's `scheduler` values that [`Scheduler::from_fal_name`] accepts. fal also lists
/// "DPM++ 2M SDE", "DPM++ 2M SDE Karras" and "TCD", which are refused.
pub const FAL_SCHEDULER_NAMES: &[&str] = &[
    "Euler",
    "Euler (trailing timesteps)",
    "Euler A",
    "DDIM",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "LCM",
    "LCM (trailing timesteps)",
];

/// One of the supported schedulers. Implements [`DiffusionScheduler`] by delegation.
#[derive(Clone)]
pub enum Scheduler<L: Latents> {
    Euler(EulerDiscrete),
    EulerAncestral(EulerAncestralDiscrete),
    Ddim(Ddim),
    DpmSolverMultistep(DpmSolverMultistep<L>),
    Pndm(Pndm<L>),
    Lcm(Lcm),
}

impl<L: Latents> Scheduler<L> {
    /// The scheduler named by the config's `_class_name`, with diffusers' defaults for the keys
    /// the config leaves out.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        Ok(match config.class_name.as_deref() {
            Some("EulerDiscreteScheduler") => Self::Euler(EulerDiscrete::new(config)?),
            Some("EulerAncestralDiscreteScheduler") => {
                Self::EulerAncestral(EulerAncestralDiscrete::new(config)?)
            }
            Some("DDIMScheduler") => Self::Ddim(Ddim::new(config)?),
            Some("DPMSolverMultistepScheduler") => {
                Self::DpmSolverMultistep(DpmSolverMultistep::new(config)?)
            }
            Some("PNDMScheduler") => Self::Pndm(Pndm::new(config)?),
            Some("LCMScheduler") => Self::Lcm(Lcm::new(config)?),
            Some(other) => return Err(SchedulerError::UnsupportedClass(other.to_owned())),
            None => {
                return Err(SchedulerError::UnsupportedClass(
                    "(no _class_name in the config)".to_owned(),
                ));
            }
        })
    }

    /// The scheduler fal's `scheduler` field names, configured from the model's own scheduler
    /// config as diffusers' `XScheduler.from_config(pipe.scheduler.config, **overrides)` does:
    /// keys present in `base` carry over, absent ones take the new class's defaults. See
    /// [`fal_config`] for the class and overrides of each name.
    pub fn from_fal_name(name: &str, base: &SchedulerConfig) -> Result<Self, SchedulerError> {
        Self::from_config(&fal_config(name, base)?)
    }

    /// The DDIM `eta` (η) the pipelines pass to `step`: 0 is deterministic DDIM, 1 is DDPM-like
    /// ancestral sampling. diffusers only passes it to schedulers whose `step` accepts it, so it
    /// is ignored by the others.
    pub fn set_eta(&mut self, eta: f32) {
        if let Self::Ddim(ddim) = self {
            ddim.set_eta(eta);
        }
    }
}

/// The config fal's scheduler `name` runs with on a model whose scheduler config is `base`:
///
/// | name | class | overrides |
/// |---|---|---|
/// | "Euler" | EulerDiscreteScheduler | — |
/// | "Euler (trailing timesteps)" | EulerDiscreteScheduler | timestep_spacing = "trailing" |
/// | "Euler A" | EulerAncestralDiscreteScheduler | — |
/// | "DDIM" | DDIMScheduler | — |
/// | "DPM++ 2M" | DPMSolverMultistepScheduler | algorithm_type = "dpmsolver++", solver_order = 2, use_karras_sigmas = false |
/// | "DPM++ 2M Karras" | DPMSolverMultistepScheduler | algorithm_type = "dpmsolver++", solver_order = 2, use_karras_sigmas = true |
/// | "LCM" | LCMScheduler | — |
/// | "LCM (trailing timesteps)" | LCMScheduler | timestep_spacing = "trailing" (which diffusers' LCM ignores) |
///
/// Note that DDIM's own defaults apply to keys an Euler config lacks: a base without
/// `clip_sample` gets DDIM's `clip_sample = true` (x₀ clamped to ±1), as in diffusers.
pub fn fal_config(name: &str, base: &SchedulerConfig) -> Result<SchedulerConfig, SchedulerError> {
    let dpm = |karras: bool| {
        let mut c = base.with_class("DPMSolverMultistepScheduler");
        c.algorithm_type = Some("dpmsolver++".into());
        c.solver_order = Some(2);
        c.use_karras_sigmas = Some(karras);
        c
    };
    let trailing = |class: &str| {
        let mut c = base.with_class(class);
        c.timestep_spacing = Some("trailing".into());
        c
    };
    Ok(match name {
        "Euler" => base.with_class("EulerDiscreteScheduler"),
        "Euler (trailing timesteps)" => trailing("EulerDiscreteScheduler"),
        "Euler A" => base.with_class("EulerAncestralDiscreteScheduler"),
        "DDIM" => base.with_class("DDIMScheduler"),
        "DPM++ 2M" => dpm(false),
        "DPM++ 2M Karras" => dpm(true),
        "LCM" => base.with_class("LCMScheduler"),
        "LCM (trailing timesteps)" => trailing("LCMScheduler"),
        other => return Err(SchedulerError::UnsupportedName(other.to_owned())),
    })
}

/// Runs `$body` with `$s` bound to the concrete scheduler, calling trait methods for `L`.
macro_rules! each {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Scheduler::Euler($s) => $body,
            Scheduler::EulerAncestral($s) => $body,
            Scheduler::Ddim($s) => $body,
            Scheduler::DpmSolverMultistep($s) => $body,
            Scheduler::Pndm($s) => $body,
            Scheduler::Lcm($s) => $body,
        }
    };
}

impl<L: Latents> DiffusionScheduler<L> for Scheduler<L> {
    fn class_name(&self) -> &'static str {
        each!(self, s => DiffusionScheduler::<L>::class_name(s))
    }

    fn order(&self) -> usize {
        each!(self, s => DiffusionScheduler::<L>::order(s))
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<(), SchedulerError> {
        each!(self, s => DiffusionScheduler::<L>::set_timesteps(s, num_inference_steps))
    }

    fn num_inference_steps(&self) -> Option<usize> {
        each!(self, s => DiffusionScheduler::<L>::num_inference_steps(s))
    }

    fn timesteps(&self) -> &[f32] {
        each!(self, s => DiffusionScheduler::<L>::timesteps(s))
    }

    fn sigmas(&self) -> Option<&[f32]> {
        each!(self, s => DiffusionScheduler::<L>::sigmas(s))
    }

    fn init_noise_sigma(&self) -> f32 {
        each!(self, s => DiffusionScheduler::<L>::init_noise_sigma(s))
    }

    fn scale_model_input(&self, sample: &L, step_index: usize) -> Result<L, SchedulerError> {
        each!(self, s => s.scale_model_input(sample, step_index))
    }

    fn step(
        &mut self,
        model_output: &L,
        step_index: usize,
        sample: &L,
        noise: &mut dyn FnMut() -> L,
    ) -> Result<L, SchedulerError> {
        each!(self, s => s.step(model_output, step_index, sample, noise))
    }

    fn noise_draws(&self, step_index: usize) -> usize {
        each!(self, s => DiffusionScheduler::<L>::noise_draws(s, step_index))
    }

    fn add_noise(&self, original: &L, noise: &L, step_index: usize) -> Result<L, SchedulerError> {
        each!(self, s => s.add_noise(original, noise, step_index))
    }
}

impl<L: Latents> fmt::Debug for Scheduler<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("class", &self.class_name())
            .field("timesteps", &self.timesteps())
            .finish_non_exhaustive()
    }
}
