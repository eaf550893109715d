//! Weights: diffusers repositories (local directories, Hugging Face ids, base URLs), safetensors
//! read as a stream one tensor at a time, converted to the engine's float type.
//!
//! Natively a repository is read through the Hugging Face cache ([`hub`]); in a browser over
//! `fetch` ([`url_repo`], [`fetch`]) through the origin's model cache ([`cache`], one loader at a
//! time: [`lock`]). Both report their downloads in one vocabulary ([`progress`]).

#[cfg(target_arch = "wasm32")]
pub mod cache;
pub mod convert;
#[cfg(target_arch = "wasm32")]
pub mod fetch;
#[cfg(not(target_arch = "wasm32"))]
pub mod hub;
#[cfg(target_arch = "wasm32")]
mod js;
pub mod load;
#[cfg(target_arch = "wasm32")]
pub mod lock;
pub mod names;
pub mod progress;
pub mod repo;
pub mod safetensors;
pub mod source;
pub mod store;
#[cfg(target_arch = "wasm32")]
pub mod url_repo;

/// Parses a component's diffusers `config.json` as diffusers reads it: keys it does not know are
/// ignored (real configs carry training settings, e.g. EMA's), and `null` for a setting means it
/// is not set — its default (`"upcast_attention": null` in SDXL's UNet is `false`) — except for
/// the `none_keys`, whose `None` diffusers reads as a choice of its own (no mid block, …).
/// `what` names the file in errors (`unet config.json`).
pub fn parse_config<T: serde::de::DeserializeOwned>(
    json: &str,
    what: &str,
    none_keys: &[&str],
) -> Result<T, WeightsError> {
    let bad = |e: serde_json::Error| WeightsError::Config(format!("{what}: {e}"));
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(bad)?;
    if let Some(map) = value.as_object_mut() {
        map.retain(|key, v| !v.is_null() || none_keys.contains(&key.as_str()));
    }
    serde_json::from_value(value).map_err(bad)
}

/// What can go wrong with weights. Every variant names the file, and the tensor where there is one.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{file}: {message}")]
    Corrupt { file: String, message: String },
    #[error(
        "{file}: tensor {tensor:?} has dtype {dtype}, which is not supported (F32, F16 and BF16 are)"
    )]
    UnsupportedDtype {
        file: String,
        tensor: String,
        dtype: String,
    },
    #[error("{file}: tensor {tensor:?} is missing (expected shape {expected:?})")]
    Missing {
        file: String,
        tensor: String,
        expected: Vec<usize>,
    },
    #[error("{file}: tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        file: String,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{file}: unexpected tensors that no part of the model uses: {tensors}")]
    Unexpected { file: String, tensors: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{url}: {message}")]
    Network { url: String, message: String },
}

impl WeightsError {
    pub fn corrupt(file: &str, message: impl Into<String>) -> Self {
        WeightsError::Corrupt {
            file: file.to_owned(),
            message: message.into(),
        }
    }
}
