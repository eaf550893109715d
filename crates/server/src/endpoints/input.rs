//! The bytes of an input file a call names (`image_url`, `mask_url`): a `data:` URI, a file of
//! this server's own storage (read from the disk, never fetched over HTTP — so the Blobs a client
//! uploads work while private addresses are refused, also on 127.0.0.1), or a URL fetched through
//! [`Outbound`](crate::outbound::Outbound): public hosts only unless the server allows private
//! ones, an overall deadline, the request's cancel, a size cap.
//!
//! Callers learn only that a fetch failed ("could not fetch image_url"); why — refused address,
//! connection refused, the status — goes to the server's log, so errors do not map a network.

use std::time::Duration;

use super::{Failure, JobContext};
use base64::Engine as _;

pub use fresco_diffusion::endpoints::MAX_INPUT_BYTES;
use fresco_diffusion::endpoints::too_big;

/// How long one input may take to arrive, redirects included.
const FETCH_DEADLINE: Duration = Duration::from_secs(60);

impl JobContext {
    /// The bytes `url` names, for the input field `field`.
    pub async fn input_bytes(&self, url: &str, field: &str) -> Result<Vec<u8>, Failure> {
        if let Some(rest) = url.strip_prefix("data:") {
            return data_uri(rest, field);
        }
        if let Some(stored) = self.stored_input(url, field).await? {
            return Ok(stored);
        }
        let fetched = tokio::select! {
            r = tokio::time::timeout(FETCH_DEADLINE, self.fetch(url, field)) => {
                r.unwrap_or_else(|_| Err(FetchError::Failed(format!("no answer within {FETCH_DEADLINE:?}"))))
            }
            _ = self.cancelled() => return Err(Failure::Cancelled),
        };
        fetched.map_err(|e| match e {
            FetchError::Job(e) => e,
            FetchError::Failed(why) => {
                tracing::warn!(request_id = %self.request_id, field, url, "could not fetch an input: {why}");
                Failure::field(field, format!("could not fetch {field}"))
            }
        })
    }

    async fn fetch(&self, url: &str, field: &str) -> Result<Vec<u8>, FetchError> {
        let outbound = &self.policy()?.outbound;
        let checked = outbound
            .check(url)
            .map_err(|e| FetchError::Failed(e.to_string()))?;
        let failed = |e: reqwest::Error| FetchError::Failed(crate::outbound::describe(e));
        let mut res = outbound
            .client()
            .get(checked)
            .send()
            .await
            .map_err(failed)?;
        if !res.status().is_success() {
            return Err(FetchError::Failed(format!("answered {}", res.status())));
        }
        if res
            .content_length()
            .is_some_and(|n| n > MAX_INPUT_BYTES as u64)
        {
            return Err(FetchError::Job(too_big(field)));
        }
        let mut out = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(failed)? {
            if out.len() + chunk.len() > MAX_INPUT_BYTES {
                return Err(FetchError::Job(too_big(field)));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A file of this server's storage, when `url` is one of its `/files/` URLs (under the base
    /// URL the request came in by, or the configured public URL).
    async fn stored_input(&self, url: &str, field: &str) -> Result<Option<Vec<u8>>, Failure> {
        let Some(out) = &self.outputs else {
            return Ok(None);
        };
        let public_url = self.policy.as_ref().and_then(|r| r.public_url.as_deref());
        let rest = [Some(out.base_url.as_str()), public_url]
            .into_iter()
            .flatten()
            .find_map(|base| url.strip_prefix(base)?.strip_prefix("/files/"));
        let Some((key, name)) = rest.and_then(|r| r.split_once('/')) else {
            return Ok(None);
        };
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let file = out
            .storage
            .get(key, &name)
            .await
            .map_err(|e| crate::endpoints::hidden("Reading the storage", e.detail()))?
            .ok_or_else(|| Failure::field(field, format!("could not fetch {field}")))?;
        if file.size > MAX_INPUT_BYTES as u64 {
            return Err(too_big(field));
        }
        tokio::fs::read(&file.path)
            .await
            .map(Some)
            .map_err(|e| crate::endpoints::hidden("Reading a stored file", e))
    }
}

enum FetchError {
    /// Said to the caller as it is.
    Job(Failure),
    /// Logged; the caller hears "could not fetch <field>".
    Failed(String),
}

impl From<Failure> for FetchError {
    fn from(e: Failure) -> Self {
        FetchError::Job(e)
    }
}

/// The bytes of a `data:` URI (after `data:`): base64 or percent-encoded.
pub fn data_uri(rest: &str, field: &str) -> Result<Vec<u8>, Failure> {
    let bad = |message: String| Failure::field(field, message);
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad("a data: URI needs a comma before its data".into()))?;
    let bytes = if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| bad(format!("the base64 data does not decode: {e}")))?
    } else {
        percent_encoding::percent_decode_str(data).collect()
    };
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(too_big(field));
    }
    Ok(bytes)
}
