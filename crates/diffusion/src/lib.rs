//! The diffusion engine: CLIP text encoders, UNet2DCondition (SD 1.x/2.x/XL, 4 or 9 input
//! channels) and AutoencoderKL on Burn (the backend is chosen at run time by the device), with the
//! schedulers and the img2img/inpaint pipelines, and fal's endpoints on them ([`endpoints`]).

#[cfg(not(target_arch = "wasm32"))]
pub mod cpu;
pub mod endpoints;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod rng;
pub mod schedulers;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;
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
