//! Loading a component's weights from a repository (native): pick the files (variant, single or
//! sharded), fetch them into the cache, stream each into the device store.

use burn::tensor::Device;

use super::WeightsError;
use super::hub::RepoFiles;
use super::repo::{ShardIndex, weight_candidates};
use super::store::{Precision, Weights};

/// The files a component's weights were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub files: Vec<String>,
    /// Whether the requested variant was found (`false`: the plain files were used instead).
    pub variant_used: bool,
}

/// Reads `{component}/config.json`.
pub async fn config_json(files: &RepoFiles, component: &str) -> Result<String, WeightsError> {
    let rel = format!("{component}/config.json");
    files
        .text(&rel)
        .await?
        .ok_or_else(|| WeightsError::Config(format!("the repository has no {rel}")))
}

/// Streams a component's weights onto `device`, preferring `variant` (e.g. `fp16`).
pub async fn load_weights(
    files: &RepoFiles,
    component: &str,
    variant: Option<&str>,
    device: &Device,
    precision: Precision,
) -> Result<(Weights, Loaded), WeightsError> {
    for candidate in weight_candidates(component, variant) {
        let Some(path) = files.get(&candidate).await? else {
            continue;
        };
        let variant_used = variant.is_some_and(|v| candidate.contains(&format!(".{v}.")));
        let mut shards = Vec::new();
        if candidate.ends_with(".json") {
            let text = std::fs::read_to_string(&path).map_err(|source| WeightsError::Io {
                file: path.display().to_string(),
                source,
            })?;
            let index: ShardIndex = serde_json::from_str(&text).map_err(|e| {
                WeightsError::corrupt(&candidate, format!("not a shard index: {e}"))
            })?;
            for shard in index.files() {
                let rel = format!("{component}/{shard}");
                let p = files.get(&rel).await?.ok_or_else(|| {
                    WeightsError::corrupt(
                        &candidate,
                        format!("lists shard {shard}, which the repository does not have"),
                    )
                })?;
                shards.push((rel, p));
            }
        } else {
            shards.push((candidate.clone(), path));
        }
        let mut weights = Weights::new(device, precision, candidate.clone());
        for (rel, p) in &shards {
            let f = std::fs::File::open(p).map_err(|source| WeightsError::Io {
                file: rel.clone(),
                source,
            })?;
            weights.read_safetensors(std::io::BufReader::with_capacity(1 << 20, f), rel)?;
        }
        return Ok((
            weights,
            Loaded {
                files: shards.into_iter().map(|(r, _)| r).collect(),
                variant_used,
            },
        ));
    }
    Err(WeightsError::Config(format!(
        "the repository has no safetensors weights for {component} (looked for {})",
        weight_candidates(component, variant).join(", ")
    )))
}
