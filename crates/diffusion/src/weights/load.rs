//! Loading a component's weights from a repository (natively or in a browser, through
//! [`RepoSource`]): pick the files (variant, single or sharded), stream each into the device store.

use burn::tensor::Device;

use super::WeightsError;
use super::repo::{ShardIndex, weight_candidates};
use super::source::RepoSource;
use super::store::{Precision, Weights};

/// The files a component's weights were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub files: Vec<String>,
    /// Whether the requested variant was found (`false`: the plain files were used instead).
    pub variant_used: bool,
}

/// Reads `{component}/config.json`.
pub async fn config_json(files: &impl RepoSource, component: &str) -> Result<String, WeightsError> {
    let rel = format!("{component}/config.json");
    files
        .text(&rel)
        .await?
        .ok_or_else(|| WeightsError::Config(format!("the repository has no {rel}")))
}

/// Streams a component's weights onto `device`, preferring `variant` (e.g. `fp16`): a single
/// file or the shards its index lists, each read as it arrives.
pub async fn load_weights(
    files: &impl RepoSource,
    component: &str,
    variant: Option<&str>,
    device: &Device,
    precision: Precision,
) -> Result<(Weights, Loaded), WeightsError> {
    for candidate in weight_candidates(component, variant) {
        let variant_used = variant.is_some_and(|v| candidate.contains(&format!(".{v}.")));
        let mut weights = Weights::new(device, precision, candidate.clone());
        if candidate.ends_with(".json") {
            let Some(text) = files.text(&candidate).await? else {
                continue;
            };
            let index: ShardIndex = serde_json::from_str(&text).map_err(|e| {
                WeightsError::corrupt(&candidate, format!("not a shard index: {e}"))
            })?;
            let mut read = Vec::new();
            for shard in index.files() {
                let rel = format!("{component}/{shard}");
                if !files.read_safetensors(&rel, &mut weights).await? {
                    return Err(WeightsError::corrupt(
                        &candidate,
                        format!("lists shard {shard}, which the repository does not have"),
                    ));
                }
                read.push(rel);
            }
            return Ok((
                weights,
                Loaded {
                    files: read,
                    variant_used,
                },
            ));
        }
        if files.read_safetensors(&candidate, &mut weights).await? {
            return Ok((
                weights,
                Loaded {
                    files: vec![candidate],
                    variant_used,
                },
            ));
        }
    }
    Err(WeightsError::Config(format!(
        "the repository has no safetensors weights for {component} (looked for {})",
        weight_candidates(component, variant).join(", ")
    )))
}
