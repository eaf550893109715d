//! The pipelines users run: image-to-image and inpainting (9-channel inpainting UNets, and
//! 4-channel models that re-blend the kept region each step), SD 1.x/2.x and SDXL, reproducing
//! diffusers' pipelines draw for draw.

pub mod generate;
pub mod image;
mod latents;
pub mod load;
pub mod memory;
pub mod prompt;
pub mod text;

use burn::tensor::Device;

pub use generate::{Generated, Request, StepProgress, Task};

use crate::models::unet::UNet2DConditionModel;
use crate::models::vae::AutoencoderKL;
use crate::schedulers::SchedulerConfig;
use crate::weights::WeightsError;
use text::TextEncoders;

/// What can go wrong in a generation. `Input` names the request field at fault, so that servers
/// can answer with a 422 pointing at it.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{field}: {message}")]
    Input { field: String, message: String },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Internal(String),
    /// The device is gone (a driver reset, a crashed GPU process, `GPUDevice.destroy()`): every
    /// later operation on it fails, so whoever holds it must open a new one.
    #[error("{}", fresco_protocol::failure::device_lost_message(.0))]
    DeviceLost(String),
}

impl PipelineError {
    pub fn input(field: &str, message: impl Into<String>) -> Self {
        PipelineError::Input {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A loaded model: text encoder(s), UNet, VAE and scheduler config, on one device.
pub struct Pipeline {
    pub device: Device,
    /// `model_index.json`'s `_class_name` (e.g. `StableDiffusionXLInpaintPipeline`).
    pub class_name: String,
    pub text: TextEncoders,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler_config: SchedulerConfig,
    /// SDXL refiners condition on an aesthetic score instead of the target size.
    pub requires_aesthetics_score: bool,
    /// `unet.sample_size × vae_scale_factor`: the inpainting pipelines' default (width, height).
    pub default_size: (u32, u32),
    /// The precision the text encoders and the UNet compute in.
    pub precision: crate::weights::store::Precision,
    /// Every component's weights on the device, in bytes.
    pub weights_bytes: u64,
    /// The device's limits, which every call is planned to fit ([`memory::plan`]).
    pub limits: memory::DeviceLimits,
}

impl Pipeline {
    /// `2^(VAE blocks − 1)`: 8 for every SD/SDXL VAE.
    pub fn vae_scale_factor(&self) -> u32 {
        self.vae.config.scale_factor() as u32
    }

    /// Whether the UNet takes the mask and masked image as extra channels.
    pub fn is_inpainting_model(&self) -> bool {
        self.unet.plan.in_channels == 9
    }
}
