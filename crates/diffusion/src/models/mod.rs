//! The model components, each built from its diffusers/transformers `config.json` and its
//! safetensors weights, with diffusers' names.

pub mod clip;
pub mod resnet;
pub mod transformer;
pub mod unet;
pub mod vae;
