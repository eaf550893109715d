//! Where a diffusers repository's files come from: natively the hub cache ([`RepoFiles`]: a local
//! directory, a Hugging Face id or a base URL), in a browser `fetch` (`crate::web::UrlRepo`). The
//! loaders (`weights::load`, `Pipeline::load`) are written once against this trait.

use super::WeightsError;
#[cfg(not(target_arch = "wasm32"))]
use super::hub::RepoFiles;
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
}
