//! URL building exactly as `@fal-ai/client` 1.10.1 does it (fal-api.md §3.3–§3.5, §10, §12).

use serde_json::Value;
use url::Url;

use crate::endpoint::{EndpointId, InvalidAppId, ensure_endpoint_id_format};

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

/// `true` when `id` is an absolute URL whose host (with port) ends in `fal.ai` or `fal.run`.
/// Like the client's regex, this is not dot-anchored, so `myfal.run` matches too.
pub fn is_fal_url(id: &str) -> bool {
    let Ok(url) = Url::parse(id) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    host.ends_with("fal.ai") || host.ends_with("fal.run")
}

/// Stringifies a JSON value the way JavaScript's `String(v)` does (what `URLSearchParams` does to
/// the values of a plain object).
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
pub fn build_url(id: &str, options: &UrlOptions<'_>) -> Result<String, InvalidAppId> {
    let method = options.method.unwrap_or("post").to_ascii_lowercase();
    let path = normalize_path(options.path.unwrap_or(""));

    // `{...query, ...(GET ? input : {})}`: later keys replace earlier ones in place.
    let mut params: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| match params.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => params.push((key.to_owned(), value)),
    };
    for (k, v) in &options.query {
        set(k, v.clone());
    }
    if method == "get"
        && let Some(Value::Object(input)) = options.input
    {
        for (k, v) in input {
            set(k, js_string(v));
        }
    }
    let query = if params.is_empty() {
        String::new()
    } else {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &params {
            ser.append_pair(k, v);
        }
        format!("?{}", ser.finish())
    };

    if is_fal_url(id) {
        let base = if id.ends_with('/') {
            id.to_owned()
        } else {
            format!("{id}/")
        };
        return Ok(format!("{base}{path}{query}"));
    }
    let app_id = ensure_endpoint_id_format(id)?;
    let sub = options
        .subdomain
        .map(|s| format!("{s}."))
        .unwrap_or_default();
    let url = format!("https://{sub}{RUN_HOST}/{app_id}/{path}");
    let url = url.strip_suffix('/').unwrap_or(&url);
    Ok(format!("{url}{query}"))
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
            return format!("{}/{}", &path[..i], &path[end..]);
        }
        i += 1;
    }
    path.to_owned()
}

/// `resolveEndpointPath(app, path, defaultPath)` (§3.4).
pub fn resolve_endpoint_path(app: &str, path: Option<&str>, default_path: &str) -> Option<String> {
    match path {
        Some(p) => Some(format!("/{}", p.trim_start_matches('/'))),
        None if app.ends_with(default_path) => None,
        None => Some(default_path.to_owned()),
    }
}

/// `POST https://fal.run/{full id}`.
pub fn run_url(id: &str) -> Result<String, InvalidAppId> {
    build_url(id, &UrlOptions::default())
}

/// `POST https://queue.fal.run/{full id}[?fal_webhook=…]` (§8.2).
pub fn queue_submit_url(id: &str, webhook_url: Option<&str>) -> Result<String, InvalidAppId> {
    build_url(
        id,
        &UrlOptions {
            subdomain: Some(QUEUE_SUBDOMAIN),
            query: webhook_url
                .map(|w| vec![("fal_webhook".to_owned(), w.to_owned())])
                .unwrap_or_default(),
            ..Default::default()
        },
    )
}

fn queue_request_url(
    id: &str,
    request_id: &str,
    suffix: &str,
    logs: Option<bool>,
) -> Result<String, InvalidAppId> {
    let app = EndpointId::parse(id)?.app_id();
    build_url(
        &format!("{app}/requests/{request_id}{suffix}"),
        &UrlOptions {
            subdomain: Some(QUEUE_SUBDOMAIN),
            query: logs
                .map(|l| vec![("logs".to_owned(), if l { "1" } else { "0" }.to_owned())])
                .unwrap_or_default(),
            ..Default::default()
        },
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
    format!("{REST_API_URL}/storage/upload/{op}?storage_type={STORAGE_TYPE}")
}

/// `POST https://rest.fal.ai/tokens/` (§12).
pub fn token_url() -> String {
    format!("{REST_API_URL}/tokens/")
}

/// The URL of multipart part `n` (1-based): `{origin}{pathname}/{n}{search}` (§10.3).
pub fn multipart_part_url(upload_url: &str, part: u32) -> Result<String, url::ParseError> {
    multipart_url(upload_url, &part.to_string())
}

/// The multipart completion URL: `{origin}{pathname}/complete{search}` (§10.3).
pub fn multipart_complete_url(upload_url: &str) -> Result<String, url::ParseError> {
    multipart_url(upload_url, "complete")
}

fn multipart_url(upload_url: &str, last: &str) -> Result<String, url::ParseError> {
    let u = Url::parse(upload_url)?;
    let search = u.query().map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!(
        "{}{}/{last}{search}",
        u.origin().ascii_serialization(),
        u.path()
    ))
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
    }
}
