//! `fal-ai/lora/image-to-image` and `fal-ai/lora/inpaint` on the engine: the subset of fal's
//! schema in `fresco_protocol::endpoints::lora` (several images, fal's scheduler names, prompt
//! weighting, clip skip, JPEG or PNG, prediction type, DDIM η, weight variant); what it does not
//! implement is refused with a 422 naming the field.

use std::sync::Arc;

use fresco_protocol::endpoints::lora::{IMAGE_TO_IMAGE_ID, INPAINT_ID};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;

use super::inpaint::{Engine, run_call};
use super::{Endpoint, Failure, JobContext};

/// The app `fal-ai/lora`: its `image-to-image` and `inpaint` paths.
pub struct Lora {
    pub engine: Arc<Engine>,
}

/// The app id both endpoints live under.
pub const APP_ID: &str = "fal-ai/lora";

impl Endpoint for Lora {
    fn run(&self, input: Value, ctx: JobContext) -> BoxFuture<'static, Result<Value, Failure>> {
        let inpaint = match ctx.endpoint.path.as_deref() {
            Some("image-to-image") => false,
            Some("inpaint") => true,
            other => {
                let endpoint = format!("{APP_ID}/{}", other.unwrap_or(""));
                let failure = Failure::not_served(&endpoint, &[IMAGE_TO_IMAGE_ID, INPAINT_ID]);
                return async move { Err(failure) }.boxed();
            }
        };
        let id = if inpaint {
            INPAINT_ID
        } else {
            IMAGE_TO_IMAGE_ID
        };
        run_call(self.engine.clone(), id.to_owned(), input, ctx).boxed()
    }
}
