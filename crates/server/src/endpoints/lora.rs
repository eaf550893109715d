//! `fal-ai/lora/image-to-image` and `fal-ai/lora/inpaint` on the engine: the subset of fal's
//! schema in `fresco_protocol::endpoints::lora` (several images, fal's scheduler names, prompt
//! weighting, clip skip, JPEG or PNG, prediction type, DDIM η, weight variant); what it does not
//! implement is refused with a 422 naming the field.

use std::sync::Arc;

use axum::http::StatusCode;
use fresco_diffusion::pipeline::Request;
use fresco_diffusion::pipeline::image::OutputFormat;
use fresco_diffusion::rng::random_seed;
use fresco_protocol::endpoints::lora::{IMAGE_TO_IMAGE_ID, INPAINT_ID, LoraInput, LoraOutput};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::inpaint::{Engine, FieldNames, Inputs, fetch, generate, store_images};
use super::{Endpoint, JobContext, JobError};

/// The app `fal-ai/lora`: its `image-to-image` and `inpaint` paths.
pub struct Lora {
    pub engine: Arc<Engine>,
}

/// The app id both endpoints live under.
pub const APP_ID: &str = "fal-ai/lora";

async fn run(
    engine: Arc<Engine>,
    inpaint: bool,
    input: Value,
    ctx: JobContext,
) -> Result<Value, JobError> {
    let input = LoraInput::from_json(&input, inpaint).map_err(JobError::validation)?;
    let image = fetch(&engine.http, &input.image_url, "image_url");
    let (image_bytes, mask_bytes) = match &input.mask_url {
        Some(m) => {
            let (i, m) = tokio::try_join!(image, fetch(&engine.http, m, "mask_url"))?;
            (i, Some(m))
        }
        None => (image.await?, None),
    };
    let ctx = Arc::new(ctx);
    let seed = input.seed.unwrap_or_else(random_seed);
    let mut req = Request::new(input.prompt.clone(), seed);
    req.negative_prompt = Some(input.negative_prompt.clone());
    req.num_inference_steps = input.num_inference_steps as usize;
    req.guidance_scale = input.guidance_scale as f32;
    req.strength = Some(input.noise_strength);
    req.num_images = input.num_images as usize;
    req.scheduler = input.scheduler.clone();
    req.prompt_weighting = input.prompt_weighting;
    req.clip_skip = input.clip_skip as usize;
    req.eta = input.eta as f32;
    req.prediction_type = Some(input.prediction_type.clone());
    let inputs = Inputs {
        model_name: &input.model_name,
        variant: input.variant.as_deref(),
        image: image_bytes,
        mask: mask_bytes,
    };
    let out = generate(
        &engine,
        &ctx,
        inputs,
        req,
        &FieldNames {
            strength: Some("noise_strength"),
        },
    )
    .await?;
    let format = if input.image_format == "jpeg" {
        OutputFormat::Jpeg
    } else {
        OutputFormat::Png
    };
    let images = store_images(&ctx, &out, format).await?;
    let output = LoraOutput {
        has_nsfw_concepts: vec![false; images.len()],
        images,
        seed,
        debug_latents: None,
        debug_per_pass_latents: None,
    };
    serde_json::to_value(output).map_err(|e| {
        JobError::with_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            Value::String(e.to_string()),
        )
    })
}

impl Endpoint for Lora {
    fn run(&self, input: Value, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobError>> {
        let inpaint = match ctx.endpoint.path.as_deref() {
            Some("image-to-image") => false,
            Some("inpaint") => true,
            other => {
                let message = format!(
                    "{APP_ID}/{} is not served here: {IMAGE_TO_IMAGE_ID} and {INPAINT_ID} are",
                    other.unwrap_or("")
                );
                return async move {
                    Err(JobError::with_status(
                        StatusCode::NOT_FOUND,
                        Value::String(message),
                    ))
                }
                .boxed();
            }
        };
        run(self.engine.clone(), inpaint, input, ctx).boxed()
    }
}
