//! `/api/fal/proxy`: what `@fal-ai/server-proxy` does, without its bugs (fal-api.md §14, §17).
//!
//! A request names its real target in `x-fal-target-url`. Targets this server hosts itself (its
//! registered endpoints, and storage in `--storage local` mode) are served locally; the others are
//! forwarded to fal with `Authorization: Key $FAL_KEY`. Kept from the original: the allow-list,
//! forwarding only `x-fal-*` headers plus the forced ones, stripping `content-length`, the
//! `400 "Invalid request"` and `401 "Unauthorized"` answers. Fixed: upstream status codes are kept,
//! `initiate-multipart` and `tokens/` are allowed, `accept`/`content-type` are forwarded rather
//! than overwritten, no `Key undefined` and no `user-agent: undefined` is ever sent, and
//! configured tokens really refuse requests that lack them.

pub mod target;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fresco_protocol::EndpointId;
use fresco_protocol::headers;
use futures_util::TryStreamExt;
use target::{Refusal, Service, Target};

use crate::AppState;
use crate::access::{Authenticated, constant_time_eq, credential, owner_of};
use crate::config::StorageMode;
use crate::http::{self, header_str};

/// Says why the proxy refused, beside the original's terse body.
pub const REASON_HEADER: &str = "x-fresco-proxy-error";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Response headers never copied from upstream: framing and hop-by-hop headers.
const DROPPED_RESPONSE_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

fn refuse(status: StatusCode, body: &str, reason: &str) -> Response {
    let mut res = http::json(status, &body);
    if let Ok(v) = HeaderValue::from_str(reason) {
        res.headers_mut().insert(REASON_HEADER, v);
    }
    res
}

fn invalid(reason: &Refusal) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        "Invalid request",
        &reason.to_string(),
    )
}

fn unauthorized(reason: &str) -> Response {
    refuse(StatusCode::UNAUTHORIZED, "Unauthorized", reason)
}

/// Where a local target is served: the path (and query) on this server.
fn local_path(state: &AppState, target: &Target) -> Option<String> {
    let path = target.url.path();
    let with_query = |p: String| match target.url.query() {
        Some(q) => format!("{p}?{q}"),
        None => p,
    };
    match target.service {
        Service::Run => {
            let id = EndpointId::parse_strict(path.trim_start_matches('/')).ok()?;
            state
                .queue
                .registry()
                .contains(&id.app_id())
                .then(|| with_query(format!("/run{path}")))
        }
        Service::Queue => {
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let take = if fresco_protocol::endpoint::NAMESPACES.contains(&segments[0]) {
                3
            } else {
                2
            };
            let app = segments.get(..take)?.join("/");
            state
                .queue
                .registry()
                .contains(&app)
                .then(|| with_query(path.to_owned()))
        }
        Service::Rest => (state.config.storage == StorageMode::Local
            && path.starts_with("/storage/upload/"))
        .then(|| with_query(path.to_owned())),
    }
}

/// What the proxy made of a request.
pub enum Proxied {
    /// Its answer: a refusal, or fal's answer forwarded.
    Answer(Response),
    /// A target this server serves itself, rewritten to its local path and marked with who the
    /// proxy let in ([`Authenticated`]): the router routes it as any other request.
    Local(Request<Body>),
}

/// Handles one proxied request.
pub async fn handle(state: &AppState, req: Request<Body>) -> Proxied {
    let target = match target::check(header_str(req.headers(), headers::TARGET_URL)) {
        Ok(t) => t,
        Err(r) => return Proxied::Answer(invalid(&r)),
    };
    let client_auth = header_str(req.headers(), header::AUTHORIZATION.as_str()).map(str::to_owned);
    // The proxy's tokens and the server's API keys both let a caller through; with either
    // configured, the caller's Authorization is ours and never goes upstream.
    let config = &state.config;
    let tokens: Vec<&String> = config.proxy_tokens.iter().chain(&config.api_keys).collect();
    let mut owner = None;
    if !tokens.is_empty() {
        let presented = client_auth.as_deref().and_then(credential).unwrap_or("");
        match tokens
            .iter()
            .find(|t| constant_time_eq(t.as_bytes(), presented.as_bytes()))
        {
            Some(t) => owner = Some(owner_of(t)),
            None => {
                return Proxied::Answer(unauthorized(
                    "this proxy requires Authorization: Key <token> with a token it was given",
                ));
            }
        }
    } else if target.service == Service::Rest && target.url.path() == "/tokens/" {
        // A realtime token is minted with FAL_KEY: an open proxy would hand one to anyone.
        return Proxied::Answer(unauthorized(
            "this proxy mints no fal tokens while it is open: give it --proxy-tokens or --api-keys",
        ));
    }

    if let Some(path) = local_path(state, &target) {
        let (mut parts, body) = req.into_parts();
        match path.parse() {
            Ok(uri) => parts.uri = uri,
            Err(_) => return Proxied::Answer(invalid(&Refusal::NotAUrl)),
        }
        parts.extensions.insert(Authenticated(owner));
        return Proxied::Local(Request::from_parts(parts, body));
    }

    // With tokens configured the caller's Authorization was ours; fal gets FAL_KEY.
    let upstream_auth = match (tokens.is_empty(), client_auth, &config.fal_key) {
        (true, Some(auth), _) => auth,
        (_, _, Some(key)) => format!("Key {key}"),
        _ => {
            return Proxied::Answer(unauthorized(
                "no FAL_KEY is configured on this server and the request carries no Authorization of its own",
            ));
        }
    };
    Proxied::Answer(forward(state, target, req, upstream_auth).await)
}

async fn forward(state: &AppState, target: Target, req: Request<Body>, auth: String) -> Response {
    let method = req.method().clone();
    let incoming = req.headers().clone();
    let url = match &state.config.upstream_override {
        Some(base) => {
            let q = target
                .url
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            format!("{}{}{q}", base.trim_end_matches('/'), target.url.path())
        }
        None => target.url.to_string(),
    };
    let body = match http::read_body(req.into_body(), state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut out = HeaderMap::new();
    for (name, value) in &incoming {
        if name.as_str().starts_with(headers::PREFIX) {
            out.append(name.clone(), value.clone());
        }
    }
    let forced: [(HeaderName, Option<HeaderValue>); 5] = [
        (header::AUTHORIZATION, HeaderValue::from_str(&auth).ok()),
        (
            header::ACCEPT,
            incoming
                .get(header::ACCEPT)
                .cloned()
                .or(Some(HeaderValue::from_static("application/json"))),
        ),
        (
            header::CONTENT_TYPE,
            incoming
                .get(header::CONTENT_TYPE)
                .cloned()
                .or(Some(HeaderValue::from_static("application/json"))),
        ),
        (
            header::USER_AGENT,
            incoming
                .get(header::USER_AGENT)
                .cloned()
                .or_else(|| HeaderValue::from_str(&format!("fresco-proxy/{VERSION}")).ok()),
        ),
        (
            HeaderName::from_static(headers::CLIENT_PROXY),
            HeaderValue::from_str(&format!("fresco/{VERSION}")).ok(),
        ),
    ];
    for (name, value) in forced {
        match value {
            Some(v) => {
                out.insert(name, v);
            }
            None => return unauthorized("the Authorization value is not a valid header"),
        }
    }
    let mut builder = state.http.request(method.clone(), &url).headers(out);
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        builder = builder.body(body);
    }
    let upstream = match builder.send().await {
        Ok(r) => r,
        Err(e) => {
            let e = e.without_url();
            let host = target.url.host_str().unwrap_or("fal");
            tracing::warn!(%host, "proxy could not reach upstream: {e}");
            return http::error(
                StatusCode::BAD_GATEWAY,
                &format!("The proxy could not reach {host}: {e}"),
            );
        }
    };
    let mut res = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            res = res.header(name, value);
        }
    }
    let stream = upstream.bytes_stream().map_err(std::io::Error::other);
    res.body(Body::from_stream(stream))
        .unwrap_or_else(|e| http::error(StatusCode::BAD_GATEWAY, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_key_and_bearer() {
        assert_eq!(credential("Key abc"), Some("abc"));
        assert_eq!(credential("Bearer  t1 "), Some("t1"));
        assert_eq!(credential("Basic x"), None);
        assert_eq!(credential("abc"), None);
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
