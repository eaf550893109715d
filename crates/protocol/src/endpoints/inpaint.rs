//! `fal-ai/inpaint`: input, defaults, validation and output, field for field as fal publishes them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Image;
use crate::error::ValidationErrorBody;
use crate::validate::Validator;

/// The endpoint id.
pub const ENDPOINT_ID: &str = "fal-ai/inpaint";

pub const DEFAULT_NUM_INFERENCE_STEPS: u32 = 30;
pub const DEFAULT_GUIDANCE_SCALE: f64 = 7.5;
/// Bounds on the numbers (fal's schema page states none; these are the ones of fal's richer
/// `fal-ai/lora/*` endpoints, which share these fields).
pub const MAX_NUM_INFERENCE_STEPS: u32 = 150;
pub const MAX_GUIDANCE_SCALE: f64 = 20.0;

/// A validated `fal-ai/inpaint` input, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InpaintInput {
    /// URL or Hugging Face id of the base model (diffusers layout).
    pub model_name: String,
    pub prompt: String,
    /// `""` by default, which is encoded like any prompt.
    pub negative_prompt: String,
    /// http(s) URL or `data:` URI.
    pub image_url: String,
    /// Black is preserved, white is inpainted.
    pub mask_url: String,
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    /// `None`: a random seed is drawn and returned in the output.
    pub seed: Option<u64>,
}

impl InpaintInput {
    /// Validates a request body. Fields outside the schema are ignored, as fal does.
    pub fn from_json(input: &Value) -> Result<Self, ValidationErrorBody> {
        Self::from_json_with(input, false)
    }

    /// [`InpaintInput::from_json`], taking `blob:` URLs for the images when `blob_urls` (a call
    /// run in the browser that made them).
    pub fn from_json_with(input: &Value, blob_urls: bool) -> Result<Self, ValidationErrorBody> {
        let mut v = Validator::new(input).with_blob_urls(blob_urls);
        let model_name = v.non_empty_string("model_name", true);
        let prompt = v.string("prompt", true);
        let negative_prompt = v.string("negative_prompt", false).unwrap_or_default();
        let image_url = v.file_url("image_url", true);
        let mask_url = v.file_url("mask_url", true);
        let steps = v.integer(
            "num_inference_steps",
            false,
            Some(1),
            Some(MAX_NUM_INFERENCE_STEPS.into()),
        );
        let guidance = v.number("guidance_scale", false, Some(0.0), Some(MAX_GUIDANCE_SCALE));
        let seed = v.integer("seed", true, Some(0), Some(u64::MAX.into()));
        v.finish()?;
        // `finish` succeeded, so every required value is present.
        Ok(InpaintInput {
            model_name: model_name.unwrap_or_default(),
            prompt: prompt.unwrap_or_default(),
            negative_prompt,
            image_url: image_url.unwrap_or_default(),
            mask_url: mask_url.unwrap_or_default(),
            num_inference_steps: steps.map_or(DEFAULT_NUM_INFERENCE_STEPS, |s| s as u32),
            guidance_scale: guidance.unwrap_or(DEFAULT_GUIDANCE_SCALE),
            seed: seed.map(|s| s as u64),
        })
    }
}

/// The output of `fal-ai/inpaint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InpaintOutput {
    pub image: Image,
    /// The seed passed in, or the random one that was used.
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fal_example() -> Value {
        json!({
            "model_name": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
            "prompt": "a photo of a cat",
            "negative_prompt": "cartoon, painting, illustration, (worst quality, low quality, normal quality:2)",
            "image_url": "https://raw.githubusercontent.com/CompVis/latent-diffusion/main/data/inpainting_examples/overture-creations-5sI6fQgYIuo.png",
            "mask_url": "https://raw.githubusercontent.com/CompVis/latent-diffusion/main/data/inpainting_examples/overture-creations-5sI6fQgYIuo_mask.png",
            "num_inference_steps": 30,
            "guidance_scale": 7.5,
            "seed": 1234
        })
    }

    #[test]
    fn the_example_of_fals_page_is_valid() {
        let input = InpaintInput::from_json(&fal_example()).unwrap();
        assert_eq!(input.seed, Some(1234));
        assert_eq!(input.num_inference_steps, 30);
        assert!(input.negative_prompt.contains("normal quality:2"));
    }

    #[test]
    fn defaults_are_fals() {
        let input = InpaintInput::from_json(&json!({
            "model_name": "m", "prompt": "p", "image_url": "data:image/png;base64,AA", "mask_url": "https://x.test/m.png"
        }))
        .unwrap();
        assert_eq!(input.negative_prompt, "");
        assert_eq!(input.num_inference_steps, DEFAULT_NUM_INFERENCE_STEPS);
        assert_eq!(input.guidance_scale, DEFAULT_GUIDANCE_SCALE);
        assert_eq!(input.seed, None);
    }

    #[test]
    fn every_problem_is_reported_at_once_in_fals_422_shape() {
        let err = InpaintInput::from_json(&json!({
            "prompt": 3, "image_url": "nope", "num_inference_steps": 0, "guidance_scale": "high", "seed": -1
        }))
        .unwrap_err();
        let got: Vec<(String, String)> = err
            .detail
            .iter()
            .map(|e| {
                (
                    serde_json::to_value(&e.loc).unwrap()[1]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    e.kind.clone(),
                )
            })
            .collect();
        let want = [
            ("model_name", "value_error.missing"),
            ("prompt", "type_error.str"),
            ("image_url", "value_error.url.scheme"),
            ("mask_url", "value_error.missing"),
            ("num_inference_steps", "value_error.number.not_ge"),
            ("guidance_scale", "type_error.float"),
            ("seed", "value_error.number.not_ge"),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
        let body = serde_json::to_value(&err).unwrap();
        assert_eq!(
            body["detail"][0],
            json!({"loc":["body","model_name"],"msg":"field required","type":"value_error.missing"})
        );
    }

    #[test]
    fn a_null_seed_means_random() {
        let mut v = fal_example();
        v["seed"] = Value::Null;
        assert_eq!(InpaintInput::from_json(&v).unwrap().seed, None);
    }

    #[test]
    fn output_matches_the_documented_example() {
        let out: InpaintOutput = serde_json::from_value(json!({
            "image": {"url": "https://x/z9RV14K95DvU.png", "content_type": "image/png", "file_name": "z9RV14K95DvU.png",
                      "file_size": 4404019, "width": 1024, "height": 1024},
            "seed": 1234
        }))
        .unwrap();
        assert_eq!(out.image.width, Some(1024));
        assert_eq!(out.seed, 1234);
    }
}
