//! Where a diffusers repository's files come from: natively the hub cache ([`RepoFiles`]: a local
//! directory, a Hugging Face id or a base URL), in a browser `fetch` (`crate::weights::url_repo::UrlRepo`). The
//! loaders (`weights::load`, `Pipeline::load`) are written once against this trait.

use super::WeightsError;
#[cfg(not(target_arch = "wasm32"))]
use super::hub::RepoFiles;
use super::safetensors::Header;
use super::store::Weights;

/// The files of one repository, by path relative to its root (`unet/config.json`).
// Used through generics only: the futures' auto traits are those of the implementation (Send
// natively, where the server spawns loads on tokio; not in a browser, where nothing is).
#[allow(async_fn_in_trait)]
pub trait RepoSource {
    /// A text file (configs, indexes), or `None` if the repository has no such file.
    async fn text(&self, rel: &str) -> Result<Option<String>, WeightsError>;

    /// Streams the safetensors file `rel` into `weights`, one tensor at a time; `false` if the
    /// repository has no such file.
    async fn read_safetensors(
        &self,
        rel: &str,
        weights: &mut Weights,
    ) -> Result<bool, WeightsError>;

    /// The header of the safetensors file `rel` — its tensors' names, dtypes and shapes, and
    /// the file's size — read without its data where the source can (a browser fetches the
    /// first bytes only); `None` if the repository has no such file.
    async fn safetensors_header(&self, rel: &str) -> Result<Option<Header>, WeightsError>;
}

#[cfg(not(target_arch = "wasm32"))]
impl RepoSource for RepoFiles {
    async fn text(&self, rel: &str) -> Result<Option<String>, WeightsError> {
        RepoFiles::text(self, rel).await
    }

    async fn read_safetensors(
        &self,
        rel: &str,
        weights: &mut Weights,
    ) -> Result<bool, WeightsError> {
        let Some(path) = self.get(rel).await? else {
            return Ok(false);
        };
        let file = std::fs::File::open(&path).map_err(|source| WeightsError::Io {
            file: rel.to_owned(),
            source,
        })?;
        weights.read_safetensors(std::io::BufReader::with_capacity(1 << 20, file), rel)?;
        Ok(true)
    }

    /// Natively a file is read whole anyway: a Hugging Face file is downloaded into the hub cache
    /// here, and its header read from the disk.
    async fn safetensors_header(&self, rel: &str) -> Result<Option<Header>, WeightsError> {
        use std::io::Read;

        use super::safetensors::{Prefix, read_prefix};

        let Some(path) = self.get(rel).await? else {
            return Ok(None);
        };
        let io = |source| WeightsError::Io {
            file: rel.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut prefix = Vec::new();
        loop {
            match read_prefix(&prefix, rel)? {
                Prefix::Header(mut header) => {
                    header.file_size = size;
                    return Ok(Some(header));
                }
                Prefix::Needs(n) if n <= size && n > prefix.len() as u64 => {
                    let have = prefix.len();
                    prefix.resize(n as usize, 0);
                    file.read_exact(&mut prefix[have..]).map_err(io)?;
                }
                Prefix::Needs(_) => {
                    return Err(WeightsError::corrupt(
                        rel,
                        "the file ends inside its header (truncated?)",
                    ));
                }
            }
        }
    }
}
