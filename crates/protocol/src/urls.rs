//! URL building exactly as `@fal-ai/client` 1.10.1 does it (fal-api.md §3.3–§3.5, §10, §12).
//!
//! Without the `url` crate: its IDNA tables alone made a wasm that builds one queue URL weigh
//! 80 KB gzipped, four times the whole `@fal-ai/client` (README, `cargo xtask bench size`). What
//! these rules need of a URL — scheme, host with a non-default port, path, query — is read by
//! [`AbsoluteUrl`], and query strings are written as `URLSearchParams` writes them.

use alloc::borrow::ToOwned;
use alloc::string::String;
#[cfg(feature = "std")]
use alloc::vec::Vec;
#[cfg(feature = "std")]
use serde_json::Value;

use crate::endpoint::{EndpointId, InvalidAppId, ensure_endpoint_id_format};
use crate::text::{find_any, find_str, rfind_byte, split_around, split_once_byte};

/// The host of the synchronous run API.
pub const RUN_HOST: &str = "fal.run";
/// The subdomain of the queue API (`queue.fal.run`).
pub const QUEUE_SUBDOMAIN: &str = "queue";
/// The host of the queue API.
pub const QUEUE_HOST: &str = "queue.fal.run";
/// The REST API (storage, tokens), hard-coded in the client.
pub const REST_API_URL: &str = "https://rest.fal.ai";
/// The host of [`REST_API_URL`].
pub const REST_HOST: &str = "rest.fal.ai";
/// The storage type every upload asks for.
pub const STORAGE_TYPE: &str = "fal-cdn-v3";

/// What [`build_url`] takes besides the id (the client's `UrlOptions` plus `method`/`input`).
#[cfg(feature = "std")]
#[derive(Debug, Clone, Default)]
pub struct UrlOptions<'a> {
    /// HTTP method; `None` means POST. Only matters for moving `input` into the query on GET.
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    /// Query parameters, already stringified, in order.
    pub query: Vec<(String, String)>,
    /// On GET, the input's fields become query parameters (after `query`).
    pub input: Option<&'a Value>,
    pub subdomain: Option<&'a str>,
}

/// A URL that has failed [`AbsoluteUrl::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUrl(pub String);

impl InvalidUrl {
    pub fn message(&self) -> String {
        ["not an absolute URL with a host: \"", &self.0, "\""].concat()
    }
}

impl core::fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message())
    }
}

impl core::error::Error for InvalidUrl {}

/// The parts of an absolute `scheme://host/path?query#fragment` URL these rules read, as the
/// WHATWG URL parser reports them for well-formed URLs: scheme and host lowercased, userinfo
/// dropped, the scheme's default port dropped (JavaScript's `url.host` keeps only another port).
/// Not a general URL parser: no percent-encoding, IDNA or dot-segment normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteUrl<'a> {
    pub scheme: String,
    /// Host, with `:port` when the port is not the scheme's default.
    pub host: String,
    /// From the first `/` after the host, up to `?` or `#`; `/` when empty.
    pub path: &'a str,
    /// After `?`, up to `#` (`None` without a `?`).
    pub query: Option<&'a str>,
}

impl<'a> AbsoluteUrl<'a> {
    pub fn parse(url: &'a str) -> Result<Self, InvalidUrl> {
        let invalid = || InvalidUrl(url.to_owned());
        let url_trimmed = url.trim();
        let (scheme, rest) = find_str(url_trimmed, "://")
            .map(|i| split_around(url_trimmed, i, 3))
            .ok_or_else(invalid)?;
        let mut bytes = scheme.bytes();
        let scheme_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok {
            return Err(invalid());
        }
        let scheme = scheme.to_ascii_lowercase();
        let end = find_any(rest, b"/?#").unwrap_or(rest.len());
        let (authority, after) = split_around(rest, end, 0);
        let host_port =
            rfind_byte(authority, b'@').map_or(authority, |i| split_around(authority, i, 1).1);
        // The port: after the last `:` that is not inside an IPv6 literal.
        let (host, port) = match rfind_byte(host_port, b':') {
            Some(i) if !host_port.bytes().skip(i).any(|b| b == b']') => {
                let (h, p) = split_around(host_port, i, 1);
                (h, Some(p))
            }
            _ => (host_port, None),
        };
        if host.is_empty() || port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid());
        }
        let default_port = match scheme.as_str() {
            "http" | "ws" => Some("80"),
            "https" | "wss" => Some("443"),
            "ftp" => Some("21"),
            _ => None,
        };
        let host = match port {
            Some(p) if !p.is_empty() && Some(p) != default_port => {
                [&host.to_ascii_lowercase(), ":", p].concat()
            }
            _ => host.to_ascii_lowercase(),
        };
        let after = split_once_byte(after, b'#').map_or(after, |(a, _)| a);
        let (path, query) = match split_once_byte(after, b'?') {
            Some((p, q)) => (p, Some(q)),
            None => (after, None),
        };
        Ok(AbsoluteUrl {
            scheme,
            host,
            path: if path.is_empty() { "/" } else { path },
            query,
        })
    }

    /// `url.origin`: `scheme://host`.
    pub fn origin(&self) -> String {
        [&self.scheme, "://", &self.host].concat()
    }

    /// `url.search`: `?query`, or empty when the query is absent or empty.
    pub fn search(&self) -> String {
        match self.query {
            Some(q) if !q.is_empty() => ["?", q].concat(),
            _ => String::new(),
        }
    }
}

/// `true` when `id` is an absolute URL whose host (with port) ends in `fal.ai` or `fal.run`.
/// Like the client's regex, this is not dot-anchored, so `myfal.run` matches too.
pub fn is_fal_url(id: &str) -> bool {
    AbsoluteUrl::parse(id).is_ok_and(|u| u.host.ends_with("fal.ai") || u.host.ends_with("fal.run"))
}

/// `application/x-www-form-urlencoded` as `URLSearchParams.toString()` writes it: ASCII
/// alphanumerics and `*-._` as they are, space as `+`, every other byte of the UTF-8 as `%XX`.
pub fn form_urlencode(pairs: &[(String, String)]) -> String {
    fn push(out: &mut String, s: &str) {
        for b in s.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    out.push('%');
                    out.push(HEX[(b >> 4) as usize] as char);
                    out.push(HEX[(b & 15) as usize] as char);
                }
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push(&mut out, k);
        out.push('=');
        push(&mut out, v);
    }
    out
}

/// Stringifies a JSON value the way JavaScript's `String(v)` does (what `URLSearchParams` does to
/// the values of a plain object).
#[cfg(feature = "std")]
pub fn js_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                if v.is_null() {
                    String::new()
                } else {
                    js_string(v)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

/// Builds a URL as `buildUrl` does (§3.3).
#[cfg(feature = "std")]
pub fn build_url(id: &str, options: &UrlOptions<'_>) -> Result<String, InvalidAppId> {
    let method = options.method.unwrap_or("post");
    // `{...query, ...(GET ? input : {})}`: later keys replace earlier ones in place.
    let mut params: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| match params.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => params.push((key.to_owned(), value)),
    };
    for (k, v) in &options.query {
        set(k, v.clone());
    }
    if method.eq_ignore_ascii_case("get")
        && let Some(Value::Object(input)) = options.input
    {
        for (k, v) in input {
            set(k, js_string(v));
        }
    }
    url_with_params(id, options.path, options.subdomain, &params)
}

/// The rest of `buildUrl` once its query parameters are merged and stringified.
pub fn url_with_params(
    id: &str,
    path: Option<&str>,
    subdomain: Option<&str>,
    params: &[(String, String)],
) -> Result<String, InvalidAppId> {
    url_with_query(id, path, subdomain, &form_urlencode(params))
}

/// The rest of `buildUrl` with the query already encoded (`URLSearchParams`' `toString()`; empty
/// for none): what the npm module calls, its JavaScript having done `{...query, ...input}`.
pub fn url_with_query(
    id: &str,
    path: Option<&str>,
    subdomain: Option<&str>,
    query: &str,
) -> Result<String, InvalidAppId> {
    let path = normalize_path(path.unwrap_or(""));
    let query = if query.is_empty() {
        String::new()
    } else {
        ["?", query].concat()
    };

    if is_fal_url(id) {
        let slash = if id.ends_with('/') { "" } else { "/" };
        return Ok([id, slash, &path, &query].concat());
    }
    let app_id = ensure_endpoint_id_format(id)?;
    let (sub, dot) = subdomain.map_or(("", ""), |s| (s, "."));
    let url = ["https://", sub, dot, RUN_HOST, "/", &app_id, "/", &path].concat();
    let url = url.strip_suffix('/').unwrap_or(&url);
    Ok([url, &query].concat())
}

/// One leading `/` removed, then the first run of two or more slashes collapsed.
fn normalize_path(path: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    let bytes = path.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'/' && bytes[i + 1] == b'/' {
            let mut end = i + 2;
            while end < bytes.len() && bytes[end] == b'/' {
                end += 1;
            }
            let (before, _) = split_around(path, i, 0);
            let (_, after) = split_around(path, end, 0);
            return [before, "/", after].concat();
        }
        i += 1;
    }
    path.to_owned()
}

/// `resolveEndpointPath(app, path, defaultPath)` (§3.4).
pub fn resolve_endpoint_path(app: &str, path: Option<&str>, default_path: &str) -> Option<String> {
    match path {
        Some(p) => Some(["/", p.trim_start_matches('/')].concat()),
        None if app.ends_with(default_path) => None,
        None => Some(default_path.to_owned()),
    }
}

/// `POST https://fal.run/{full id}`.
pub fn run_url(id: &str) -> Result<String, InvalidAppId> {
    url_with_params(id, None, None, &[])
}

/// `POST https://queue.fal.run/{full id}[?fal_webhook=…]` (§8.2).
pub fn queue_submit_url(id: &str, webhook_url: Option<&str>) -> Result<String, InvalidAppId> {
    let query: &[(String, String)] = match webhook_url {
        Some(w) => &[("fal_webhook".to_owned(), w.to_owned())],
        None => &[],
    };
    url_with_params(id, None, Some(QUEUE_SUBDOMAIN), query)
}

/// `https://queue.fal.run/{[ns/]owner/alias}/requests/{request_id}{suffix}[?logs=0|1]`: the URL of every
/// per-request queue call (§3.5, §8.3–§8.6).
pub fn queue_request_url(
    id: &str,
    request_id: &str,
    suffix: &str,
    logs: Option<bool>,
) -> Result<String, InvalidAppId> {
    let app = EndpointId::parse(id)?.app_id();
    let query: &[(String, String)] = match logs {
        Some(l) => &[("logs".to_owned(), if l { "1" } else { "0" }.to_owned())],
        None => &[],
    };
    url_with_params(
        &[&app, "/requests/", request_id, suffix].concat(),
        None,
        Some(QUEUE_SUBDOMAIN),
        query,
    )
}

/// `GET https://queue.fal.run/{app}/requests/{id}/status?logs=0|1` (§8.3).
pub fn queue_status_url(id: &str, request_id: &str, logs: bool) -> Result<String, InvalidAppId> {
    queue_request_url(id, request_id, "/status", Some(logs))
}

/// `GET https://queue.fal.run/{app}/requests/{id}/status/stream?logs=0|1` (§8.6).
pub fn queue_status_stream_url(
    id: &str,
    request_id: &str,
    logs: bool,
) -> Result<String, InvalidAppId> {
    queue_request_url(id, request_id, "/status/stream", Some(logs))
}

/// `GET https://queue.fal.run/{app}/requests/{id}` (§8.4).
pub fn queue_result_url(id: &str, request_id: &str) -> Result<String, InvalidAppId> {
    queue_request_url(id, request_id, "", None)
}

/// `PUT https://queue.fal.run/{app}/requests/{id}/cancel` (§8.5).
pub fn queue_cancel_url(id: &str, request_id: &str) -> Result<String, InvalidAppId> {
    queue_request_url(id, request_id, "/cancel", None)
}

/// `POST https://rest.fal.ai/storage/upload/initiate[-multipart]?storage_type=fal-cdn-v3` (§10).
pub fn storage_initiate_url(multipart: bool) -> String {
    let op = if multipart {
        "initiate-multipart"
    } else {
        "initiate"
    };
    [
        REST_API_URL,
        "/storage/upload/",
        op,
        "?storage_type=",
        STORAGE_TYPE,
    ]
    .concat()
}

/// `POST https://rest.fal.ai/tokens/` (§12).
pub fn token_url() -> String {
    [REST_API_URL, "/tokens/"].concat()
}

/// The URL of multipart part `n` (1-based): `{origin}{pathname}/{n}{search}` (§10.3).
pub fn multipart_part_url(upload_url: &str, part: u32) -> Result<String, InvalidUrl> {
    multipart_url(upload_url, &crate::text::decimal(part.into()))
}

/// The multipart completion URL: `{origin}{pathname}/complete{search}` (§10.3).
pub fn multipart_complete_url(upload_url: &str) -> Result<String, InvalidUrl> {
    multipart_url(upload_url, "complete")
}

fn multipart_url(upload_url: &str, last: &str) -> Result<String, InvalidUrl> {
    let u = AbsoluteUrl::parse(upload_url)?;
    Ok([&u.origin(), u.path, "/", last, &u.search()].concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_verified_url_table() {
        assert_eq!(
            run_url("fal-ai/flux/dev").unwrap(),
            "https://fal.run/fal-ai/flux/dev"
        );
        let input = json!({"prompt": "a b", "n": 2});
        let get = UrlOptions {
            method: Some("GET"),
            path: Some("/foo"),
            input: Some(&input),
            ..Default::default()
        };
        assert_eq!(
            build_url("fal-ai/flux/dev", &get).unwrap(),
            "https://fal.run/fal-ai/flux/dev/foo?prompt=a+b&n=2"
        );
        assert_eq!(
            run_url("12345-my-app").unwrap(),
            "https://fal.run/12345/my-app"
        );
        assert_eq!(
            run_url("https://my-app.fal.run/custom").unwrap(),
            "https://my-app.fal.run/custom/"
        );
        assert_eq!(
            run_url("workflows/owner/wf/path").unwrap(),
            "https://fal.run/workflows/owner/wf/path"
        );
        assert_eq!(
            queue_submit_url("fal-ai/flux/dev", Some("https://example.com/hook?x=1")).unwrap(),
            "https://queue.fal.run/fal-ai/flux/dev?fal_webhook=https%3A%2F%2Fexample.com%2Fhook%3Fx%3D1"
        );
    }

    #[test]
    fn the_queue_urls_of_appendix_a() {
        assert_eq!(
            queue_status_url("fal-ai/flux/dev", "rid", true).unwrap(),
            "https://queue.fal.run/fal-ai/flux/requests/rid/status?logs=1"
        );
        assert_eq!(
            queue_result_url("fal-ai/flux/dev", "rid").unwrap(),
            "https://queue.fal.run/fal-ai/flux/requests/rid"
        );
        assert_eq!(
            queue_cancel_url("fal-ai/flux/dev", "rid").unwrap(),
            "https://queue.fal.run/fal-ai/flux/requests/rid/cancel"
        );
        assert_eq!(
            queue_status_url("workflows/owner/wf/x", "rid", false).unwrap(),
            "https://queue.fal.run/workflows/owner/wf/requests/rid/status?logs=0"
        );
        assert_eq!(
            queue_status_stream_url("fal-ai/llm", "rid", true).unwrap(),
            "https://queue.fal.run/fal-ai/llm/requests/rid/status/stream?logs=1"
        );
        assert_eq!(
            queue_submit_url("fal-ai/flux/dev", None).unwrap(),
            "https://queue.fal.run/fal-ai/flux/dev"
        );
    }

    #[test]
    fn get_input_overrides_query_in_place_and_is_stringified_like_js() {
        let input =
            json!({"a": [1, "x", null], "o": {"k": 1}, "f": 2.0, "g": 2.5, "b": true, "q": "new"});
        let opts = UrlOptions {
            method: Some("get"),
            query: vec![("q".into(), "old".into()), ("z".into(), "1".into())],
            input: Some(&input),
            ..Default::default()
        };
        let url = build_url("o/a", &opts).unwrap();
        assert_eq!(
            url,
            "https://fal.run/o/a?q=new&z=1&a=1%2Cx%2C&o=%5Bobject+Object%5D&f=2&g=2.5&b=true"
        );
        // On POST the input never reaches the query.
        let post = UrlOptions {
            input: Some(&input),
            ..Default::default()
        };
        assert_eq!(build_url("o/a", &post).unwrap(), "https://fal.run/o/a");
    }

    #[test]
    fn paths_lose_one_leading_slash_and_the_first_slash_run() {
        let with = |p| {
            build_url(
                "o/a",
                &UrlOptions {
                    path: Some(p),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        assert_eq!(with("/x//y//z"), "https://fal.run/o/a/x/y//z");
        // One leading slash goes; what stays is a single slash, not a run, so it is kept.
        assert_eq!(with("//x"), "https://fal.run/o/a//x");
        assert_eq!(with("x/"), "https://fal.run/o/a/x");
        assert_eq!(with(""), "https://fal.run/o/a");
    }

    #[test]
    fn fal_hosts_are_recognised_like_the_clients_regex() {
        assert!(is_fal_url("https://fal.run/x"));
        assert!(is_fal_url("https://rest.fal.ai"));
        assert!(
            is_fal_url("https://myfal.run/x"),
            "the client's regex is not dot-anchored"
        );
        assert!(!is_fal_url("https://fal.run:8443/x"));
        assert!(!is_fal_url("fal-ai/flux"));
        assert!(!is_fal_url("https://example.com/fal.run"));
        assert!(
            is_fal_url("HTTPS://FAL.RUN:443/x"),
            "default port dropped, host lowercased"
        );
        assert!(is_fal_url("https://user@queue.fal.run/x"));
        assert!(!is_fal_url("https://fal.run.evil.com/x"));
    }

    #[test]
    fn invalid_ids_are_refused_before_any_url_is_built() {
        assert!(run_url("lora").is_err());
        assert!(queue_status_url("lora", "rid", false).is_err());
    }

    #[test]
    fn endpoint_paths_resolve_like_resolve_endpoint_path() {
        assert_eq!(
            resolve_endpoint_path("fal-ai/llm", None, "/stream").as_deref(),
            Some("/stream")
        );
        assert_eq!(
            resolve_endpoint_path("fal-ai/llm/stream", None, "/stream"),
            None
        );
        assert_eq!(
            resolve_endpoint_path("a/b", Some("//x"), "/stream").as_deref(),
            Some("/x")
        );
    }

    #[test]
    fn storage_and_multipart_urls() {
        assert_eq!(
            storage_initiate_url(false),
            "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3"
        );
        assert_eq!(
            storage_initiate_url(true),
            "https://rest.fal.ai/storage/upload/initiate-multipart?storage_type=fal-cdn-v3"
        );
        assert_eq!(token_url(), "https://rest.fal.ai/tokens/");
        let up = "https://upload.example.com:8443/files/abc?sig=1&x=y";
        assert_eq!(
            multipart_part_url(up, 3).unwrap(),
            "https://upload.example.com:8443/files/abc/3?sig=1&x=y"
        );
        assert_eq!(
            multipart_complete_url(up).unwrap(),
            "https://upload.example.com:8443/files/abc/complete?sig=1&x=y"
        );
        assert_eq!(multipart_part_url("http://h/u", 1).unwrap(), "http://h/u/1");
        // As `new URL(..)` reports them: default port and userinfo dropped, scheme and host
        // lowercased, fragment and an empty `?` gone, an empty path as `/`.
        assert_eq!(
            multipart_part_url("HTTPS://user:pw@Up.Example.com:443/f?#frag", 2).unwrap(),
            "https://up.example.com/f/2"
        );
        assert_eq!(
            multipart_complete_url("http://h:8080").unwrap(),
            "http://h:8080//complete"
        );
        assert!(multipart_part_url("/relative/path", 1).is_err());
        assert!(multipart_part_url("https://:443/x", 1).is_err());
        assert!(multipart_part_url("https://h:4x3/x", 1).is_err());
    }

    /// `new URLSearchParams({...}).toString()`'s bytes (checked in Node 20).
    #[test]
    fn query_strings_are_written_like_url_search_params() {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            form_urlencode(&pairs(&[("a b", "x+y&z=1"), ("é", "~!'()*-._")])),
            "a+b=x%2By%26z%3D1&%C3%A9=%7E%21%27%28%29*-._"
        );
        assert_eq!(
            form_urlencode(&pairs(&[("fal_webhook", "https://h.io/p?q=1#f")])),
            "fal_webhook=https%3A%2F%2Fh.io%2Fp%3Fq%3D1%23f"
        );
        assert_eq!(form_urlencode(&[]), "");
    }
}
