//! One generation, step for step and draw for draw as diffusers' `StableDiffusionImg2ImgPipeline`,
//! `StableDiffusionInpaintPipeline` and `StableDiffusionXLInpaintPipeline` run it.
//!
//! Inpainting, with `S` = image latents, `ε` = the initial noise, `M` = the latent mask:
//! 1. `S = vae.encode(image).sample() · scaling_factor` — only when the UNet has 4 channels (it
//!    re-blends with `S`) or `strength < 1`: **draw 1** (the latent sample, `[1, 4, h/f, w/f]`).
//! 2. `ε` `[n, 4, h/f, w/f]`: **draw 2**. Start latents: `ε · init_noise_sigma` at strength 1,
//!    else `scheduler.add_noise(S, ε, first step)`.
//! 3. Masked-image latents `vae.encode(image · (mask < 0.5)).sample() · scaling_factor`:
//!    **draw 3** (diffusers encodes it for 4-channel models too, so the draw happens either way).
//! 4. Each step: the UNet on `[x, x]` (unconditional first) with `M` and the masked-image latents
//!    as channels 5–9 on 9-channel UNets, classifier-free guidance `u + g (c − u)` when `g > 1`,
//!    `scheduler.step` (ancestral schedulers draw here), and on 4-channel UNets the kept region
//!    put back: `x = (1 − M) · add_noise(S, ε, next step) + M · x` (before the last step's
//!    output only the mask blend with `S` itself).
//! 5. `vae.decode(x / scaling_factor)`, then `(y/2 + 0.5)` clamped and quantised.
//!
//! Image-to-image: `S` (**draw 1**), `ε` (**draw 2**), `x = add_noise(S, ε, first step)`, then
//! the steps without the mask.

use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use image::{DynamicImage, RgbImage};

use super::image::{
    MaskOptions, aligned_mask, binary_mask, blur_mask, composite, image_tensor, latent_mask,
    mask_tensor, resize_rgb, to_images, to_rgb,
};
use super::memory::{self, MemoryPlan, ModelShape, VaeSplit};
use super::text::Conditioning;
use super::{Pipeline, PipelineError};
use crate::models::unet::AddedConditions;
use crate::rng::TorchGenerator;
use crate::schedulers::{DiffusionScheduler, Latents, Scheduler, SchedulerError, StrengthSchedule};

/// What to generate from.
pub enum Task<'a> {
    ImageToImage {
        image: &'a DynamicImage,
    },
    /// White (≥ 50 % grey) in the mask is repainted, black kept.
    Inpaint {
        image: &'a DynamicImage,
        mask: &'a DynamicImage,
    },
}

/// The knobs of a generation; [`Request::new`] gives diffusers' defaults.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: String,
    /// `None`: no negative prompt (diffusers' `None`: zero embeddings on SDXL); `Some("")` is
    /// encoded like any prompt.
    pub negative_prompt: Option<String>,
    pub num_inference_steps: usize,
    pub guidance_scale: f32,
    /// `None`: the pipeline's default (0.9999 SDXL inpaint, 1.0 SD inpaint, 0.8 img2img).
    pub strength: Option<f64>,
    pub seed: u64,
    /// One of fal's scheduler names; `None`: the model's own scheduler.
    pub scheduler: Option<String>,
    pub num_images: usize,
    /// Layers skipped from the end of the text encoder (0: diffusers' default layer).
    pub clip_skip: usize,
    /// DDIM's η.
    pub eta: f32,
    /// `None`: the UNet's sample size × the VAE's scale factor for inpainting (as diffusers'
    /// inpaint pipelines), the image's own size for image-to-image.
    pub size: Option<(u32, u32)>,
    /// SDXL models with `requires_aesthetics_score` (refiners).
    pub aesthetic_score: f32,
    pub negative_aesthetic_score: f32,
    /// Overrides the scheduler config's `prediction_type` (`"epsilon"`, `"v_prediction"`), as
    /// fal's `prediction_type` field does.
    pub prediction_type: Option<String>,
    /// Parse `(text:1.3)`-style weights and lift the 77-token limit (fal's `prompt_weighting`).
    pub prompt_weighting: bool,
    /// Opt-in inpainting improvements (compositing, grid-aligned mask, blur); off by default.
    pub mask_options: MaskOptions,
}

impl Request {
    pub fn new(prompt: impl Into<String>, seed: u64) -> Self {
        Request {
            prompt: prompt.into(),
            negative_prompt: None,
            num_inference_steps: 50,
            guidance_scale: 7.5,
            strength: None,
            seed,
            scheduler: None,
            num_images: 1,
            clip_skip: 0,
            eta: 0.0,
            size: None,
            aesthetic_score: 6.0,
            negative_aesthetic_score: 2.5,
            mask_options: MaskOptions::default(),
            prompt_weighting: false,
            prediction_type: None,
        }
    }
}

/// What a step callback hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepProgress {
    /// 1-based.
    pub step: usize,
    pub total: usize,
}

/// The end of a phase of a generation, in order ([`Pipeline::generate_with_phases`]): what a
/// benchmark times (natively; on a GPU a phase's end is when its work was queued, except the
/// steps and the decode, which read back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The prompts encoded (and SDXL's added conditions).
    TextEncoded,
    /// The starting latents: the image through the VAE's encoder where the task needs it, and
    /// the noise.
    LatentsPrepared,
    /// Inpainting: the masked image through the VAE's encoder, and the mask at the latent size.
    /// (The steps that follow are told by `on_step`.)
    MaskEncoded,
    /// The latents through the VAE's decoder, read back as images.
    Decoded,
}

/// The result: `num_images` images of `width × height`, and the seed they came from.
pub struct Generated {
    pub images: Vec<RgbImage>,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
}

/// What the denoising loop starts from ([`Pipeline::prepare_latents`],
/// [`Pipeline::prepare_mask_latents`]).
struct Prepared {
    /// The latents the loop starts from.
    latents: Tensor<4>,
    /// The clean image's latents: 4-channel inpainting puts them back outside the mask.
    image_latents: Option<Tensor<4>>,
    /// The noise the latents were made with (4-channel inpainting noises the image with it).
    noise: Tensor<4>,
    /// Inpainting: the mask at the latent size and the masked image's latents.
    mask_inputs: Option<(Tensor<4>, Tensor<4>)>,
}

fn sched_err(e: SchedulerError) -> PipelineError {
    match e {
        SchedulerError::UnsupportedName(_) => PipelineError::input("scheduler", e.to_string()),
        SchedulerError::InvalidStrength(_) | SchedulerError::NoStepsLeft { .. } => {
            PipelineError::input("strength", e.to_string())
        }
        SchedulerError::InvalidSteps { .. } => {
            PipelineError::input("num_inference_steps", e.to_string())
        }
        other => PipelineError::Internal(format!("scheduler: {other}")),
    }
}

/// `randn` of `shape` from the generator, as a tensor.
fn randn(rng: &mut TorchGenerator, shape: [usize; 4], device: &Device) -> Tensor<4> {
    let values = rng.randn(shape.iter().product());
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A batch of `n` copies of a `[1, …]` tensor (torch's `repeat(n, 1, 1, 1)`).
fn repeat_batch<const D: usize>(t: Tensor<D>, n: usize) -> Tensor<D> {
    if n == 1 { t } else { t.repeat_dim(0, n) }
}

impl Pipeline {
    /// `vae.encode(x).latent_dist.sample(generator) · scaling_factor`, in tiles where the plan
    /// says so.
    fn encode_sample(
        &self,
        image: Tensor<4>,
        split: VaeSplit,
        rng: &mut TorchGenerator,
    ) -> Tensor<4> {
        let dist = match split {
            VaeSplit::Tiled(tiling) => self.vae.encode_tiled(image, tiling),
            VaeSplit::Whole | VaeSplit::OneByOne => self.vae.encode(image),
        };
        let mean = dist.mean.clone().cast(FloatDType::F32);
        let std = dist.std().cast(FloatDType::F32);
        let eps = randn(rng, mean.dims(), &mean.device());
        (mean + std * eps).mul_scalar(self.vae.config.scaling_factor as f32)
    }

    fn check_request(&self, req: &Request, inpaint: bool) -> Result<(), PipelineError> {
        if req.num_inference_steps == 0 || req.num_inference_steps > 1000 {
            return Err(PipelineError::input(
                "num_inference_steps",
                format!("{} is outside 1..=1000", req.num_inference_steps),
            ));
        }
        if !req.guidance_scale.is_finite() || req.guidance_scale < 0.0 {
            return Err(PipelineError::input(
                "guidance_scale",
                format!("{} must be a number ≥ 0", req.guidance_scale),
            ));
        }
        if let Some(s) = req.strength
            && !(s > 0.0 && s <= 1.0)
        {
            return Err(PipelineError::input(
                "strength",
                format!("{s} must be in (0, 1]"),
            ));
        }
        if req.num_images == 0 || req.num_images > 8 {
            return Err(PipelineError::input(
                "num_images",
                format!("{} is outside 1..=8", req.num_images),
            ));
        }
        let channels = self.unet.plan.in_channels;
        if inpaint && channels != 9 && channels != 4 {
            return Err(PipelineError::input(
                "model_name",
                format!("the UNet takes {channels} channels; inpainting needs 4 or 9"),
            ));
        }
        if !inpaint && channels != 4 {
            return Err(PipelineError::input(
                "model_name",
                format!(
                    "the UNet takes {channels} channels: an inpainting model needs a mask (image-to-image needs a 4-channel model)"
                ),
            ));
        }
        Ok(())
    }

    /// The memory a call of `task` with `req` needs on this pipeline's device, fitted to its
    /// limits ([`memory::plan`]): a call that cannot fit is refused (422, naming the size and the
    /// limit) before anything runs.
    pub fn plan_call(&self, task: &Task<'_>, req: &Request) -> Result<MemoryPlan, PipelineError> {
        let (image, inpaint) = match task {
            Task::ImageToImage { image } => (*image, false),
            Task::Inpaint { image, .. } => (*image, true),
        };
        let (width, height) = self.size(req, image, inpaint)?;
        self.memory_plan(width, height, req.num_images, req.guidance_scale > 1.0)
    }

    /// [`memory::plan`] for this pipeline's model and device.
    pub fn memory_plan(
        &self,
        width: u32,
        height: u32,
        images: usize,
        guidance: bool,
    ) -> Result<MemoryPlan, PipelineError> {
        let model = ModelShape {
            unet: &self.unet.plan,
            vae: &self.vae.config,
            unet_value: self.precision.dtype().size() as u64,
            upcast_attention: self.unet.upcast_attention,
            weights: self.weights_bytes,
        };
        memory::plan(&model, width, height, images, guidance, self.limits)
            .map_err(|e| PipelineError::input("image_size", e.0))
    }

    /// The generation size for a task.
    fn size(
        &self,
        req: &Request,
        image: &DynamicImage,
        inpaint: bool,
    ) -> Result<(u32, u32), PipelineError> {
        let f = self.vae_scale_factor();
        let (w, h) = match req.size {
            Some(s) => s,
            None if inpaint => self.default_size,
            // `get_default_height_width`: the image's size rounded down to the latent grid.
            None => (
                image.width() - image.width() % f,
                image.height() - image.height() % f,
            ),
        };
        if w == 0 || h == 0 || !w.is_multiple_of(f) || !h.is_multiple_of(f) {
            return Err(PipelineError::input(
                "image_size",
                format!(
                    "{w}×{h}: width and height must be positive multiples of {f} (the VAE's scale factor)"
                ),
            ));
        }
        Ok((w, h))
    }

    /// Runs a generation. `on_step` is called after every denoising step with the latents as
    /// they are then (`[num_images, 4, h/f, w/f]`, what diffusers' `callback_on_step_end` sees);
    /// returning `false` cancels (the result is then [`PipelineError::Cancelled`]).
    ///
    /// The steps are diffusers' (`StableDiffusion[XL]{Img2Img,Inpaint}Pipeline.__call__`), in its
    /// order, so that the random draws and the images are the same: the prompts encoded, the
    /// timesteps for the strength ([`Pipeline::prepare_timesteps`]), the latents and noise
    /// ([`Pipeline::prepare_latents`]), the masks ([`Pipeline::prepare_mask_latents`]), the
    /// denoising loop ([`Pipeline::denoise`]), and the latents
    /// decoded to images ([`Pipeline::decode_latents`]), composited over the input if asked.
    pub async fn generate(
        &self,
        task: Task<'_>,
        req: &Request,
        on_step: &mut dyn FnMut(StepProgress, &Tensor<4>) -> bool,
    ) -> Result<Generated, PipelineError> {
        self.generate_with_phases(task, req, on_step, &mut |_| {})
            .await
    }

    /// [`Pipeline::generate`], telling `on_phase` as each [`Phase`] ends.
    pub async fn generate_with_phases(
        &self,
        task: Task<'_>,
        req: &Request,
        on_step: &mut dyn FnMut(StepProgress, &Tensor<4>) -> bool,
        on_phase: &mut dyn FnMut(Phase),
    ) -> Result<Generated, PipelineError> {
        let (image, mask) = match task {
            Task::ImageToImage { image } => (image, None),
            Task::Inpaint { image, mask } => (image, Some(mask)),
        };
        let inpaint = mask.is_some();
        self.check_request(req, inpaint)?;
        let (width, height) = self.size(req, image, inpaint)?;
        let n = req.num_images;
        let cfg = req.guidance_scale > 1.0;
        let memory = self.memory_plan(width, height, n, cfg)?;

        // Text.
        let (cond, uncond) = self.conditioning(req, cfg)?;
        let context = batch_context(&cond, uncond.as_ref(), n);
        let added = self.added_conditions(&cond, uncond.as_ref(), n, width, height, req)?;
        on_phase(Phase::TextEncoded);

        let (mut scheduler, strength) = self.prepare_timesteps(req, inpaint)?;
        // Every random draw from here on comes from this generator, in diffusers' order.
        let mut rng = TorchGenerator::new(req.seed);
        let f = self.vae_scale_factor();
        let shape = [n, 4, (height / f) as usize, (width / f) as usize];
        let init = image_tensor(image, width, height, &self.device);
        let (latents, image_latents, noise) = self.prepare_latents(
            init.clone(),
            inpaint,
            memory.encode.split,
            shape,
            &scheduler,
            &strength,
            &mut rng,
        )?;
        on_phase(Phase::LatentsPrepared);
        let (mask_inputs, composite_mask) = match mask {
            Some(mask) => {
                let (inputs, m) =
                    self.prepare_mask_latents(mask, init, req, (width, height), &memory, &mut rng);
                on_phase(Phase::MaskEncoded);
                (Some(inputs), Some(m))
            }
            None => (None, None),
        };
        let prepared = Prepared {
            latents,
            image_latents,
            noise,
            mask_inputs,
        };
        let latents = self
            .denoise(
                &mut scheduler,
                strength.begin_index,
                prepared,
                &context,
                added.as_ref(),
                req,
                memory.unet_rows,
                &mut rng,
                on_step,
            )
            .await?;
        let mut images = self
            .decode_latents(latents, memory.decode.split, width, height)
            .await?;
        on_phase(Phase::Decoded);
        if let (true, Some(m)) = (req.mask_options.composite, &composite_mask) {
            let m = blur_mask(m, width, height, req.mask_options.blur);
            let original = resize_rgb(to_rgb(image), width, height);
            for img in &mut images {
                *img = composite(&original, img, &m);
            }
        }
        Ok(Generated {
            images,
            seed: req.seed,
            width,
            height,
        })
    }

    /// The scheduler for the request (its name or the model's, its prediction type and η), its
    /// timesteps, and where the strength makes the denoising begin (diffusers' `get_timesteps`).
    fn prepare_timesteps(
        &self,
        req: &Request,
        inpaint: bool,
    ) -> Result<(Scheduler<Tensor<4>>, StrengthSchedule), PipelineError> {
        let mut config = self.scheduler_config.clone();
        if let Some(p) = &req.prediction_type {
            config.prediction_type = Some(p.clone());
        }
        let mut scheduler: Scheduler<Tensor<4>> = match &req.scheduler {
            Some(name) => Scheduler::from_fal_name(name, &config),
            None => Scheduler::from_config(&config),
        }
        .map_err(sched_err)?;
        scheduler.set_eta(req.eta);
        scheduler
            .set_timesteps(req.num_inference_steps)
            .map_err(sched_err)?;
        let default_strength = match (inpaint, self.text.is_sdxl()) {
            (true, true) => 0.9999,
            (true, false) => 1.0,
            (false, _) => 0.8,
        };
        let strength = scheduler
            .strength_schedule(req.strength.unwrap_or(default_strength))
            .map_err(sched_err)?;
        Ok((scheduler, strength))
    }

    /// The latents the denoising starts from (diffusers' `prepare_latents`): the image encoded
    /// and noised to the first step's level — or, for inpainting at full strength, pure noise
    /// scaled to the scheduler's first σ. Also the image's latents (4-channel inpainting puts
    /// them back outside the mask) and the noise. The VAE's draw, then the noise, from `rng`.
    #[allow(clippy::too_many_arguments)]
    fn prepare_latents(
        &self,
        init: Tensor<4>,
        inpaint: bool,
        encode: VaeSplit,
        shape: [usize; 4],
        scheduler: &Scheduler<Tensor<4>>,
        strength: &StrengthSchedule,
        rng: &mut TorchGenerator,
    ) -> Result<(Tensor<4>, Option<Tensor<4>>, Tensor<4>), PipelineError> {
        let (device, n, begin) = (&self.device, shape[0], strength.begin_index);
        if !inpaint {
            let s = repeat_batch(self.encode_sample(init, encode, rng), n);
            let noise = randn(rng, shape, device);
            let latents = scheduler.add_noise(&s, &noise, begin).map_err(sched_err)?;
            return Ok((latents, Some(s), noise));
        }
        let nine = self.unet.plan.in_channels == 9;
        let needs_image_latents = !nine || !strength.is_strength_max;
        let image_latents =
            needs_image_latents.then(|| repeat_batch(self.encode_sample(init, encode, rng), n));
        let noise = randn(rng, shape, device);
        let latents = match &image_latents {
            Some(s) if !strength.is_strength_max => {
                scheduler.add_noise(s, &noise, begin).map_err(sched_err)?
            }
            _ => noise.clone().mul_scalar(scheduler.init_noise_sigma()),
        };
        Ok((latents, image_latents, noise))
    }

    /// Inpainting's mask inputs (diffusers' `prepare_mask_latents`): the mask binarised (and
    /// aligned to the latent grid if asked) — returned at the image's size for compositing — its
    /// latent-size version, and the masked image's latents (the VAE's draw from `rng`).
    fn prepare_mask_latents(
        &self,
        mask: &DynamicImage,
        init: Tensor<4>,
        req: &Request,
        (width, height): (u32, u32),
        memory: &MemoryPlan,
        rng: &mut TorchGenerator,
    ) -> ((Tensor<4>, Tensor<4>), Vec<f32>) {
        let (device, f, n) = (&self.device, self.vae_scale_factor(), req.num_images);
        let mut m = binary_mask(mask, width, height);
        let mut cells = None;
        if req.mask_options.align {
            let (c, full) = aligned_mask(&m, width, height, f, req.mask_options.align_grow);
            m = full;
            cells = Some(c);
        }
        let keep: Vec<f32> = m.iter().map(|&v| if v < 0.5 { 1.0 } else { 0.0 }).collect();
        let masked = init * mask_tensor(&keep, width, height, device);
        let masked_latents = repeat_batch(self.encode_sample(masked, memory.encode.split, rng), n);
        let lmask = match cells {
            Some(c) => mask_tensor(&c, width / f, height / f, device),
            None => latent_mask(&m, width, height, f, device),
        };
        ((repeat_batch(lmask, n), masked_latents), m)
    }

    /// The denoising loop from `begin`: the UNet on the latents (doubled for classifier-free
    /// guidance, with the mask and masked image's latents for a 9-channel UNet), guidance, the
    /// scheduler's step, and for a 4-channel UNet inpainting the known region put back at the
    /// next step's noise level. `on_step` after each step; `false` cancels.
    #[allow(clippy::too_many_arguments)]
    async fn denoise(
        &self,
        scheduler: &mut Scheduler<Tensor<4>>,
        begin: usize,
        prepared: Prepared,
        context: &Tensor<3>,
        added: Option<&AddedConditions>,
        req: &Request,
        unet_rows: usize,
        rng: &mut TorchGenerator,
        on_step: &mut dyn FnMut(StepProgress, &Tensor<4>) -> bool,
    ) -> Result<Tensor<4>, PipelineError> {
        let device = &self.device;
        let n = req.num_images;
        let cfg = req.guidance_scale > 1.0;
        let nine = self.unet.plan.in_channels == 9;
        let Prepared {
            mut latents,
            image_latents,
            noise,
            mask_inputs,
        } = prepared;
        let shape = latents.dims();
        let timesteps = scheduler.timesteps().to_vec();
        // The UNet's extra channels (9-channel inpainting), doubled for guidance.
        let extra = match (&mask_inputs, nine) {
            (Some((m, ml)), true) => {
                let both = Tensor::cat(vec![m.clone(), ml.clone()], 1);
                Some(if cfg {
                    Tensor::cat(vec![both.clone(), both], 0)
                } else {
                    both
                })
            }
            _ => None,
        };

        let total = timesteps.len() - begin;
        for (k, i) in (begin..timesteps.len()).enumerate() {
            let t = timesteps[i];
            let input = if cfg {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(&input, i).map_err(sched_err)?;
            let input = match &extra {
                Some(e) => Tensor::cat(vec![input, e.clone()], 1),
                None => input,
            };
            let out = self
                .unet
                .forward_in_slices(input, &[t], context, added, unet_rows)?
                .cast(FloatDType::F32);
            let noise_pred = if cfg {
                let u = out.clone().narrow(0, 0, n);
                let c = out.narrow(0, n, n);
                u.clone() + (c - u).mul_scalar(req.guidance_scale)
            } else {
                out
            };
            let mut draw = || randn(rng, shape, device);
            latents = scheduler
                .step(&noise_pred, i, &latents, &mut draw)
                .map_err(sched_err)?;
            if let (Some((m, _)), false, Some(s)) = (&mask_inputs, nine, &image_latents) {
                let proper = if i + 1 < timesteps.len() {
                    scheduler.add_noise(s, &noise, i + 1).map_err(sched_err)?
                } else {
                    s.clone()
                };
                latents = Latents::add(
                    &(proper * (m.clone().neg().add_scalar(1.0))),
                    &(m.clone() * latents),
                );
            }
            // The step is done when the device says so (its latents read back): progress then
            // reports finished work, not queued work, and in a browser the event loop runs
            // between steps, so an abort that arrived meanwhile is seen by `on_step`.
            step_done(&latents).await?;
            if !on_step(StepProgress { step: k + 1, total }, &latents) {
                return Err(PipelineError::Cancelled);
            }
        }
        Ok(latents)
    }

    /// The latents through the VAE's decoder — whole, image by image or in tiles, as planned —
    /// read back as images of `width`×`height`.
    async fn decode_latents(
        &self,
        latents: Tensor<4>,
        split: VaeSplit,
        width: u32,
        height: u32,
    ) -> Result<Vec<RgbImage>, PipelineError> {
        let n = latents.dims()[0];
        let latents = latents.div_scalar(self.vae.config.scaling_factor as f32);
        let one = |i: usize| latents.clone().narrow(0, i, 1);
        let decoded = match split {
            VaeSplit::Whole => self.vae.decode(latents.clone()),
            VaeSplit::OneByOne => Tensor::cat((0..n).map(|i| self.vae.decode(one(i))).collect(), 0),
            VaeSplit::Tiled(tiling) => Tensor::cat(
                (0..n)
                    .map(|i| self.vae.decode_tiled(one(i), tiling))
                    .collect(),
                0,
            ),
        }
        .cast(FloatDType::F32);
        let data = decoded.into_data_async().await.map_err(|e| {
            readback_failed("reading the image back", e.is_device_poisoned(), e.reason())
        })?;
        let values: Vec<f32> = data
            .try_to_vec::<f32>()
            .map_err(|e| PipelineError::Internal(format!("reading the image back: {e:?}")))?;
        Ok(to_images(&values, n, width, height))
    }

    /// The prompt's and (with guidance) the negative prompt's conditioning.
    fn conditioning(
        &self,
        req: &Request,
        cfg: bool,
    ) -> Result<(Conditioning, Option<Conditioning>), PipelineError> {
        let device = &self.device;
        let negative = req.negative_prompt.as_deref();
        if !req.prompt_weighting {
            let cond = self
                .text
                .encode_prompt(&req.prompt, req.clip_skip, device)?;
            let uncond = cfg
                .then(|| self.text.encode_negative(negative, &cond, device))
                .transpose()?;
            return Ok((cond, uncond));
        }
        let cond = self
            .text
            .encode_prompt_weighted(&req.prompt, req.clip_skip, 0, device)?;
        if !cfg {
            return Ok((cond, None));
        }
        let uncond = self
            .text
            .encode_negative_weighted(negative, &cond, device)?;
        // A negative prompt longer than the prompt: the prompt gets empty chunks to match.
        let (n_cond, n_uncond) = (cond.embeds.dims()[1], uncond.embeds.dims()[1]);
        let cond = if n_uncond > n_cond {
            self.text.encode_prompt_weighted(
                &req.prompt,
                req.clip_skip,
                n_uncond / crate::tokenizer::CLIP_CONTEXT_LENGTH,
                device,
            )?
        } else {
            cond
        };
        Ok((cond, Some(uncond)))
    }

    /// SDXL's pooled embeddings and time ids for the batch (`None` for SD 1.x/2.x).
    fn added_conditions(
        &self,
        cond: &Conditioning,
        uncond: Option<&Conditioning>,
        n: usize,
        width: u32,
        height: u32,
        req: &Request,
    ) -> Result<Option<AddedConditions>, PipelineError> {
        let Some(pooled) = &cond.pooled else {
            return Ok(None);
        };
        let (h, w) = (height as f32, width as f32);
        // original_size + crops_coords_top_left + (target_size | aesthetic score), (h, w) order.
        let ids = |score: f32| {
            if self.requires_aesthetics_score {
                vec![h, w, 0.0, 0.0, score]
            } else {
                vec![h, w, 0.0, 0.0, h, w]
            }
        };
        let mut time_ids = Vec::new();
        let mut embeds = Vec::new();
        if let Some(u) = uncond {
            let up = u.pooled.clone().ok_or_else(|| {
                PipelineError::Internal("negative conditioning without pooled embeddings".into())
            })?;
            embeds.push(repeat_batch(up, n));
            time_ids.extend(std::iter::repeat_n(ids(req.negative_aesthetic_score), n));
        }
        embeds.push(repeat_batch(pooled.clone(), n));
        time_ids.extend(std::iter::repeat_n(ids(req.aesthetic_score), n));
        Ok(Some(AddedConditions {
            text_embeds: Tensor::cat(embeds, 0),
            time_ids,
        }))
    }
}

/// `[uncond × n, cond × n]` (or `cond × n` without guidance), as diffusers batches them.
fn batch_context(cond: &Conditioning, uncond: Option<&Conditioning>, n: usize) -> Tensor<3> {
    let c = repeat_batch(cond.embeds.clone(), n);
    match uncond {
        Some(u) => Tensor::cat(vec![repeat_batch(u.embeds.clone(), n), c], 0),
        None => c,
    }
}

/// Waits until the device has computed `latents` (reads them back: 4 values per latent pixel).
async fn step_done(latents: &Tensor<4>) -> Result<(), PipelineError> {
    latents
        .clone()
        .into_data_async()
        .await
        .map(|_| ())
        .map_err(|e| readback_failed("waiting for a step", e.is_device_poisoned(), e.reason()))
}

/// A failed read from the device: [`PipelineError::DeviceLost`] when the device is gone (Burn
/// reports it as poisoned), else an internal error.
fn readback_failed(what: &str, poisoned: bool, reason: &str) -> PipelineError {
    if poisoned {
        PipelineError::DeviceLost(reason.to_owned())
    } else {
        PipelineError::Internal(format!("{what}: {reason}"))
    }
}
