//! A call of one of the endpoints: from fal's input to a generation [`Request`], and from the
//! generated images and a [`PipelineError`] back to fal's output and error bodies.

use fresco_protocol::endpoints::Image;
use fresco_protocol::endpoints::inpaint::{self, InpaintInput, InpaintOutput};
use fresco_protocol::endpoints::lora::{self, LoraInput, LoraOutput};
pub use fresco_protocol::failure::Failure;
use serde_json::Value;

use crate::pipeline::image::{OutputFormat, encode};
use crate::pipeline::{Generated, PipelineError, Request};
use crate::rng::random_seed;
use crate::weights::WeightsError;

/// Every endpoint id [`Call::parse`] accepts.
pub const ENDPOINT_IDS: [&str; 3] = [
    inpaint::ENDPOINT_ID,
    lora::IMAGE_TO_IMAGE_ID,
    lora::INPAINT_ID,
];

/// A validated call: what to load, which files to fetch, what to generate, how to answer.
#[derive(Debug, Clone)]
pub struct Call {
    /// One of [`ENDPOINT_IDS`].
    pub endpoint_id: &'static str,
    pub model_name: String,
    /// A weight variant (`fp16`), `fal-ai/lora/*` only.
    pub variant: Option<String>,
    pub image_url: String,
    /// Present for the inpainting endpoints.
    pub mask_url: Option<String>,
    /// With the seed drawn when the input gave none (fal reports the seed used).
    pub request: Request,
    pub format: OutputFormat,
}

impl Call {
    /// Validates `input` for `endpoint_id` (fal's schema and its 422s, `crates/protocol`) and
    /// maps it onto a [`Request`]; a missing seed is drawn here.
    pub fn parse(endpoint_id: &str, input: &Value) -> Result<Call, Failure> {
        Self::parse_with(endpoint_id, input, false)
    }

    /// [`Call::parse`], taking `blob:` URLs for the images when `blob_urls` (the browser's
    /// engine, which `fetch`es the page's Blobs by their URLs).
    pub fn parse_with(endpoint_id: &str, input: &Value, blob_urls: bool) -> Result<Call, Failure> {
        match endpoint_id {
            inpaint::ENDPOINT_ID => {
                let input =
                    InpaintInput::from_json_with(input, blob_urls).map_err(Failure::Invalid)?;
                let mut request =
                    Request::new(input.prompt, input.seed.unwrap_or_else(random_seed));
                // fal's schema default is "", which is encoded like any prompt.
                request.negative_prompt = Some(input.negative_prompt);
                request.num_inference_steps = input.num_inference_steps as usize;
                request.guidance_scale = input.guidance_scale as f32;
                Ok(Call {
                    endpoint_id: inpaint::ENDPOINT_ID,
                    model_name: input.model_name,
                    variant: None,
                    image_url: input.image_url,
                    mask_url: Some(input.mask_url),
                    request,
                    format: OutputFormat::Png,
                })
            }
            lora::IMAGE_TO_IMAGE_ID | lora::INPAINT_ID => {
                let inpainting = endpoint_id == lora::INPAINT_ID;
                let input = LoraInput::from_json_with(input, inpainting, blob_urls)
                    .map_err(Failure::Invalid)?;
                let mut request =
                    Request::new(input.prompt, input.seed.unwrap_or_else(random_seed));
                request.negative_prompt = Some(input.negative_prompt);
                request.num_inference_steps = input.num_inference_steps as usize;
                request.guidance_scale = input.guidance_scale as f32;
                request.strength = Some(input.noise_strength);
                request.num_images = input.num_images as usize;
                request.scheduler = input.scheduler;
                request.prompt_weighting = input.prompt_weighting;
                request.clip_skip = input.clip_skip as usize;
                request.eta = input.eta as f32;
                request.prediction_type = Some(input.prediction_type);
                Ok(Call {
                    endpoint_id: if inpainting {
                        lora::INPAINT_ID
                    } else {
                        lora::IMAGE_TO_IMAGE_ID
                    },
                    model_name: input.model_name,
                    variant: input.variant,
                    image_url: input.image_url,
                    mask_url: input.mask_url,
                    request,
                    format: if input.image_format == "jpeg" {
                        OutputFormat::Jpeg
                    } else {
                        OutputFormat::Png
                    },
                })
            }
            other => Err(Failure::not_served(other, &ENDPOINT_IDS)),
        }
    }

    /// The key a loaded model is kept under: the same name and variant reuse it.
    pub fn model_key(&self) -> String {
        format!(
            "{}\u{0}{}",
            self.model_name,
            self.variant.as_deref().unwrap_or("")
        )
    }

    /// The input field a request field came from (`fal-ai/lora/*` call strength
    /// `noise_strength`).
    fn input_field<'a>(&self, field: &'a str) -> &'a str {
        match field {
            "strength" if self.endpoint_id != inpaint::ENDPOINT_ID => "noise_strength",
            other => other,
        }
    }

    /// A pipeline error as fal would answer it: a 422 on the input field at fault (a model that
    /// cannot be loaded is `model_name`'s), 400 on a cancel, 500 otherwise.
    pub fn failure(&self, e: PipelineError) -> Failure {
        match e {
            PipelineError::Input { field, message } => {
                Failure::field(self.input_field(&field), message)
            }
            PipelineError::Cancelled => Failure::Cancelled,
            PipelineError::DeviceLost(reason) => Failure::DeviceLost(reason),
            PipelineError::Weights(
                w @ (WeightsError::Network { .. } | WeightsError::Config(_)),
            ) => Failure::field("model_name", format!("the model could not be loaded: {w}")),
            other => Failure::Internal(other.to_string()),
        }
    }

    /// fal's output for the stored images (`{image, seed}` or `{images, seed,
    /// has_nsfw_concepts, …}`).
    pub fn output(&self, mut images: Vec<Image>) -> Result<Value, Failure> {
        let seed = self.request.seed;
        let out = if self.endpoint_id == inpaint::ENDPOINT_ID {
            let image = images
                .drain(..)
                .next()
                .ok_or_else(|| Failure::Internal("the pipeline made no image".into()))?;
            serde_json::to_value(InpaintOutput { image, seed })
        } else {
            serde_json::to_value(LoraOutput {
                has_nsfw_concepts: vec![false; images.len()],
                images,
                seed,
                debug_latents: None,
                debug_per_pass_latents: None,
            })
        };
        out.map_err(|e| Failure::Internal(e.to_string()))
    }
}

/// An output image encoded in the call's format and named as fal names outputs, waiting for the
/// URL it will be served at (the server's storage, or a `blob:` URL of the page).
#[derive(Debug, Clone)]
pub struct EncodedImage {
    pub bytes: Vec<u8>,
    pub file_name: String,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

impl EncodedImage {
    /// fal's `Image` for these bytes served at `url`.
    pub fn image(&self, url: String) -> Image {
        Image {
            url,
            content_type: Some(self.content_type.into()),
            file_name: Some(self.file_name.clone()),
            file_size: Some(self.bytes.len() as u64),
            width: Some(self.width),
            height: Some(self.height),
        }
    }
}

impl Call {
    /// Each generated image encoded in the call's format (`image_format`), with its file name.
    pub fn encode(&self, out: &Generated) -> Result<Vec<EncodedImage>, Failure> {
        out.images
            .iter()
            .map(|img| {
                Ok(EncodedImage {
                    bytes: encode(img, self.format).map_err(|e| self.failure(e))?,
                    file_name: output_file_name(self.format),
                    content_type: self.format.content_type(),
                    width: out.width,
                    height: out.height,
                })
            })
            .collect()
    }
}

/// A short random file name for an output, as fal names them (12 hex digits).
pub fn output_file_name(format: OutputFormat) -> String {
    let a = random_seed();
    let b = random_seed() & 0xffff;
    format!("{a:08x}{b:04x}.{}", format.extension())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image() -> Image {
        Image {
            url: "u".into(),
            content_type: Some("image/png".into()),
            file_name: Some("f.png".into()),
            file_size: Some(3),
            width: Some(8),
            height: Some(8),
        }
    }

    #[test]
    fn inpaint_input_maps_onto_a_request_and_its_output() {
        let call = Call::parse(
            "fal-ai/inpaint",
            &json!({"model_name": "a/b", "prompt": "fox", "image_url": "data:,x",
                    "mask_url": "data:,y", "seed": 7, "num_inference_steps": 4}),
        )
        .unwrap();
        assert_eq!(call.request.seed, 7);
        assert_eq!(call.request.num_inference_steps, 4);
        assert_eq!(call.request.negative_prompt.as_deref(), Some(""));
        assert_eq!(call.request.guidance_scale, 7.5);
        assert_eq!(call.mask_url.as_deref(), Some("data:,y"));
        assert_eq!(call.format, OutputFormat::Png);
        let out = call.output(vec![image()]).unwrap();
        assert_eq!(out["seed"], 7);
        assert_eq!(out["image"]["url"], "u");
    }

    #[test]
    fn lora_input_maps_strength_format_and_variant() {
        let call = Call::parse(
            "fal-ai/lora/image-to-image",
            &json!({"model_name": "a/b", "prompt": "p", "image_url": "data:,x",
                    "noise_strength": 0.3, "image_format": "jpeg", "variant": "fp16",
                    "num_images": 2, "seed": 1}),
        )
        .unwrap();
        assert_eq!(call.request.strength, Some(0.3));
        assert_eq!(call.request.num_images, 2);
        assert_eq!(call.format, OutputFormat::Jpeg);
        assert_eq!(call.mask_url, None);
        assert_ne!(call.model_key(), "a/b\u{0}");
        // The pipeline's `strength` is the lora endpoints' `noise_strength`.
        let f = call.failure(PipelineError::input("strength", "too big"));
        assert_eq!(f.status(), 422);
        assert_eq!(
            f.body()["detail"][0]["loc"],
            json!(["body", "noise_strength"])
        );
        let out = call.output(vec![image(), image()]).unwrap();
        assert_eq!(out["has_nsfw_concepts"], json!([false, false]));
    }

    #[test]
    fn failures_answer_as_fal_does() {
        let missing = Call::parse("fal-ai/inpaint", &json!({"prompt": "p"})).unwrap_err();
        assert_eq!(missing.status(), 422);
        assert!(
            missing.body()["detail"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["loc"] == json!(["body", "model_name"]))
        );
        let other = Call::parse("fal-ai/flux/dev", &json!({})).unwrap_err();
        assert_eq!(other.status(), 404);
        let call = Call::parse(
            "fal-ai/inpaint",
            &json!({"model_name": "a/b", "prompt": "p", "image_url": "data:,x", "mask_url": "data:,y"}),
        )
        .unwrap();
        let lost = call.failure(PipelineError::DeviceLost(
            "Destroyed: device destroyed".into(),
        ));
        assert!(lost.is_device_lost());
        assert_eq!(lost.status(), 500);
        assert_eq!(
            lost.body()["detail"],
            "the GPU device was lost (Destroyed: device destroyed)"
        );
        assert_eq!(lost.body()["error_type"], "runner_server_error");
    }

    #[test]
    fn a_missing_seed_is_drawn_and_reported() {
        let input = json!({"model_name": "a/b", "prompt": "p", "image_url": "data:,x", "mask_url": "data:,y"});
        let call = Call::parse("fal-ai/inpaint", &input).unwrap();
        assert!(call.request.seed < 1 << 32);
        let out = call.output(vec![image()]).unwrap();
        assert_eq!(out["seed"], call.request.seed);
    }

    #[test]
    fn output_names_look_like_fal_s() {
        let name = output_file_name(OutputFormat::Jpeg);
        assert_eq!(name.len(), 16);
        assert!(name.ends_with(".jpg"));
    }
}
