//! `scheduler/scheduler_config.json`: the serde model, and its resolution into each scheduler's
//! settings with diffusers' per-class defaults.
//!
//! Every field is optional because diffusers' defaults depend on the class that reads the
//! config: a missing `clip_sample` means `true` for DDIM but `false` for LCM, a missing
//! `timestep_spacing` means "linspace" for Euler but "leading" for DDIM. Keeping "absent" distinct
//! from "present" is also exactly what `XScheduler.from_config(pipe.scheduler.config, **kw)`
//! needs: keys that the repository's file sets carry over to the new class, keys it leaves out
//! take the new class's defaults (diffusers tracks them as `_use_default_values`). JSON `null`
//! counts as absent. Unknown keys are ignored.

use serde::{Deserialize, Deserializer, Serialize};

use super::noise_schedule::BetaConfig;
use super::{BetaSchedule, FinalSigmas, PredictionType, SchedulerError, TimestepSpacing};

/// A diffusers scheduler config (`scheduler_config.json`), every key optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// The diffusers class, e.g. "EulerDiscreteScheduler".
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    pub num_train_timesteps: Option<usize>,
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_start: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub beta_end: Option<f64>,
    /// "linear", "scaled_linear" or "squaredcos_cap_v2".
    pub beta_schedule: Option<String>,
    pub trained_betas: Option<Vec<f64>>,
    /// "epsilon", "v_prediction" or "sample".
    pub prediction_type: Option<String>,
    /// "leading", "trailing" or "linspace".
    pub timestep_spacing: Option<String>,
    pub steps_offset: Option<usize>,
    pub rescale_betas_zero_snr: Option<bool>,
    // Euler / DPM-Solver σ schedules.
    pub interpolation_type: Option<String>,
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub sigma_min: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub sigma_max: Option<f64>,
    /// "discrete" or "continuous" (Euler).
    pub timestep_type: Option<String>,
    /// "zero" or "sigma_min".
    pub final_sigmas_type: Option<String>,
    // DDIM / PNDM / LCM.
    pub set_alpha_to_one: Option<bool>,
    pub clip_sample: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub clip_sample_range: Option<f64>,
    pub thresholding: Option<bool>,
    pub skip_prk_steps: Option<bool>,
    // DPM-Solver.
    /// "dpmsolver++" (also "deis", which diffusers maps to it).
    pub algorithm_type: Option<String>,
    pub solver_order: Option<usize>,
    /// "midpoint" or "heun".
    pub solver_type: Option<String>,
    pub lower_order_final: Option<bool>,
    pub euler_at_final: Option<bool>,
    #[serde(deserialize_with = "lenient_f64")]
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    // LCM.
    pub original_inference_steps: Option<usize>,
    #[serde(deserialize_with = "lenient_f64")]
    pub timestep_scaling: Option<f64>,
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json`. Python's `json` writes `-Infinity`, `Infinity` and `NaN`
    /// (diffusers saves `"lambda_min_clipped": -Infinity`), which strict JSON forbids; they are
    /// accepted here.
    pub fn from_json_str(text: &str) -> Result<Self, SchedulerError> {
        serde_json::from_str(&quote_non_finite(text))
            .map_err(|e| SchedulerError::InvalidConfig(format!("scheduler_config.json: {e}")))
    }

    /// The same config with `_class_name` replaced.
    pub fn with_class(&self, class_name: &str) -> Self {
        Self {
            class_name: Some(class_name.to_owned()),
            ..self.clone()
        }
    }
}

/// Turns the bare tokens `-Infinity`, `Infinity` and `NaN` (outside strings) into strings, which
/// [`lenient_f64`] reads back as numbers.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// An optional float that may also be written as "Infinity", "-Infinity" or "NaN".
fn lenient_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }
    match Option::<Repr>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Repr::Number(x)) => Ok(Some(x)),
        Some(Repr::Text(s)) => match s.as_str() {
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            "NaN" => Ok(Some(f64::NAN)),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, got the string {other:?}"
            ))),
        },
    }
}

/// Resolves a string field against its allowed values; absent → `default`.
pub(crate) fn choice<T: Copy>(
    class: &'static str,
    field: &'static str,
    value: Option<&str>,
    default: T,
    allowed: &[(&str, T)],
) -> Result<T, SchedulerError> {
    let Some(value) = value else {
        return Ok(default);
    };
    allowed
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| SchedulerError::UnsupportedConfig {
            class,
            field,
            value: value.to_owned(),
            supported: allowed
                .iter()
                .map(|(name, _)| format!("\"{name}\""))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Refuses a boolean option this crate does not implement when it is set to `true`.
pub(crate) fn refuse_flag(
    class: &'static str,
    field: &'static str,
    value: Option<bool>,
) -> Result<(), SchedulerError> {
    if value == Some(true) {
        return Err(SchedulerError::UnsupportedConfig {
            class,
            field,
            value: "true".into(),
            supported: "false".into(),
        });
    }
    Ok(())
}

impl SchedulerConfig {
    /// The beta table settings, with the class's defaults for absent keys
    /// (`defaults` = (beta_start, beta_end, beta_schedule)).
    pub(crate) fn beta_config(
        &self,
        class: &'static str,
        defaults: (f64, f64, BetaSchedule),
    ) -> Result<BetaConfig, SchedulerError> {
        let beta_schedule = choice(
            class,
            "beta_schedule",
            self.beta_schedule.as_deref(),
            defaults.2,
            &[
                ("linear", BetaSchedule::Linear),
                ("scaled_linear", BetaSchedule::ScaledLinear),
                ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
            ],
        )?;
        Ok(BetaConfig {
            num_train_timesteps: self.num_train_timesteps.unwrap_or(1000),
            beta_start: self.beta_start.unwrap_or(defaults.0),
            beta_end: self.beta_end.unwrap_or(defaults.1),
            beta_schedule,
            trained_betas: self.trained_betas.clone(),
            rescale_betas_zero_snr: self.rescale_betas_zero_snr.unwrap_or(false),
        })
    }

    /// `prediction_type` among `allowed` (all three by default).
    pub(crate) fn prediction(
        &self,
        class: &'static str,
        allowed: &[(&str, PredictionType)],
    ) -> Result<PredictionType, SchedulerError> {
        choice(
            class,
            "prediction_type",
            self.prediction_type.as_deref(),
            PredictionType::Epsilon,
            allowed,
        )
    }

    pub(crate) fn spacing(
        &self,
        class: &'static str,
        default: TimestepSpacing,
    ) -> Result<TimestepSpacing, SchedulerError> {
        choice(
            class,
            "timestep_spacing",
            self.timestep_spacing.as_deref(),
            default,
            &[
                ("linspace", TimestepSpacing::Linspace),
                ("leading", TimestepSpacing::Leading),
                ("trailing", TimestepSpacing::Trailing),
            ],
        )
    }

    pub(crate) fn final_sigmas(&self, class: &'static str) -> Result<FinalSigmas, SchedulerError> {
        choice(
            class,
            "final_sigmas_type",
            self.final_sigmas_type.as_deref(),
            FinalSigmas::Zero,
            &[
                ("zero", FinalSigmas::Zero),
                ("sigma_min", FinalSigmas::SigmaMin),
            ],
        )
    }
}

/// All three prediction types.
pub(crate) const ALL_PREDICTIONS: &[(&str, PredictionType)] = &[
    ("epsilon", PredictionType::Epsilon),
    ("v_prediction", PredictionType::VPrediction),
    ("sample", PredictionType::Sample),
];

/// ε and v only (Euler ancestral, PNDM).
pub(crate) const EPS_V_PREDICTIONS: &[(&str, PredictionType)] = &[
    ("epsilon", PredictionType::Epsilon),
    ("v_prediction", PredictionType::VPrediction),
];
