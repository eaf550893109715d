//! Loading a whole pipeline from a diffusers repository, component by component, each streamed
//! onto the device: natively from a local directory, a Hugging Face id or a base URL (`RepoFiles`),
//! in a browser over `fetch` (`crate::weights::url_repo::UrlRepo`).

use burn::tensor::Device;

use super::text::{TextEncoder, TextEncoders};
use super::{Pipeline, PipelineError};
use crate::device::preferred_precision;
use crate::models::clip::{ClipTextConfig, ClipTextModel, IGNORABLE};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::weights::WeightsError;
use crate::weights::load::{ComponentFiles, config_json, load_resolved, resolve_weights};
use crate::weights::repo::ModelIndex;
use crate::weights::source::RepoSource;
use crate::weights::store::Precision;

/// How to load: precision (`None`: the device's preferred one) and weight variant.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub precision: Option<Precision>,
    /// e.g. `fp16`: prefer `*.fp16.safetensors` where the repository has them.
    pub variant: Option<String>,
    /// The largest buffer the device binds, in bytes (a GPU's limit): a model with a larger
    /// tensor is refused by [`Pipeline::plan`], before anything is loaded.
    pub buffer_limit: Option<u64>,
    /// The device's memory in bytes, where known: a call whose planned peak exceeds it is refused
    /// before it starts ([`super::memory::plan`]).
    pub memory_limit: Option<u64>,
}

fn config_err(what: &str, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Weights(WeightsError::Config(format!("{what}: {e}")))
}

async fn tokenizer(files: &impl RepoSource, dir: &str) -> Result<ClipTokenizer, PipelineError> {
    let text = |name: &str| {
        let rel = format!("{dir}/{name}");
        async move { files.text(&rel).await }
    };
    let config = text("tokenizer_config.json").await?;
    let special = text("special_tokens_map.json").await?;
    let built = match (text("vocab.json").await?, text("merges.txt").await?) {
        (Some(vocab), Some(merges)) => {
            ClipTokenizer::from_files(&vocab, &merges, config.as_deref(), special.as_deref())
        }
        _ => match text("tokenizer.json").await? {
            Some(json) => {
                ClipTokenizer::from_tokenizer_json(&json, config.as_deref(), special.as_deref())
            }
            None => {
                return Err(config_err(
                    dir,
                    "neither vocab.json + merges.txt nor tokenizer.json is in the repository",
                ));
            }
        },
    };
    built.map_err(|e| config_err(dir, e))
}

async fn text_encoder(
    files: &impl RepoSource,
    weights: &ComponentFiles,
    tokenizer_dir: &str,
    device: &Device,
    precision: Precision,
) -> Result<TextEncoder, PipelineError> {
    let dir = &weights.component;
    let config = ClipTextConfig::from_json(&config_json(files, dir).await?)?;
    let mut w = load_resolved(files, weights, device, precision).await?;
    let model = ClipTextModel::load(config, &mut w)?;
    w.finish(&IGNORABLE)?;
    Ok(TextEncoder {
        tokenizer: tokenizer(files, tokenizer_dir).await?,
        model,
    })
}

/// `sample_size` of a UNet config: an integer or `[height, width]`.
fn sample_size(config: &UNetConfig) -> Option<(u32, u32)> {
    match config.sample_size.as_ref()? {
        serde_json::Value::Number(n) => n.as_u64().map(|s| (s as u32, s as u32)),
        serde_json::Value::Array(a) if a.len() == 2 => {
            let h = a[0].as_u64()? as u32;
            let w = a[1].as_u64()? as u32;
            Some((w, h))
        }
        _ => None,
    }
}

/// What loading a model will read, found before any weights are: the model index, and each
/// component's weight files with their headers — so the whole download's size and the largest
/// tensor are known up front ([`LoadPlan::check_buffer_limit`]).
#[derive(Debug, Clone)]
pub struct LoadPlan {
    index: ModelIndex,
    pub text_encoder: ComponentFiles,
    /// SDXL's second text encoder.
    pub text_encoder_2: Option<ComponentFiles>,
    pub unet: ComponentFiles,
    pub vae: ComponentFiles,
}

impl LoadPlan {
    /// Every component's weight files.
    pub fn components(&self) -> impl Iterator<Item = &ComponentFiles> {
        [&self.text_encoder]
            .into_iter()
            .chain(&self.text_encoder_2)
            .chain([&self.unet, &self.vae])
    }

    /// The weight files and their sizes.
    pub fn files(&self) -> Vec<(&str, u64)> {
        self.components()
            .flat_map(|c| c.files.iter().map(|(rel, h)| (rel.as_str(), h.file_size)))
            .collect()
    }

    /// Refuses a model one of whose tensors, in the precision it will be loaded in, is larger
    /// than `limit` bytes — a device's largest storage buffer binding: a model that cannot run
    /// there is told before anything downloads, not found out by a failed allocation. The VAE
    /// is counted in f32 (it is upcast when its config asks for it).
    pub fn check_buffer_limit(
        &self,
        limit: u64,
        precision: Precision,
    ) -> Result<(), PipelineError> {
        for component in self.components() {
            let Some((rel, tensor)) = component.largest() else {
                continue;
            };
            let element = if component.component == "vae" {
                4
            } else {
                precision.dtype().size() as u64
            };
            let bytes = tensor.numel() as u64 * element;
            if bytes > limit {
                return Err(PipelineError::Weights(WeightsError::Config(format!(
                    "{rel}: tensor {:?} {:?} needs {:.1} MB in one GPU buffer and this device binds at most {:.1} MB: the model cannot run on this GPU{}",
                    tensor.name,
                    tensor.shape,
                    bytes as f64 / 1e6,
                    limit as f64 / 1e6,
                    if element == 4 {
                        " in f32 (one with shader-f16 needs half)"
                    } else {
                        ""
                    }
                ))));
            }
        }
        Ok(())
    }
}

impl Pipeline {
    /// Finds what [`Pipeline::load_planned`] will read: the model index, checked for the
    /// components the pipelines need, and every component's weight files with their headers,
    /// checked against [`LoadOptions::buffer_limit`].
    pub async fn plan(
        files: &impl RepoSource,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<LoadPlan, PipelineError> {
        let index =
            ModelIndex::from_json(&files.text("model_index.json").await?.ok_or_else(|| {
                config_err(
                    "model_index.json",
                    "not in the repository: is this a diffusers model folder?",
                )
            })?)?;
        for needed in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
            if !index.has(needed) {
                return Err(PipelineError::input(
                    "model_name",
                    format!(
                        "{} ({}) has no {needed}: the pipelines need text_encoder, tokenizer, unet, vae and scheduler",
                        index.class_name, "model_index.json"
                    ),
                ));
            }
        }
        let variant = options.variant.as_deref();
        let text_encoder = resolve_weights(files, "text_encoder", variant).await?;
        let text_encoder_2 = if index.has("text_encoder_2") {
            Some(resolve_weights(files, "text_encoder_2", variant).await?)
        } else {
            None
        };
        let plan = LoadPlan {
            text_encoder,
            text_encoder_2,
            unet: resolve_weights(files, "unet", variant).await?,
            vae: resolve_weights(files, "vae", variant).await?,
            index,
        };
        if let Some(limit) = options.buffer_limit {
            let precision = options
                .precision
                .unwrap_or_else(|| preferred_precision(device));
            plan.check_buffer_limit(limit, precision)?;
        }
        Ok(plan)
    }

    /// Loads every component the pipelines need. `log` hears one line per component.
    pub async fn load(
        files: &impl RepoSource,
        device: &Device,
        options: &LoadOptions,
        log: &mut dyn FnMut(String),
    ) -> Result<Pipeline, PipelineError> {
        let plan = Self::plan(files, device, options).await?;
        Self::load_planned(files, &plan, device, options, log).await
    }

    /// Loads the components `plan` found, streaming each file onto `device`.
    pub async fn load_planned(
        files: &impl RepoSource,
        plan: &LoadPlan,
        device: &Device,
        options: &LoadOptions,
        log: &mut dyn FnMut(String),
    ) -> Result<Pipeline, PipelineError> {
        let index = &plan.index;
        let precision = options
            .precision
            .unwrap_or_else(|| preferred_precision(device));
        let sdxl = plan.text_encoder_2.is_some();
        let flag = |key: &str, default: bool| {
            index
                .extra
                .get(key)
                .and_then(|v| v.as_bool())
                .unwrap_or(default)
        };

        log("loading the text encoder".into());
        let first = text_encoder(files, &plan.text_encoder, "tokenizer", device, precision).await?;
        let second = match &plan.text_encoder_2 {
            Some(weights) => {
                log("loading the second text encoder".into());
                let dir = if index.has("tokenizer_2") {
                    "tokenizer_2"
                } else {
                    "tokenizer"
                };
                Some(text_encoder(files, weights, dir, device, precision).await?)
            }
            None => None,
        };

        log("loading the UNet".into());
        let unet_config = UNetConfig::from_json(&config_json(files, "unet").await?)?;
        let mut w = load_resolved(files, &plan.unet, device, precision).await?;
        let unet = UNet2DConditionModel::load(&unet_config, &mut w)?;
        w.finish(&[])?;

        log("loading the VAE".into());
        let vae_config = VaeConfig::from_json(&config_json(files, "vae").await?)?;
        let vae_precision = vae_config.precision(precision);
        let mut w = load_resolved(files, &plan.vae, device, vae_precision).await?;
        let vae = AutoencoderKL::load(vae_config, &mut w)?;
        w.finish(&[])?;

        let scheduler_config = SchedulerConfig::from_json_str(
            &files
                .text("scheduler/scheduler_config.json")
                .await?
                .ok_or_else(|| config_err("scheduler", "no scheduler/scheduler_config.json"))?,
        )
        .map_err(|e| config_err("scheduler/scheduler_config.json", e))?;

        let value = |p: Precision| p.dtype().size() as u64;
        let weights_bytes = plan
            .components()
            .map(|c| {
                let precision = if c.component == "vae" {
                    vae_precision
                } else {
                    precision
                };
                c.numel() * value(precision)
            })
            .sum();
        let scale = vae.config.scale_factor() as u32;
        let (sw, sh) =
            sample_size(&unet_config).unwrap_or(if sdxl { (128, 128) } else { (64, 64) });
        Ok(Pipeline {
            device: device.clone(),
            class_name: index.class_name.clone(),
            text: TextEncoders {
                first,
                second,
                force_zeros_for_empty_prompt: flag("force_zeros_for_empty_prompt", sdxl),
            },
            unet,
            vae,
            scheduler_config,
            requires_aesthetics_score: flag("requires_aesthetics_score", false),
            default_size: (sw * scale, sh * scale),
            precision,
            weights_bytes,
            limits: super::memory::DeviceLimits {
                buffer: options.buffer_limit,
                memory: options.memory_limit,
            },
        })
    }
}
