//! A diffusers repository: `model_index.json` plus one folder per component
//! (`text_encoder`, `text_encoder_2`, `tokenizer`, `tokenizer_2`, `unet`, `vae`, `scheduler`).
//! Which weight files make a component: the `fp16` variant when asked for and present, else the
//! plain files; a single `*.safetensors` or shards listed by a `*.safetensors.index.json`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::WeightsError;

/// Where a repository lives, from a `model_name` as users write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A local directory.
    Dir(std::path::PathBuf),
    /// A Hugging Face id `owner/name`, optionally `@revision`.
    Hub { id: String, revision: String },
    /// The base URL of a folder laid out like a diffusers repository.
    Url(String),
}

impl RepoLocation {
    /// `./path`, `/path` or an existing directory → `Dir`; `http(s)://…` → `Url`; `owner/name`
    /// (letters, digits, `-_.`, one slash, optional `@rev`) → `Hub`.
    pub fn parse(model_name: &str) -> Result<Self, WeightsError> {
        let s = model_name.trim();
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(RepoLocation::Url(s.trim_end_matches('/').to_owned()));
        }
        let path = std::path::Path::new(s);
        if s.starts_with('/')
            || s.starts_with("./")
            || s.starts_with("../")
            || s.starts_with('~')
            || path.is_dir()
        {
            return Ok(RepoLocation::Dir(path.to_path_buf()));
        }
        Self::parse_hub_id(s)
    }

    /// `owner/name[@revision]` → `Hub`, and nothing else (a server that takes no local paths).
    pub fn parse_hub_id(model_name: &str) -> Result<Self, WeightsError> {
        let s = model_name.trim();
        let (id, revision) = match s.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, rev),
            _ => (s, "main"),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match id.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) && !name.contains('/') => {
                super::names::revision(revision)?;
                Ok(RepoLocation::Hub {
                    id: id.to_owned(),
                    revision: revision.to_owned(),
                })
            }
            _ => Err(WeightsError::Config(format!(
                "model {model_name:?} is neither a local directory, an http(s) URL nor a Hugging Face id (owner/name)"
            ))),
        }
    }
}

/// `model_index.json`: the pipeline class and, per component, `[library, class]` (or nulls).
#[derive(Debug, Clone)]
pub struct ModelIndex {
    pub class_name: String,
    pub components: BTreeMap<String, Option<(String, String)>>,
    /// Everything else (`force_zeros_for_empty_prompt`, `requires_aesthetics_score`, …).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ModelIndex {
    pub fn from_json(json: &str) -> Result<Self, WeightsError> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
            .map_err(|e| WeightsError::Config(format!("model_index.json: {e}")))?;
        let class_name = map
            .get("_class_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| WeightsError::Config("model_index.json has no _class_name".into()))?
            .to_owned();
        let mut components = BTreeMap::new();
        let mut extra = serde_json::Map::new();
        for (k, v) in map {
            if k.starts_with('_') {
                continue;
            }
            match &v {
                serde_json::Value::Array(pair) if pair.len() == 2 => {
                    let lib = pair[0].as_str().map(str::to_owned);
                    let class = pair[1].as_str().map(str::to_owned);
                    components.insert(k, lib.zip(class));
                }
                _ => {
                    extra.insert(k, v);
                }
            }
        }
        Ok(ModelIndex {
            class_name,
            components,
            extra,
        })
    }

    /// Whether the repository has this component (not null in the index).
    pub fn has(&self, component: &str) -> bool {
        matches!(self.components.get(component), Some(Some(_)))
    }
}

/// The `weight_map` of a sharded checkpoint's index.
#[derive(Debug, Deserialize)]
pub struct ShardIndex {
    pub weight_map: BTreeMap<String, String>,
}

impl ShardIndex {
    /// The shard files, each once, in order.
    pub fn files(&self) -> Vec<String> {
        let mut files: Vec<String> = self.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        files
    }
}

/// diffusers' `_add_variant`: the variant goes before the last extension
/// (`model.safetensors` → `model.fp16.safetensors`,
/// `….safetensors.index.json` → `….safetensors.index.fp16.json`).
pub fn add_variant(file: &str, variant: Option<&str>) -> String {
    match (variant, file.rsplit_once('.')) {
        (Some(v), Some((stem, ext))) => format!("{stem}.{v}.{ext}"),
        _ => file.to_owned(),
    }
}

/// The weight file names of a component, most preferred first: for the variant (if any) and then
/// the plain files, the single file, then the shard index.
pub fn weight_candidates(component: &str, variant: Option<&str>) -> Vec<String> {
    let stem = if component.starts_with("text_encoder") {
        "model"
    } else {
        "diffusion_pytorch_model"
    };
    let single = format!("{stem}.safetensors");
    let index = format!("{stem}.safetensors.index.json");
    let mut out = Vec::new();
    for v in variant.into_iter().map(Some).chain([None]) {
        out.push(format!("{component}/{}", add_variant(&single, v)));
        out.push(format!("{component}/{}", add_variant(&index, v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_told_apart() {
        assert_eq!(
            RepoLocation::parse("diffusers/stable-diffusion-xl-1.0-inpainting-0.1").unwrap(),
            RepoLocation::Hub {
                id: "diffusers/stable-diffusion-xl-1.0-inpainting-0.1".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            RepoLocation::parse("runwayml/stable-diffusion-inpainting@fp16").unwrap(),
            RepoLocation::Hub {
                id: "runwayml/stable-diffusion-inpainting".into(),
                revision: "fp16".into()
            }
        );
        assert_eq!(
            RepoLocation::parse("https://x.test/models/sd/").unwrap(),
            RepoLocation::Url("https://x.test/models/sd".into())
        );
        assert!(matches!(
            RepoLocation::parse("/tmp/model").unwrap(),
            RepoLocation::Dir(_)
        ));
        assert!(matches!(
            RepoLocation::parse("./model").unwrap(),
            RepoLocation::Dir(_)
        ));
        for bad in [
            "just-a-name",
            "a/b/c",
            "a b/c",
            "",
            "a/b@../../x",
            "a/b@/etc",
            "a/..",
        ] {
            assert!(RepoLocation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn candidates_prefer_the_variant_then_single_files_then_shards() {
        assert_eq!(
            weight_candidates("unet", Some("fp16")),
            [
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
                "unet/diffusion_pytorch_model.safetensors",
                "unet/diffusion_pytorch_model.safetensors.index.json",
            ]
        );
        assert_eq!(
            weight_candidates("text_encoder_2", None),
            [
                "text_encoder_2/model.safetensors",
                "text_encoder_2/model.safetensors.index.json"
            ]
        );
    }

    #[test]
    fn model_index_lists_components_and_flags() {
        let idx = ModelIndex::from_json(
            r#"{"_class_name":"StableDiffusionXLInpaintPipeline","_diffusers_version":"0.42.1",
                "unet":["diffusers","UNet2DConditionModel"],"safety_checker":[null,null],
                "force_zeros_for_empty_prompt":true}"#,
        )
        .unwrap();
        assert!(idx.has("unet"));
        assert!(!idx.has("safety_checker"));
        assert!(!idx.has("vae"));
        assert_eq!(idx.extra["force_zeros_for_empty_prompt"], true);
    }
}
