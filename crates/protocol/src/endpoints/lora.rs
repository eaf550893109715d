//! `fal-ai/lora/image-to-image` and `fal-ai/lora/inpaint`: the subset of fal's richer schema this
//! project serves. Fields it does not implement are refused with a 422 naming them when they ask
//! for something (a LoRA, a ControlNet, the safety checker, …); their empty or off values, which
//! clients often send as defaults, are accepted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Image;
use super::inpaint::{DEFAULT_GUIDANCE_SCALE, DEFAULT_NUM_INFERENCE_STEPS, MAX_GUIDANCE_SCALE};
use crate::error::ValidationErrorBody;
use crate::validate::Validator;

pub const IMAGE_TO_IMAGE_ID: &str = "fal-ai/lora/image-to-image";
pub const INPAINT_ID: &str = "fal-ai/lora/inpaint";

pub const DEFAULT_NOISE_STRENGTH: f64 = 0.5;
pub const MAX_NUM_INFERENCE_STEPS: u32 = 150;
pub const MAX_NUM_IMAGES: u32 = 8;
pub const MAX_CLIP_SKIP: u32 = 2;

/// fal's scheduler names (the engine refuses, with a 422, the ones it does not implement).
pub const SCHEDULERS: [&str; 11] = [
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "Euler",
    "Euler A",
    "Euler (trailing timesteps)",
    "LCM",
    "LCM (trailing timesteps)",
    "DDIM",
    "TCD",
];

/// Fields of fal's schema not implemented here.
pub const UNSUPPORTED: [&str; 22] = [
    "loras",
    "embeddings",
    "controlnets",
    "controlnet_guess_mode",
    "ip_adapter",
    "ic_light_model_url",
    "ic_light_model_background_image_url",
    "ic_light_image_url",
    "tile_height",
    "tile_width",
    "tile_stride_height",
    "tile_stride_width",
    "timesteps",
    "sigmas",
    "debug_latents",
    "debug_per_pass_latents",
    "enable_safety_checker",
    "unet_name",
    "image_encoder_path",
    "image_encoder_subfolder",
    "image_encoder_weight_name",
    "rescale_betas_snr_zero",
];

/// A validated input, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraInput {
    pub model_name: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub image_url: String,
    /// Only on `fal-ai/lora/inpaint`, and optional there (without it: image-to-image).
    pub mask_url: Option<String>,
    pub noise_strength: f64,
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    pub seed: Option<u64>,
    pub num_images: u32,
    pub scheduler: Option<String>,
    pub prompt_weighting: bool,
    pub clip_skip: u32,
    /// `"png"` or `"jpeg"`.
    pub image_format: String,
    /// `"epsilon"` or `"v_prediction"`.
    pub prediction_type: String,
    pub eta: f64,
    pub variant: Option<String>,
}

/// Whether a value asks for nothing: null, false, 0, "", [], {} or `{"array": []}` (fal's
/// timesteps/sigmas shape).
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => {
            o.is_empty()
                || o.get("array")
                    .is_some_and(|a| a.as_array().is_some_and(Vec::is_empty))
        }
        Value::Number(_) => false,
    }
}

impl LoraInput {
    /// Validates a request body for `endpoint` (one of the two ids).
    pub fn from_json(input: &Value, inpaint: bool) -> Result<Self, ValidationErrorBody> {
        Self::from_json_with(input, inpaint, false)
    }

    /// [`LoraInput::from_json`], taking `blob:` URLs for the images when `blob_urls` (a call run
    /// in the browser that made them).
    pub fn from_json_with(
        input: &Value,
        inpaint: bool,
        blob_urls: bool,
    ) -> Result<Self, ValidationErrorBody> {
        let mut v = Validator::new(input).with_blob_urls(blob_urls);
        let model_name = v.non_empty_string("model_name", true);
        let prompt = v.string("prompt", true);
        let negative_prompt = v.string("negative_prompt", false).unwrap_or_default();
        let image_url = v.file_url("image_url", true);
        let mask_url = if inpaint {
            v.file_url("mask_url", false)
        } else {
            None
        };
        let noise_strength = v.number("noise_strength", false, Some(0.0), Some(1.0));
        let steps = v.integer(
            "num_inference_steps",
            false,
            Some(1),
            Some(MAX_NUM_INFERENCE_STEPS.into()),
        );
        let guidance = v.number("guidance_scale", false, Some(0.0), Some(MAX_GUIDANCE_SCALE));
        let seed = v.integer("seed", true, Some(0), Some(u64::MAX.into()));
        let num_images = v.integer("num_images", false, Some(1), Some(MAX_NUM_IMAGES.into()));
        let scheduler = v.one_of("scheduler", &SCHEDULERS);
        let prompt_weighting = v.boolean("prompt_weighting").unwrap_or(false);
        let clip_skip = v.integer("clip_skip", false, Some(0), Some(MAX_CLIP_SKIP.into()));
        let image_format = v.one_of("image_format", &["jpeg", "png"]);
        let prediction_type = v.one_of("prediction_type", &["epsilon", "v_prediction"]);
        let eta = v.number("eta", false, Some(0.0), Some(1.0));
        let variant = v.string("variant", false).filter(|s| !s.is_empty());
        for f in UNSUPPORTED {
            if v.raw(f).is_some_and(|x| !is_off(x)) {
                v.error(
                    f,
                    format!("'{f}' is not supported by this server (only its empty or off value is accepted)"),
                    "value_error.unsupported",
                );
            }
        }
        v.finish()?;
        Ok(LoraInput {
            model_name: model_name.unwrap_or_default(),
            prompt: prompt.unwrap_or_default(),
            negative_prompt,
            image_url: image_url.unwrap_or_default(),
            mask_url,
            noise_strength: noise_strength.unwrap_or(DEFAULT_NOISE_STRENGTH),
            num_inference_steps: steps.map_or(DEFAULT_NUM_INFERENCE_STEPS, |s| s as u32),
            guidance_scale: guidance.unwrap_or(DEFAULT_GUIDANCE_SCALE),
            seed: seed.map(|s| s as u64),
            num_images: num_images.map_or(1, |n| n as u32),
            scheduler,
            prompt_weighting,
            clip_skip: clip_skip.map_or(0, |c| c as u32),
            image_format: image_format.unwrap_or_else(|| "png".into()),
            prediction_type: prediction_type.unwrap_or_else(|| "epsilon".into()),
            eta: eta.unwrap_or(0.0),
            variant,
        })
    }
}

/// The output of both endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraOutput {
    pub images: Vec<Image>,
    pub seed: u64,
    /// No safety checker runs here: all `false`.
    pub has_nsfw_concepts: Vec<bool>,
    pub debug_latents: Option<Value>,
    pub debug_per_pass_latents: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_name": "m", "prompt": "p", "image_url": "https://x.test/a.png"})
    }

    #[test]
    fn defaults_are_fals() {
        let i = LoraInput::from_json(&base(), false).unwrap();
        assert_eq!(i.noise_strength, 0.5);
        assert_eq!(i.num_inference_steps, 30);
        assert_eq!(i.guidance_scale, 7.5);
        assert_eq!((i.num_images, i.clip_skip), (1, 0));
        assert_eq!(
            (i.image_format.as_str(), i.prediction_type.as_str()),
            ("png", "epsilon")
        );
        assert_eq!(i.mask_url, None);
        assert!(!i.prompt_weighting);
    }

    #[test]
    fn off_values_of_unsupported_fields_pass_and_real_requests_are_refused_by_name() {
        let mut ok = base();
        ok["loras"] = json!([]);
        ok["enable_safety_checker"] = json!(false);
        ok["timesteps"] = json!({"method": "default", "array": []});
        ok["debug_latents"] = json!(false);
        assert!(LoraInput::from_json(&ok, true).is_ok());

        let mut bad = base();
        bad["loras"] = json!([{"path": "x.safetensors", "scale": 1.0}]);
        bad["enable_safety_checker"] = json!(true);
        bad["scheduler"] = json!("Heun");
        let err = LoraInput::from_json(&bad, true).unwrap_err();
        let fields: Vec<String> = err
            .detail
            .iter()
            .map(|d| {
                serde_json::to_value(&d.loc).unwrap()[1]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(fields, ["scheduler", "loras", "enable_safety_checker"]);
        assert!(err.detail[1].msg.contains("'loras' is not supported"));
    }
}
