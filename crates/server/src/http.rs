//! Small HTTP helpers shared by the routes: JSON answers, error answers, body reading, base URLs.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fresco_protocol::error::{ErrorBody, ValidationErrorBody, ValidationErrorItem};
use http_body_util::BodyExt;
use serde::Serialize;

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not serialize the answer: {e}"),
        ),
    }
}

/// A JSON answer from bytes that already are JSON.
pub fn json_bytes(status: StatusCode, bytes: impl Into<Body>) -> Response {
    let mut res = Response::new(bytes.into());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// `{"detail": "<message>"}` with a status.
pub fn error(status: StatusCode, detail: &str) -> Response {
    json(status, &ErrorBody::new(detail))
}

/// A 422 with one validation error.
pub fn validation(item: ValidationErrorItem) -> Response {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &ValidationErrorBody { detail: vec![item] },
    )
}

/// An error a route returns: the JSON answer to send.
#[derive(Debug)]
pub struct RouteError(Box<Response>);

impl IntoResponse for RouteError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl RouteError {
    /// For a log line: the status it answers (its body was logged where it was made).
    pub fn detail(&self) -> String {
        format!("answered {}", self.0.status())
    }
}

impl From<Response> for RouteError {
    fn from(res: Response) -> Self {
        RouteError(Box::new(res))
    }
}

impl RouteError {
    pub fn new(status: StatusCode, detail: impl AsRef<str>) -> Self {
        RouteError::from(error(status, detail.as_ref()))
    }

    /// A failure of the server itself. Its detail (an io error may name a file of the server's)
    /// goes to the log under a reference; the caller gets the reference only.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        RouteError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Internal server error {}", logged_reference(&e)),
        )
    }
}

/// Logs `e` under a fresh reference and returns the words that point a caller to it:
/// `(reference 1a2b3c4d5e6f: the server's log has the details)`.
pub fn logged_reference(e: &dyn std::fmt::Display) -> String {
    let reference = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    tracing::error!(reference, "internal error: {e}");
    format!("(reference {reference}: the server's log has the details)")
}

impl RouteError {}

impl From<crate::db::DbError> for RouteError {
    fn from(e: crate::db::DbError) -> Self {
        RouteError::internal(e)
    }
}

/// Reads a whole body, refusing (413) one larger than `limit` bytes without reading it all.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, RouteError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(RouteError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The request body is larger than the limit of {limit} bytes"),
            ))
        }
        Err(e) => Err(RouteError::new(
            StatusCode::BAD_REQUEST,
            format!("Could not read the request body: {e}"),
        )),
    }
}

/// Parses a JSON body; malformed JSON is a 422 on `["body", <offset>]` as FastAPI reports it.
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, RouteError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let offset = byte_offset(bytes, e.line(), e.column());
        RouteError::from(validation(
            ValidationErrorItem::new(
                vec!["body".into(), offset.into()],
                format!("JSON decode error: {e}"),
                "value_error.jsondecode",
            )
            .with_ctx(serde_json::json!({ "msg": e.to_string(), "pos": offset, "lineno": e.line(), "colno": e.column() })),
        ))
    })
}

fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut current = 1;
    for (i, b) in bytes.iter().enumerate() {
        if current == line {
            return (i + column.saturating_sub(1)).min(bytes.len());
        }
        if *b == b'\n' {
            current += 1;
        }
    }
    bytes.len()
}

/// The absolute base URL (no trailing slash) for URLs handed out in answers: the configured
/// public URL, else `http(s)://{Host}` of the request.
pub fn base_url(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("127.0.0.1");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{proto}://{host}")
}

/// A header's value as a string, if it is present and valid.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_points_at_the_offset() {
        let err = parse_json(b"{\"a\": 1,\n \"b\": }").unwrap_err();
        assert_eq!(
            err.into_response().status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn byte_offsets_follow_lines() {
        assert_eq!(byte_offset(b"abc\ndef", 2, 2), 5);
        assert_eq!(byte_offset(b"abc", 1, 3), 2);
    }

    #[test]
    fn base_urls_come_from_config_or_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.test:8080"));
        assert_eq!(base_url(None, &h), "http://example.test:8080");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(base_url(None, &h), "https://example.test:8080");
        assert_eq!(base_url(Some("https://cdn.test/"), &h), "https://cdn.test");
    }

    #[tokio::test]
    async fn an_internal_error_answers_a_reference_not_its_detail() {
        let detail = "No such file or directory: /var/lib/fresco/files/ab/cd (etag 5f1e)";
        let res = RouteError::internal(detail).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("reference "), "{text}");
        for secret in ["/var/lib", "etag", "No such file"] {
            assert!(!text.contains(secret), "{text}");
        }
        let job = crate::endpoints::hidden("Reading a stored file", detail);
        assert!(
            job.message()
                .starts_with("Reading a stored file failed (reference ")
        );
        assert!(
            !job.body().to_string().contains("/var/lib"),
            "{}",
            job.body()
        );
    }
}
