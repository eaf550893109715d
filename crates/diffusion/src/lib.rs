//! The diffusion engine: CLIP text encoders, UNet2DCondition (SD 1.x/2.x/XL, 4 or 9 input
//! channels) and AutoencoderKL on Burn (the backend is chosen at run time by the device), with the
//! schedulers and the img2img/inpaint pipelines, and fal's endpoints on them.
//!
//! Where each concept lives:
//! - a call of `fal-ai/inpaint` / `fal-ai/lora/*`, written once for the server and the browser:
//!   [`endpoints`] (`run_call` over a `Host`; fal's failures are `fresco_protocol::failure`);
//! - a generation: [`pipeline`] (loading a checkpoint, prompts, latents, `generate`);
//! - the networks: [`models`] (CLIP, UNet, VAE) on [`nn`]'s layers, with [`cpu`]'s kernels on the CPU;
//! - weights: [`weights`] (the safetensors stream, repositories — the hub cache natively, `fetch`
//!   and the origin's model cache in a browser —, the diffusers→module name maps, download
//!   progress and its wording in `weights::progress`);
//! - noise: [`schedulers`], and [`rng`] (PyTorch's CPU generator, for diffusers' images);
//! - the device (CPU, wgpu, WebGPU), its precision, limits and loss: [`device`].

#[cfg(not(target_arch = "wasm32"))]
pub mod cpu;
pub mod device;
pub mod endpoints;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod rng;
pub mod schedulers;
pub mod tokenizer;
pub mod weights;

/// The latent space of every SD/SDXL VAE is 8× smaller than the image on each side.
pub const VAE_SCALE_FACTOR: u32 = 8;

/// Image sides must be multiples of this to round-trip through the VAE.
pub fn is_latent_aligned(side: u32) -> bool {
    side > 0 && side.is_multiple_of(VAE_SCALE_FACTOR)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sides_must_be_multiples_of_eight() {
        assert!(super::is_latent_aligned(1024));
        assert!(!super::is_latent_aligned(1020));
        assert!(!super::is_latent_aligned(0));
    }
}
