//! The model cache of a browser: files downloaded once into the origin-private file system
//! (OPFS, `navigator.storage.getDirectory()`), under `fresco-cache/`, so that the next visit
//! loads the model with no network at all.
//!
//! Each file is two entries named after a hash of its URL: `<h>.bin`, the bytes, and
//! `<h>.json`, what is known of it (`{url, status, size, complete}`). A download writes each
//! chunk straight from the response into the file (`FileSystemSyncAccessHandle`, dedicated
//! workers only): the bytes never pass through wasm memory. If the connection breaks, the next
//! try asks for the rest only (`Range: bytes=<have>-`); a server that answers the whole file
//! again (200) starts it over. 404s are remembered too, so the loader's probes for optional
//! files (`*.fp16.safetensors`, shard indexes) stay off the network as well.
//!
//! Before a download the free quota (`navigator.storage.estimate()`) is compared with the
//! file's size, and a write that hits the quota anyway is reported as such; a file that turns
//! out corrupt is removed ([`Cache::remove`]) so the next try downloads it afresh.

use js_sys::Uint8Array;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;

use super::fetch::{BodyReader, content_length, fetch_response, status};
use super::js::{call, call_async, describe, error_name, get_opt, object, sleep};
use super::progress::Fetch;
use crate::weights::WeightsError;

/// The directory under the origin's private file system.
const DIR: &str = "fresco-cache";
/// How often a broken-off download is resumed before giving up.
const MAX_ATTEMPTS: u32 = 5;
/// Bytes read from a cached file at a time.
const READ_CHUNK: u32 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    url: String,
    /// 200, or 404 for a file the server does not have.
    status: u16,
    /// The full size, when known.
    size: Option<u64>,
    complete: bool,
}

/// An open `FileSystemSyncAccessHandle`; closed on drop (a file has one at a time).
struct Handle {
    js: JsValue,
    name: String,
}

impl Handle {
    fn size(&self) -> Result<u64, WeightsError> {
        call(&self.js, "getSize", &[])
            .map(|v| v.as_f64().unwrap_or(0.0) as u64)
            .map_err(|e| storage(&self.name, &e))
    }

    fn write(&self, bytes: &JsValue, at: u64) -> Result<u64, WeightsError> {
        let at = object(&[("at", JsValue::from_f64(at as f64))]);
        call(&self.js, "write", &[bytes, &at])
            .map(|v| v.as_f64().unwrap_or(0.0) as u64)
            .map_err(|e| storage(&self.name, &e))
    }

    fn read(&self, buf: &Uint8Array, at: u64) -> Result<u64, WeightsError> {
        let at = object(&[("at", JsValue::from_f64(at as f64))]);
        call(&self.js, "read", &[buf, &at])
            .map(|v| v.as_f64().unwrap_or(0.0) as u64)
            .map_err(|e| storage(&self.name, &e))
    }

    fn truncate(&self, size: u64) -> Result<(), WeightsError> {
        call(&self.js, "truncate", &[&JsValue::from_f64(size as f64)])
            .map(|_| ())
            .map_err(|e| storage(&self.name, &e))
    }

    fn flush(&self) -> Result<(), WeightsError> {
        call(&self.js, "flush", &[])
            .map(|_| ())
            .map_err(|e| storage(&self.name, &e))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = call(&self.js, "close", &[]);
    }
}

/// A storage failure, with the quota named when it is the cause.
fn storage(what: &str, e: &JsValue) -> WeightsError {
    if error_name(e).as_deref() == Some("QuotaExceededError") {
        WeightsError::Config(format!(
            "the browser's storage quota for this site is used up while caching {what}: free space (or clear this site's data) and try again"
        ))
    } else {
        WeightsError::Config(format!("the model cache ({what}): {}", describe(e)))
    }
}

/// FNV-1a, 64 bits: the entry name of a URL (the URL itself is checked in the entry's meta).
fn key(url: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The cache, or `None` where the origin-private file system is not available (no
/// `navigator.storage.getDirectory`, or not in a dedicated worker).
pub struct Cache {
    dir: JsValue,
}

/// A complete file in the cache.
pub struct CachedFile {
    key: String,
    pub size: u64,
}

/// What the cache knows of a URL, without the network.
pub enum Known {
    /// The server has no such file (a remembered 404).
    Missing,
    Complete(CachedFile),
    /// Not cached, or only partly.
    Unknown,
}

impl Cache {
    pub async fn open() -> Option<Cache> {
        let global = js_sys::global();
        let storage = get_opt(&global, "navigator").and_then(|n| get_opt(&n, "storage"))?;
        let root = call_async(&storage, "getDirectory", &[]).await.ok()?;
        let create = object(&[("create", JsValue::TRUE)]);
        let dir = call_async(
            &root,
            "getDirectoryHandle",
            &[&JsValue::from_str(DIR), &create],
        )
        .await
        .ok()?;
        // Sync access handles exist in dedicated workers only; without them, no cache.
        let probe = get_opt(&global, "FileSystemSyncAccessHandle");
        probe.map(|_| Cache { dir })
    }

    async fn handle(&self, name: String, create: bool) -> Result<Option<Handle>, WeightsError> {
        let options = object(&[("create", JsValue::from_bool(create))]);
        let file = match call_async(
            &self.dir,
            "getFileHandle",
            &[&JsValue::from_str(&name), &options],
        )
        .await
        {
            Ok(f) => f,
            Err(e) if error_name(&e).as_deref() == Some("NotFoundError") => return Ok(None),
            Err(e) => return Err(storage(&name, &e)),
        };
        let js = call_async(&file, "createSyncAccessHandle", &[])
            .await
            .map_err(|e| {
                if error_name(&e).as_deref() == Some("NoModificationAllowedError") {
                    WeightsError::Config(format!(
                        "the model cache's file {name} is in use by another tab or worker of this site: close it and try again"
                    ))
                } else {
                    storage(&name, &e)
                }
            })?;
        Ok(Some(Handle { js, name }))
    }

    async fn meta(&self, key: &str) -> Option<Meta> {
        let handle = self.handle(format!("{key}.json"), false).await.ok()??;
        let size = handle.size().ok()?;
        let buf = Uint8Array::new_with_length(size as u32);
        handle.read(&buf, 0).ok()?;
        serde_json::from_slice(&buf.to_vec()).ok()
    }

    async fn set_meta(&self, key: &str, meta: &Meta) -> Result<(), WeightsError> {
        let Some(handle) = self.handle(format!("{key}.json"), true).await? else {
            return Ok(());
        };
        let text = serde_json::to_vec(meta).map_err(|e| WeightsError::Config(e.to_string()))?;
        handle.truncate(0)?;
        handle.write(&Uint8Array::from(text.as_slice()).into(), 0)?;
        handle.flush()
    }

    /// Forgets `url` (a corrupt download): the next [`Cache::get`] downloads it again.
    pub async fn remove(&self, url: &str) {
        let key = key(url);
        for name in [format!("{key}.json"), format!("{key}.bin")] {
            let _ = call_async(&self.dir, "removeEntry", &[&JsValue::from_str(&name)]).await;
        }
    }

    /// What the cache holds of `url`.
    pub async fn known(&self, url: &str) -> Result<Known, WeightsError> {
        let key = key(url);
        let Some(m) = self.meta(&key).await.filter(|m| m.url == url) else {
            return Ok(Known::Unknown);
        };
        if m.status == 404 {
            return Ok(Known::Missing);
        }
        if m.complete
            && let Some(handle) = self.handle(format!("{key}.bin"), false).await?
            && let size = handle.size()?
            && Some(size) == m.size
        {
            return Ok(Known::Complete(CachedFile { size, key }));
        }
        Ok(Known::Unknown)
    }

    /// The file at `url` from the cache, downloaded into it first if it is not there (or only
    /// partly): `None` when the server has no such file (404).
    pub async fn get(
        &self,
        url: &str,
        file: &str,
        observe: &dyn Fn(Fetch<'_>),
    ) -> Result<Option<CachedFile>, WeightsError> {
        match self.known(url).await? {
            Known::Missing => return Ok(None),
            Known::Complete(cached) => {
                observe(Fetch::Cached {
                    file,
                    bytes: cached.size,
                });
                return Ok(Some(cached));
            }
            Known::Unknown => {}
        }
        let key = key(url);
        let resumable = self
            .meta(&key)
            .await
            .is_some_and(|m| m.url == url && m.status == 200 && !m.complete);
        self.download(url, file, key, resumable, observe).await
    }

    /// Remembers that the server has no file at `url` (it answered 404).
    pub async fn set_missing(&self, url: &str) -> Result<(), WeightsError> {
        self.remove(url).await;
        let meta = Meta {
            url: url.into(),
            status: 404,
            size: None,
            complete: true,
        };
        self.set_meta(&key(url), &meta).await
    }

    async fn download(
        &self,
        url: &str,
        file: &str,
        key: String,
        resumable: bool,
        observe: &dyn Fn(Fetch<'_>),
    ) -> Result<Option<CachedFile>, WeightsError> {
        let bin = self
            .handle(format!("{key}.bin"), true)
            .await?
            .ok_or_else(|| {
                WeightsError::Config(format!("the model cache could not create a file for {url}"))
            })?;
        let mut have = if resumable { bin.size()? } else { 0 };
        bin.truncate(have)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let range = (have > 0).then(|| format!("bytes={have}-"));
            let response = fetch_response(url, range.as_deref()).await;
            let response = match response {
                Ok(r) => r,
                Err(e) if attempt < MAX_ATTEMPTS => {
                    observe(Fetch::Retry {
                        file,
                        done: have,
                        error: &e.to_string(),
                    });
                    sleep(500 * attempt).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = status(&response);
            match status {
                404 => {
                    drop(bin);
                    self.set_missing(url).await?;
                    return Ok(None);
                }
                206 if have > 0 => {}
                200..=299 => {
                    // The whole file (the server ignored the range, or there was none).
                    have = 0;
                    bin.truncate(0)?;
                }
                _ => {
                    return Err(WeightsError::Network {
                        url: url.to_owned(),
                        message: format!("the server answered {status}"),
                    });
                }
            }
            let length = content_length(&response);
            let total = length.map(|n| n + have);
            if let Some(need) = length {
                check_quota(url, need).await?;
            }
            self.set_meta(
                &key,
                &Meta {
                    url: url.into(),
                    status: 200,
                    size: total,
                    complete: false,
                },
            )
            .await?;
            observe(Fetch::Download {
                file,
                total,
                from: have,
            });
            let mut body = BodyReader::new(url, &response)?;
            let broke = loop {
                match body.next_js().await {
                    Ok(Some(chunk)) => {
                        let n = bin.write(&chunk, have)?;
                        have += n;
                        observe(Fetch::Progress {
                            file,
                            done: have,
                            total,
                        });
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            match broke {
                None => {
                    bin.flush()?;
                    self.set_meta(
                        &key,
                        &Meta {
                            url: url.into(),
                            status: 200,
                            size: Some(have),
                            complete: true,
                        },
                    )
                    .await?;
                    observe(Fetch::Downloaded { file, bytes: have });
                    return Ok(Some(CachedFile { key, size: have }));
                }
                Some(e) if attempt < MAX_ATTEMPTS => {
                    bin.flush()?;
                    observe(Fetch::Retry {
                        file,
                        done: have,
                        error: &e.to_string(),
                    });
                    sleep(500 * attempt).await;
                }
                Some(e) => {
                    return Err(WeightsError::Network {
                        url: url.to_owned(),
                        message: format!(
                            "the download broke off {MAX_ATTEMPTS} times (last after {have} bytes): {e}; what arrived is kept and the next try resumes it"
                        ),
                    });
                }
            }
        }
    }

    /// A cached file's bytes, opened to be read.
    async fn open_bin(&self, file: &CachedFile) -> Result<Handle, WeightsError> {
        self.handle(format!("{}.bin", file.key), false)
            .await?
            .ok_or_else(|| WeightsError::Config("a cached file vanished while it was read".into()))
    }

    /// The first `len` bytes of a cached file (all of it if it is shorter).
    pub async fn read_prefix(&self, file: &CachedFile, len: u64) -> Result<Vec<u8>, WeightsError> {
        let handle = self.open_bin(file).await?;
        let len = len.min(file.size);
        let buf = Uint8Array::new_with_length(len as u32);
        let n = handle.read(&buf, 0)?;
        Ok(buf.subarray(0, n as u32).to_vec())
    }

    /// Reads a cached file in chunks of up to 1 MiB.
    pub async fn read(
        &self,
        file: &CachedFile,
        on_chunk: &mut dyn FnMut(&[u8]) -> Result<(), WeightsError>,
    ) -> Result<(), WeightsError> {
        let handle = self.open_bin(file).await?;
        let buf = Uint8Array::new_with_length(READ_CHUNK);
        let mut chunk = vec![0u8; READ_CHUNK as usize];
        let mut at = 0;
        while at < file.size {
            let n = handle.read(&buf, at)?;
            if n == 0 {
                return Err(WeightsError::Config("a cached file ended early".into()));
            }
            buf.subarray(0, n as u32).copy_to(&mut chunk[..n as usize]);
            on_chunk(&chunk[..n as usize])?;
            at += n;
        }
        Ok(())
    }
}

/// Refuses a download of `need` bytes (of `what`) the site's storage quota cannot hold, before
/// it starts.
pub async fn check_quota(what: &str, need: u64) -> Result<(), WeightsError> {
    let global = js_sys::global();
    let Some(storage) = get_opt(&global, "navigator").and_then(|n| get_opt(&n, "storage")) else {
        return Ok(());
    };
    let Ok(estimate) = call_async(&storage, "estimate", &[]).await else {
        return Ok(());
    };
    let num = |k| {
        get_opt(&estimate, k)
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0) as u64
    };
    let (quota, usage) = (num("quota"), num("usage"));
    if quota > 0 && need > quota.saturating_sub(usage) {
        return Err(WeightsError::Config(format!(
            "not enough storage to cache {what}: it needs {:.1} MB and this site may use {:.1} MB more (the browser's quota): free space or clear this site's data",
            need as f64 / 1e6,
            quota.saturating_sub(usage) as f64 / 1e6
        )));
    }
    Ok(())
}
