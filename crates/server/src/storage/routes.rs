//! Storage routes: `POST /storage/upload/initiate[-multipart]`, `PUT /files/upload/{token}`,
//! `PUT /files/multipart/{token}/{n}`, `POST /files/multipart/{token}/complete`,
//! `GET|HEAD /files/{key}/{name}`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use fresco_protocol::headers;
use fresco_protocol::storage::{
    CompleteMultipart, InitiateUpload, ObjectLifecycle, STORAGE_TYPE_NAMES,
};
use fresco_protocol::validate::Validator;
use fresco_protocol::{ValidationErrorItem, urls::STORAGE_TYPE};
use serde_json::json;

use super::Storage;
use crate::http::{self, RouteError, header_str};

/// The largest initiate or complete body.
const MAX_CONTROL_BODY: usize = 1024 * 1024;

fn declared_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok())
}

/// `POST /storage/upload/initiate[-multipart]?storage_type=fal-cdn-v3`.
pub async fn initiate(
    storage: &Storage,
    base_url: &str,
    query: Option<&str>,
    hdrs: &HeaderMap,
    body: Body,
    multipart: bool,
) -> Result<Response, RouteError> {
    let storage_type = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k == "storage_type")
        .map(|(_, v)| v);
    if let Some(t) = storage_type.filter(|t| !STORAGE_TYPE_NAMES.contains(&t.as_str())) {
        return Err(RouteError::from(http::validation(
            ValidationErrorItem::new(
                vec!["query".into(), "storage_type".into()],
                format!("storage_type {t:?} is not supported; use {STORAGE_TYPE:?}"),
                "type_error.enum",
            ),
        )));
    }
    let bytes = http::read_body(body, MAX_CONTROL_BODY).await?;
    let value = http::parse_json(&bytes)?;
    let mut v = Validator::new(&value);
    let content_type = v.string("content_type", true);
    let file_name = v.string("file_name", false);
    v.finish()
        .map_err(|e| RouteError::from(http::json(StatusCode::UNPROCESSABLE_ENTITY, &e)))?;
    let lifecycle = match header_str(hdrs, headers::OBJECT_LIFECYCLE) {
        None => None,
        Some(raw) => Some(serde_json::from_str::<ObjectLifecycle>(raw).map_err(|e| {
            RouteError::from(http::validation(ValidationErrorItem::new(
                vec!["header".into(), headers::OBJECT_LIFECYCLE.into()],
                format!(
                    "expected a JSON object like {{\"expiration_duration_seconds\": 3600}}: {e}"
                ),
                "value_error.json",
            )))
        })?),
    };
    let req = InitiateUpload {
        content_type: content_type.unwrap_or_default(),
        file_name: file_name.unwrap_or_default(),
    };
    let answer = storage
        .initiate(base_url, req, lifecycle, multipart)
        .await?;
    Ok(http::json(StatusCode::OK, &answer))
}

/// `PUT /files/upload/{token}`.
pub async fn put(
    storage: &Storage,
    base_url: &str,
    token: &str,
    hdrs: &HeaderMap,
    body: Body,
) -> Result<Response, RouteError> {
    let file_url = storage
        .put(base_url, token, declared_length(hdrs), body)
        .await?;
    Ok(with_cors(http::json(
        StatusCode::OK,
        &json!({ "file_url": file_url }),
    )))
}

/// `PUT /files/multipart/{token}/{n}`.
pub async fn put_part(
    storage: &Storage,
    token: &str,
    part: &str,
    hdrs: &HeaderMap,
    body: Body,
) -> Result<Response, RouteError> {
    let uploaded = storage
        .put_part(token, part, declared_length(hdrs), body)
        .await?;
    Ok(with_cors(http::json(StatusCode::OK, &uploaded)))
}

/// `POST /files/multipart/{token}/complete`.
pub async fn complete(
    storage: &Storage,
    base_url: &str,
    token: &str,
    body: Body,
) -> Result<Response, RouteError> {
    let bytes = http::read_body(body, MAX_CONTROL_BODY).await?;
    let req: CompleteMultipart = serde_json::from_slice(&bytes).map_err(|e| {
        RouteError::from(http::validation(ValidationErrorItem::new(
            vec!["body".into(), "parts".into()],
            format!("expected {{\"parts\": [{{\"partNumber\": 1, \"etag\": \"…\"}}, …]}}: {e}"),
            "value_error",
        )))
    })?;
    let file_url = storage.complete(base_url, token, &req.parts).await?;
    Ok(with_cors(http::json(
        StatusCode::OK,
        &json!({ "file_url": file_url }),
    )))
}

/// `GET|HEAD /files/{key}/{name}`.
pub async fn get(
    storage: &Storage,
    method: &Method,
    key: &str,
    name: &str,
) -> Result<Response, RouteError> {
    let Some(file) = storage.get(key, name).await? else {
        return Err(RouteError::new(
            StatusCode::NOT_FOUND,
            "File not found (it may have expired)",
        ));
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let f = tokio::fs::File::open(&file.path)
            .await
            .map_err(RouteError::internal)?;
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024))
    };
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&file.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    // Stored files come from anyone who may upload, and are served from the origin of the
    // site, the queue and the proxy: nothing in them may run there (stored XSS). The type is
    // not sniffed, the document is sandboxed (no script, an opaque origin), and what is not
    // plainly media or data is a download, not a page.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'",
        ),
    );
    let disposition = if shown_inline(&file.content_type) {
        "inline"
    } else {
        "attachment"
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{disposition}; filename*=UTF-8''{}",
        super::encode_segment(&file.file_name)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(with_cors(res))
}

/// Whether a stored file of this type may be shown in the browser rather than downloaded:
/// images (but SVG, which is a document that runs script), audio, video, plain text and data.
pub fn shown_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/').unwrap_or((&essence, ""));
    match kind {
        "image" => !sub.contains("svg"),
        "audio" | "video" => true,
        "text" => sub == "plain",
        "application" => matches!(sub, "json" | "octet-stream"),
        _ => false,
    }
}

/// Files and upload URLs are capabilities (unguessable URLs), usable from any origin, like a CDN.
pub fn with_cors(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::shown_inline;

    #[test]
    fn only_media_and_plain_data_are_shown_inline() {
        for inline in [
            "image/png",
            "image/jpeg",
            "IMAGE/WEBP",
            "audio/mpeg",
            "video/mp4",
            "text/plain; charset=utf-8",
            "application/json",
            "application/octet-stream",
        ] {
            assert!(shown_inline(inline), "{inline}");
        }
        for download in [
            "text/html",
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "application/javascript",
            "text/javascript",
            "text/xml",
            "application/pdf",
            "",
            "nonsense",
        ] {
            assert!(!shown_inline(download), "{download}");
        }
    }
}
