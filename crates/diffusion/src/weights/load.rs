//! Loading a component's weights from a repository (natively or in a browser, through
//! [`RepoSource`]): pick the files (variant, single or sharded), stream each into the device store.

use burn::tensor::Device;

use super::WeightsError;
use super::repo::{ShardIndex, weight_candidates};
use super::safetensors::{Header, TensorInfo};
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

/// A component's weight files as the repository has them: the variant's or the plain ones, a
/// single file or the shards its index lists — each with its header, read before any data.
#[derive(Debug, Clone)]
pub struct ComponentFiles {
    pub component: String,
    /// The file the weights were found by: the single file, or the shards' index.
    pub source: String,
    /// Paths in the repository, in load order, with their headers.
    pub files: Vec<(String, Header)>,
    /// Whether the requested variant was found (`false`: the plain files were used instead).
    pub variant_used: bool,
}

impl ComponentFiles {
    /// How many values its tensors hold.
    pub fn numel(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|(_, h)| &h.tensors)
            .map(|t| t.numel() as u64)
            .sum()
    }

    /// The tensor with the most elements, and the file it is in.
    pub fn largest(&self) -> Option<(&str, &TensorInfo)> {
        self.files
            .iter()
            .filter_map(|(rel, h)| Some((rel.as_str(), h.largest()?)))
            .max_by_key(|(_, t)| t.numel())
    }
}

/// Finds a component's weight files, preferring `variant` (e.g. `fp16`), and reads their
/// headers.
pub async fn resolve_weights(
    files: &impl RepoSource,
    component: &str,
    variant: Option<&str>,
) -> Result<ComponentFiles, WeightsError> {
    for candidate in weight_candidates(component, variant) {
        let variant_used = variant.is_some_and(|v| candidate.contains(&format!(".{v}.")));
        let found = |files| ComponentFiles {
            component: component.to_owned(),
            source: candidate.clone(),
            files,
            variant_used,
        };
        if candidate.ends_with(".json") {
            let Some(text) = files.text(&candidate).await? else {
                continue;
            };
            let index: ShardIndex = serde_json::from_str(&text).map_err(|e| {
                WeightsError::corrupt(&candidate, format!("not a shard index: {e}"))
            })?;
            let mut shards = Vec::new();
            for shard in index.files() {
                // The index is the repository's to write: a shard is a file beside it, no path.
                let shard = super::names::file_name(&shard)
                    .map_err(|e| WeightsError::corrupt(&candidate, e.to_string()))?;
                let rel = format!("{component}/{shard}");
                let Some(header) = files.safetensors_header(&rel).await? else {
                    return Err(WeightsError::corrupt(
                        &candidate,
                        format!("lists shard {shard}, which the repository does not have"),
                    ));
                };
                shards.push((rel, header));
            }
            return Ok(found(shards));
        }
        if let Some(header) = files.safetensors_header(&candidate).await? {
            return Ok(found(vec![(candidate.clone(), header)]));
        }
    }
    Err(WeightsError::Config(format!(
        "the repository has no safetensors weights for {component} (looked for {})",
        weight_candidates(component, variant).join(", ")
    )))
}

/// Streams the files [`resolve_weights`] found onto `device`, tensor by tensor.
pub async fn load_resolved(
    files: &impl RepoSource,
    resolved: &ComponentFiles,
    device: &Device,
    precision: Precision,
) -> Result<Weights, WeightsError> {
    let mut weights = Weights::new(device, precision, resolved.source.clone());
    for (rel, _) in &resolved.files {
        if !files.read_safetensors(rel, &mut weights).await? {
            return Err(WeightsError::Config(format!(
                "{rel} was in the repository and is gone"
            )));
        }
    }
    Ok(weights)
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
    let resolved = resolve_weights(files, component, variant).await?;
    let weights = load_resolved(files, &resolved, device, precision).await?;
    Ok((
        weights,
        Loaded {
            files: resolved.files.into_iter().map(|(rel, _)| rel).collect(),
            variant_used: resolved.variant_used,
        },
    ))
}
