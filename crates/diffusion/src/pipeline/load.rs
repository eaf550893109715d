//! Loading a whole pipeline from a diffusers repository, component by component, each streamed
//! onto the device: natively from a local directory, a Hugging Face id or a base URL (`RepoFiles`),
//! in a browser over `fetch` (`crate::web::UrlRepo`).

use burn::tensor::Device;

use super::text::{TextEncoder, TextEncoders};
use super::{Pipeline, PipelineError};
use crate::models::clip::{ClipTextConfig, ClipTextModel, IGNORABLE};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::schedulers::SchedulerConfig;
use crate::tokenizer::ClipTokenizer;
use crate::weights::WeightsError;
use crate::weights::load::{config_json, load_weights};
use crate::weights::repo::ModelIndex;
use crate::weights::source::RepoSource;
use crate::weights::store::{Precision, preferred_precision};

/// How to load: precision (`None`: the device's preferred one) and weight variant.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub precision: Option<Precision>,
    /// e.g. `fp16`: prefer `*.fp16.safetensors` where the repository has them.
    pub variant: Option<String>,
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
    dir: &str,
    tokenizer_dir: &str,
    device: &Device,
    options: &LoadOptions,
    precision: Precision,
) -> Result<TextEncoder, PipelineError> {
    let config = ClipTextConfig::from_json(&config_json(files, dir).await?)?;
    let (mut w, _) =
        load_weights(files, dir, options.variant.as_deref(), device, precision).await?;
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

impl Pipeline {
    /// Loads every component the pipelines need. `log` hears one line per component.
    pub async fn load(
        files: &impl RepoSource,
        device: &Device,
        options: &LoadOptions,
        log: &mut dyn FnMut(String),
    ) -> Result<Pipeline, PipelineError> {
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
        let precision = options
            .precision
            .unwrap_or_else(|| preferred_precision(device));
        let sdxl = index.has("text_encoder_2");
        let flag = |key: &str, default: bool| {
            index
                .extra
                .get(key)
                .and_then(|v| v.as_bool())
                .unwrap_or(default)
        };

        log("loading the text encoder".into());
        let first = text_encoder(
            files,
            "text_encoder",
            "tokenizer",
            device,
            options,
            precision,
        )
        .await?;
        let second = if sdxl {
            log("loading the second text encoder".into());
            let dir = if index.has("tokenizer_2") {
                "tokenizer_2"
            } else {
                "tokenizer"
            };
            Some(text_encoder(files, "text_encoder_2", dir, device, options, precision).await?)
        } else {
            None
        };

        log("loading the UNet".into());
        let unet_config = UNetConfig::from_json(&config_json(files, "unet").await?)?;
        let (mut w, _) =
            load_weights(files, "unet", options.variant.as_deref(), device, precision).await?;
        let unet = UNet2DConditionModel::load(&unet_config, &mut w)?;
        w.finish(&[])?;

        log("loading the VAE".into());
        let vae_config = VaeConfig::from_json(&config_json(files, "vae").await?)?;
        let vae_precision = vae_config.precision(precision);
        let (mut w, _) = load_weights(
            files,
            "vae",
            options.variant.as_deref(),
            device,
            vae_precision,
        )
        .await?;
        let vae = AutoencoderKL::load(vae_config, &mut w)?;
        w.finish(&[])?;

        let scheduler_config = SchedulerConfig::from_json_str(
            &files
                .text("scheduler/scheduler_config.json")
                .await?
                .ok_or_else(|| config_err("scheduler", "no scheduler/scheduler_config.json"))?,
        )
        .map_err(|e| config_err("scheduler/scheduler_config.json", e))?;

        let scale = 1u32 << (vae.config.block_out_channels.len().max(1) - 1);
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
        })
    }
}
