//! A diffusers repository at a base URL, read with `fetch` in a browser: the browser's twin of
//! the hub cache (`hub.rs`), through the origin's model cache ([`super::cache`]) when there is one.

use std::rc::Rc;

use super::WeightsError;
use super::cache::{self, Cache, Known};
use super::fetch::{
    BodyReader, body_bytes, content_length, fetch_found, fetch_response, header,
    read_safetensors_body, status,
};
use super::progress::{Fetch, Observer};
use super::repo::RepoLocation;
use super::safetensors::{Header, Prefix, SafetensorsStream, read_prefix};
use super::source::RepoSource;
use super::store::Weights;

/// A diffusers repository at a base URL, read with `fetch`: `{base}/{path}` — a Hugging Face
/// `https://huggingface.co/{id}/resolve/{revision}` or any static server with that layout —
/// through the model [`Cache`] when it is given one.
pub struct UrlRepo {
    base: String,
    cache: Option<Rc<Cache>>,
    observe: Option<Observer>,
}

impl UrlRepo {
    pub fn new(base: &str) -> Self {
        UrlRepo {
            base: base.trim_end_matches('/').to_owned(),
            cache: None,
            observe: None,
        }
    }

    /// The repository a `model_name` names, as the server reads it but over `fetch`: a Hugging
    /// Face id `owner/name[@revision]` resolves at `{hub_url}/{id}/resolve/{revision}` (the hub's
    /// layout, https://huggingface.co or any server laid out like it), an http(s) URL is the
    /// repository's base. A directory is an error: a page cannot read the server's disk.
    pub fn for_model(model_name: &str, hub_url: &str) -> Result<Self, WeightsError> {
        match RepoLocation::parse(model_name)? {
            RepoLocation::Hub { id, revision } => Ok(UrlRepo::new(&format!(
                "{}/{id}/resolve/{revision}",
                hub_url.trim_end_matches('/')
            ))),
            RepoLocation::Url(base) => Ok(UrlRepo::new(&base)),
            RepoLocation::Dir(dir) => Err(WeightsError::Config(format!(
                "model {model_name:?} is a directory ({}), which a browser cannot read: use a Hugging Face id or the URL of the model's folder",
                dir.display()
            ))),
        }
    }

    /// Reads (and first downloads) every file through `cache`.
    pub fn cached(mut self, cache: Rc<Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Reports downloads, their progress and cache hits to `observe`.
    pub fn observed(mut self, observe: Observer) -> Self {
        self.observe = Some(observe);
        self
    }

    /// The base every file is read under.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.base)
    }

    fn observe(&self, event: Fetch<'_>) {
        if let Some(observe) = &self.observe {
            observe(event);
        }
    }

    /// `rel` from the cache (downloaded into it first if needed) and fed to `on_chunk`; `false`
    /// if the repository has no such file.
    async fn read_cached(
        &self,
        cache: &Cache,
        rel: &str,
        on_chunk: &mut dyn FnMut(&[u8]) -> Result<(), WeightsError>,
    ) -> Result<bool, WeightsError> {
        let url = self.url(rel);
        let observe = |e: Fetch<'_>| self.observe(e);
        let Some(file) = cache.get(&url, rel, &observe).await? else {
            return Ok(false);
        };
        match cache.read(&file, on_chunk).await {
            Ok(()) => Ok(true),
            Err(e) => {
                // A corrupt or unreadable copy is forgotten: the next load downloads it again.
                cache.remove(&url).await;
                Err(e)
            }
        }
    }
}

/// How much of a safetensors file is asked for first to read its header (an SDXL UNet's is about
/// 200 KB; a longer one takes a second request).
const HEADER_GUESS: u64 = 256 << 10;

impl UrlRepo {
    /// Refuses, before anything downloads, a set of files (`(path, size)`) that the site's
    /// storage quota cannot hold — counting only those not cached yet.
    pub async fn check_room(&self, files: &[(&str, u64)]) -> Result<(), WeightsError> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let mut need = 0;
        let mut missing = Vec::new();
        for &(rel, size) in files {
            if !matches!(cache.known(&self.url(rel)).await?, Known::Complete(_)) {
                need += size;
                missing.push(rel);
            }
        }
        if need == 0 {
            return Ok(());
        }
        let what = match missing.as_slice() {
            [one] => self.url(one),
            many => format!("{} ({})", self.base, many.join(", ")),
        };
        cache::check_quota(&what, need).await
    }
}

/// The first `len` bytes at `url` (a `Range` request; a server that sends the whole file instead
/// is read no further), with the file's full size when the server tells it; `None` for a 404.
async fn fetch_prefix(url: &str, len: u64) -> Result<Option<(Vec<u8>, Option<u64>)>, WeightsError> {
    let range = format!("bytes=0-{}", len - 1);
    let response = fetch_response(url, Some(&range)).await?;
    let total = match status(&response) {
        404 => return Ok(None),
        // `Content-Range: bytes 0-N/TOTAL` (TOTAL may be `*`).
        206 => header(&response, "content-range")
            .and_then(|r| r.rsplit('/').next()?.trim().parse().ok()),
        200..=299 => content_length(&response),
        other => {
            return Err(WeightsError::Network {
                url: url.to_owned(),
                message: format!("the server answered {other}"),
            });
        }
    };
    let mut body = BodyReader::new(url, &response)?;
    let mut bytes = Vec::new();
    while (bytes.len() as u64) < len {
        match body.next().await? {
            Some(chunk) => bytes.extend_from_slice(&chunk),
            None => break,
        }
    }
    body.cancel();
    bytes.truncate(len as usize);
    Ok(Some((bytes, total)))
}

impl RepoSource for UrlRepo {
    async fn text(&self, rel: &str) -> Result<Option<String>, WeightsError> {
        let url = self.url(rel);
        let bytes = match &self.cache {
            Some(cache) => {
                let mut bytes = Vec::new();
                let found = self
                    .read_cached(cache, rel, &mut |chunk| {
                        bytes.extend_from_slice(chunk);
                        Ok(())
                    })
                    .await?;
                found.then_some(bytes)
            }
            None => match fetch_found(&url).await? {
                Some(response) => Some(body_bytes(&url, &response).await?),
                None => None,
            },
        };
        bytes
            .map(|b| {
                String::from_utf8(b)
                    .map_err(|e| WeightsError::corrupt(&url, format!("not UTF-8: {e}")))
            })
            .transpose()
    }

    async fn read_safetensors(
        &self,
        rel: &str,
        weights: &mut Weights,
    ) -> Result<bool, WeightsError> {
        let url = self.url(rel);
        match &self.cache {
            Some(cache) => {
                let mut stream = SafetensorsStream::new(url.clone());
                let found = self
                    .read_cached(cache, rel, &mut |chunk| {
                        stream.feed(chunk, &mut |t| weights.insert(t, &url))
                    })
                    .await?;
                if found && let Err(e) = stream.finish() {
                    cache.remove(&url).await;
                    return Err(e);
                }
                Ok(found)
            }
            None => match fetch_found(&url).await? {
                Some(response) => {
                    self.observe(Fetch::Download {
                        file: rel,
                        total: content_length(&response),
                        from: 0,
                    });
                    read_safetensors_body(&url, &response, &mut |t| weights.insert(t, &url))
                        .await?;
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }

    async fn safetensors_header(&self, rel: &str) -> Result<Option<Header>, WeightsError> {
        let url = self.url(rel);
        let cached = match &self.cache {
            Some(cache) => match cache.known(&url).await? {
                Known::Missing => return Ok(None),
                Known::Complete(file) => Some((cache, file)),
                Known::Unknown => None,
            },
            None => None,
        };
        let mut want = HEADER_GUESS;
        loop {
            let (prefix, total) = match &cached {
                Some((cache, file)) => (cache.read_prefix(file, want).await?, Some(file.size)),
                None => match fetch_prefix(&url, want).await? {
                    Some(got) => got,
                    None => {
                        if let Some(cache) = &self.cache {
                            cache.set_missing(&url).await?;
                        }
                        return Ok(None);
                    }
                },
            };
            let read = read_prefix(&prefix, &url);
            if let (Err(_), Some((cache, _))) = (&read, &cached) {
                // A corrupt copy is forgotten: the next load downloads it again.
                cache.remove(&url).await;
            }
            match read? {
                Prefix::Header(mut header) => {
                    if let Some(total) = total {
                        header.file_size = total;
                    }
                    return Ok(Some(header));
                }
                // The header is longer than the first guess: ask for all of it.
                Prefix::Needs(n) if prefix.len() as u64 == want => want = n,
                Prefix::Needs(_) => {
                    return Err(WeightsError::corrupt(
                        &url,
                        "the file ends inside its header (truncated?)",
                    ));
                }
            }
        }
    }
}
