//! Native downloads of repository files into Hugging Face's cache layout, so a model fetched by
//! `huggingface_hub` is found here and the other way round:
//!
//! ```text
//! $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)
//!   models--{owner}--{name}/
//!     refs/{revision}                 the commit the revision pointed to
//!     blobs/{etag}                    file contents (the sha256 of LFS files)
//!     snapshots/{commit}/{path}       → ../../blobs/{etag}
//!     .no_exist/{commit}/{path}       this file is known not to exist
//! ```
//!
//! Honours `HF_ENDPOINT` (default https://huggingface.co), `HF_TOKEN`, `HF_HUB_OFFLINE=1`.
//! Downloads stream to disk (`blobs/{etag}.incomplete`, resumed with a range request), so memory
//! use does not grow with file size; a size mismatch is an error, not a cached file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::WeightsError;
use super::names;
use super::progress::{Fetch, Observer};
use super::repo::RepoLocation;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How to reach repositories and where to cache them.
#[derive(Clone)]
pub struct HubOptions {
    pub endpoint: String,
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
}

impl HubOptions {
    /// From `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN`, `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let cache_dir = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| env("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .unwrap_or_else(|| home.join(".cache/huggingface/hub"));
        HubOptions {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
                .trim_end_matches('/')
                .to_owned(),
            cache_dir,
            token: env("HF_TOKEN").or_else(|| env("HUGGING_FACE_HUB_TOKEN")),
            offline: matches!(
                env("HF_HUB_OFFLINE").as_deref(),
                Some("1" | "true" | "TRUE" | "yes")
            ),
        }
    }
}

/// Files of one repository, fetched on demand into the cache.
pub struct RepoFiles {
    location: RepoLocation,
    options: HubOptions,
    http: reqwest::Client,
    progress: Observer,
}

fn io_err(file: &Path, source: std::io::Error) -> WeightsError {
    WeightsError::Io {
        file: file.display().to_string(),
        source,
    }
}

fn net_err(url: &str, e: impl std::fmt::Display) -> WeightsError {
    WeightsError::Network {
        url: url.to_owned(),
        message: e.to_string(),
    }
}

impl RepoFiles {
    pub fn new(
        location: RepoLocation,
        options: HubOptions,
        progress: Observer,
    ) -> Result<Self, WeightsError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .user_agent(concat!("fresco/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| net_err(&options.endpoint, e))?;
        Ok(RepoFiles {
            location,
            options,
            http,
            progress,
        })
    }

    /// Fetches through `http` instead of a client of its own: a server passes one that reaches
    /// only public addresses for the repositories its callers name.
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    pub fn location(&self) -> &RepoLocation {
        &self.location
    }

    /// The cache folder of this repository.
    fn repo_dir(&self) -> PathBuf {
        match &self.location {
            RepoLocation::Hub { id, .. } => self
                .options
                .cache_dir
                .join(format!("models--{}", id.replace('/', "--"))),
            RepoLocation::Url(url) => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                url.hash(&mut h);
                self.options
                    .cache_dir
                    .join(format!("models--fresco-url--{:016x}", h.finish()))
            }
            RepoLocation::Dir(d) => d.clone(),
        }
    }

    fn revision(&self) -> &str {
        match &self.location {
            RepoLocation::Hub { revision, .. } => revision,
            _ => "main",
        }
    }

    fn url_of(&self, rel: &str) -> String {
        match &self.location {
            RepoLocation::Hub { id, revision } => {
                format!("{}/{id}/resolve/{revision}/{rel}", self.options.endpoint)
            }
            RepoLocation::Url(base) => format!("{base}/{rel}"),
            RepoLocation::Dir(_) => String::new(),
        }
    }

    /// The local path of `rel` (downloading it when needed), or `None` if the repository has no
    /// such file.
    pub async fn get(&self, rel: &str) -> Result<Option<PathBuf>, WeightsError> {
        // `rel` may come from a repository's own files (a shard index): it must name a file
        // inside the repository, wherever that lives.
        let rel = names::repo_path(rel)?;
        if let RepoLocation::Dir(dir) = &self.location {
            let p = dir.join(rel);
            return Ok(p.is_file().then_some(p));
        }
        let repo = self.repo_dir();
        let revision = names::revision(self.revision())?;
        // A ref file that does not hold a commit (damaged, or not ours) is as good as none.
        let cached_commit = std::fs::read_to_string(repo.join("refs").join(revision))
            .ok()
            .filter(|c| names::commit(c.trim()).is_ok())
            .map(|c| c.trim().to_owned());
        if self.options.offline {
            let Some(commit) = cached_commit else {
                return Err(net_err(
                    &self.url_of(rel),
                    "HF_HUB_OFFLINE is set and this repository is not in the cache",
                ));
            };
            let snap = repo.join("snapshots").join(&commit).join(rel);
            if snap.is_file() {
                return Ok(Some(snap));
            }
            if repo.join(".no_exist").join(&commit).join(rel).exists() {
                return Ok(None);
            }
            return Err(net_err(
                &self.url_of(rel),
                "HF_HUB_OFFLINE is set and this file is not in the cache",
            ));
        }
        // The cache's own paths (its folder, blob names from etags) are not for the caller: a
        // file error names the repository's file.
        self.fetch(rel, &repo, cached_commit)
            .await
            .map_err(|e| match e {
                WeightsError::Io { source, .. } => WeightsError::Io {
                    file: format!("{rel} (in the model cache)"),
                    source,
                },
                other => other,
            })
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.options.token, &self.location) {
            (Some(t), RepoLocation::Hub { .. }) => req.bearer_auth(t),
            _ => req,
        }
    }

    async fn fetch(
        &self,
        rel: &str,
        repo: &Path,
        cached_commit: Option<String>,
    ) -> Result<Option<PathBuf>, WeightsError> {
        let url = self.url_of(rel);
        let head = self
            .authorized(self.http.head(&url))
            .send()
            .await
            .map_err(|e| net_err(&url, e.without_url()))?;
        let status = head.status();
        let header = |name: &str| {
            head.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // The commit names the snapshot folder: a server's header must be a commit, or it is
        // refused (a plain static server sends none, and its files go under the revision).
        let commit = match header("x-repo-commit") {
            Some(c) => names::commit(&c)
                .map_err(|e| net_err(&url, format!("x-repo-commit: {e}")))?
                .to_owned(),
            None => cached_commit.unwrap_or_else(|| self.revision().to_owned()),
        };
        if status == reqwest::StatusCode::NOT_FOUND {
            let marker = inside(repo, repo.join(".no_exist").join(&commit).join(rel))?;
            // Only a hint for offline use: a marker that cannot be written is no error.
            let _ = write_small(&marker, b"");
            return Ok(None);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(net_err(
                &url,
                format!(
                    "{status}: the repository is private or gated; set HF_TOKEN to a token with access"
                ),
            ));
        }
        if !status.is_success() && !status.is_redirection() {
            return Err(net_err(&url, format!("the server answered {status}")));
        }
        let size: Option<u64> = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.parse().ok());
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_owned())
            .filter(|e| !e.is_empty());
        let blob_name = match (etag, &self.location) {
            (Some(etag), _) => names::blob_name(&etag),
            // A plain static server (a bucket, nginx without etags): the file is known by its
            // URL, size and modification time, so a changed file is downloaded again.
            (None, RepoLocation::Url(_)) => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (&url, size, header("last-modified")).hash(&mut h);
                format!("url-{:016x}", h.finish())
            }
            (None, _) => {
                return Err(net_err(
                    &url,
                    "the answer carries no ETag to cache the file by",
                ));
            }
        };

        let blob = inside(repo, repo.join("blobs").join(&blob_name))?;
        let snap = inside(repo, repo.join("snapshots").join(&commit).join(rel))?;
        // A link in place of a blob is not ours: the download's rename replaces it.
        if !std::fs::symlink_metadata(&blob).is_ok_and(|m| m.is_file()) {
            self.download(rel, &url, &blob, size).await?;
        }
        link(&blob, &snap)?;
        if commit != self.revision() {
            let refs = inside(repo, repo.join("refs").join(self.revision()))?;
            write_small(&refs, commit.as_bytes())?;
        }
        Ok(Some(snap))
    }

    async fn download(
        &self,
        rel: &str,
        url: &str,
        blob: &Path,
        size: Option<u64>,
    ) -> Result<(), WeightsError> {
        let dir = blob.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io_err(dir, e))?;
        let partial = blob.with_extension("incomplete");
        // A partial download is resumed only from a file of ours, never through a link.
        if std::fs::symlink_metadata(&partial).is_ok_and(|m| !m.is_file()) {
            unlink(&partial)?;
        }
        let have = tokio::fs::metadata(&partial)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut req = self.authorized(self.http.get(url));
        if have > 0 {
            req = req.header("range", format!("bytes={have}-"));
        }
        let mut res = req
            .send()
            .await
            .map_err(|e| net_err(url, e.without_url()))?;
        let resumed = res.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        if !res.status().is_success() {
            return Err(net_err(
                url,
                format!("the server answered {}", res.status()),
            ));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&partial)
            .await
            .map_err(|e| io_err(&partial, e))?;
        let mut done = if resumed { have } else { 0 };
        (self.progress)(Fetch::Download {
            file: rel,
            total: size,
            from: done,
        });
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| net_err(url, format!("the download broke off: {}", e.without_url())))?
        {
            file.write_all(&chunk)
                .await
                .map_err(|e| io_err(&partial, e))?;
            done += chunk.len() as u64;
            (self.progress)(Fetch::Progress {
                file: rel,
                done,
                total: size,
            });
        }
        file.sync_all().await.map_err(|e| io_err(&partial, e))?;
        if let Some(expected) = size.filter(|&s| s != done) {
            return Err(net_err(
                url,
                format!("got {done} bytes, expected {expected}; run again to resume"),
            ));
        }
        tokio::fs::rename(&partial, blob)
            .await
            .map_err(|e| io_err(blob, e))?;
        (self.progress)(Fetch::Downloaded {
            file: rel,
            bytes: done,
        });
        Ok(())
    }

    /// A text file of the repository (configs, indexes), or `None` if absent.
    pub async fn text(&self, rel: &str) -> Result<Option<String>, WeightsError> {
        match self.get(rel).await? {
            Some(p) => std::fs::read_to_string(&p)
                .map(Some)
                .map_err(|e| io_err(Path::new(rel), e)),
            None => Ok(None),
        }
    }
}

/// `path`, checked to lie under `root` (no `..`, no other root): the last guard between a name
/// from outside and the file system, behind the checks of [`names`].
fn inside(root: &Path, path: PathBuf) -> Result<PathBuf, WeightsError> {
    use std::path::Component;
    let below = path
        .strip_prefix(root)
        .ok()
        .filter(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))));
    match below {
        Some(_) => Ok(path),
        None => Err(WeightsError::Config(
            "refused a path outside the model cache".into(),
        )),
    }
}

/// `snapshots/{commit}/{path}` → `../../blobs/{blob}` (relative, as huggingface_hub makes it).
///
/// Nothing is written through a link this did not make: an existing link is replaced, not
/// followed (a dangling link there would otherwise be written through), and where links cannot
/// be made (Windows without the right) the copy is written beside the snapshot path and renamed
/// over it.
fn link(blob: &Path, snap: &Path) -> Result<(), WeightsError> {
    let dir = snap.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let depth = snap
        .strip_prefix(
            blob.parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("/")),
        )
        .map_or(0, |p| p.components().count() - 1);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().unwrap_or_default());
    if std::fs::read_link(snap).is_ok_and(|t| t == target) {
        return Ok(());
    }
    // Another blob (the file changed under the same revision), a copy, or not our link: the
    // entry itself goes, whatever it points at.
    unlink(snap)?;
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&target, snap).map_err(|e| io_err(snap, e))
    }
    #[cfg(not(unix))]
    {
        let copy = snap.with_extension("fresco-copy");
        unlink(&copy)?;
        std::fs::copy(blob, &copy).map_err(|e| io_err(&copy, e))?;
        std::fs::rename(&copy, snap).map_err(|e| io_err(snap, e))
    }
}

/// Removes the file or link at `path` (never what a link points at); a folder there is an error.
fn unlink(path: &Path) -> Result<(), WeightsError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(io_err(
            path,
            std::io::Error::other("a folder stands where a file of the cache belongs"),
        )),
        Ok(_) => std::fs::remove_file(path).map_err(|e| io_err(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Writes a small file of the cache (a ref, a not-found marker) beside `path` and renames it
/// there, so that a link at `path` is replaced, not written through.
fn write_small(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = path.with_extension("fresco-tmp");
    unlink(&tmp)?;
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}
