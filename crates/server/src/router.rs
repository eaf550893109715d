//! Routing: one dispatcher over the path segments, shared by the HTTP server and by the proxy
//! when it serves a local target (so both reach exactly the same code).

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fresco_protocol::EndpointId;
use fresco_protocol::endpoint::NAMESPACES;
use serde_json::json;
use tower::ServiceExt;

use crate::access;
use crate::http::{self, RouteError};
use crate::queue::routes as q;
use crate::storage::routes as st;
use crate::{AppState, proxy};

/// The axum app: everything goes through [`dispatch`].
pub fn app(state: AppState) -> Router {
    Router::new().fallback(handler).with_state(state)
}

async fn handler(State(state): State<AppState>, req: Request<Body>) -> Response {
    dispatch(state, req).await
}

/// Headers a browser on another origin may read (`content-range` for the local engine, which
/// reads a model file's size from its answer to a `Range` request).
const EXPOSED_HEADERS: &str = "x-fal-request-id, x-fal-request-timeout-type, x-fal-error-type, x-fresco-proxy-error, content-range, accept-ranges";

/// Routes one request.
pub async fn dispatch(state: AppState, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let is_file_route = path.starts_with("/files/");
    let mut res = if method == Method::OPTIONS {
        preflight(&state, origin.as_ref(), is_file_route)
    } else {
        route(&state, req)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    };
    if !is_file_route && let Some(o) = origin.filter(|o| origin_allowed(&state, o)) {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
    tracing::debug!(%method, %path, status = res.status().as_u16(), "request");
    res
}

fn origin_allowed(state: &AppState, origin: &HeaderValue) -> bool {
    let Ok(o) = origin.to_str() else { return false };
    state.config.cors_origins.iter().any(|a| a == "*" || a == o)
}

fn preflight(state: &AppState, origin: Option<&HeaderValue>, is_file_route: bool) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let allowed = match origin {
        Some(_) if is_file_route => Some(HeaderValue::from_static("*")),
        Some(o) if origin_allowed(state, o) => Some(o.clone()),
        _ => None,
    };
    if let Some(o) = allowed {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("*, authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    res
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Where `requests` stands in a queue path: after `owner/alias`, or `namespace/owner/alias`.
fn requests_index(segs: &[&str]) -> Option<usize> {
    let i = if NAMESPACES.contains(segs.first()?) {
        3
    } else {
        2
    };
    (segs.len() > i + 1 && segs[i] == "requests" && segs[..i].iter().all(|s| !s.is_empty()))
        .then_some(i)
}

async fn route(state: &AppState, req: Request<Body>) -> Result<Response, RouteError> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let query = uri.query();
    let decoded: Vec<String> = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let base = http::base_url(state.config.public_url.as_deref(), req.headers());
    let limit = state.config.max_body_bytes;
    let headers: HeaderMap = req.headers().clone();
    let config = &state.config;

    // Where from (every route): a Host that is not this server's is a rebinding page; a write
    // from a page of another site is refused. File routes are capabilities any site may use.
    if !access::host_allowed(config, &headers) {
        return Err(RouteError::new(
            StatusCode::FORBIDDEN,
            "The Host header does not name this server (start it with --public-url or --allow-host to serve this name)",
        ));
    }
    let own = [
        Some(http::base_url(None, &headers)),
        config.public_url.clone(),
    ];
    if segs.first() != Some(&"files")
        && !own
            .iter()
            .flatten()
            .any(|b| access::origin_allowed(config, &method, &headers, b))
    {
        let origin = http::header_str(&headers, header::ORIGIN.as_str()).unwrap_or("");
        return Err(RouteError::new(
            StatusCode::FORBIDDEN,
            format!(
                "A request from the page of {origin} is refused: that origin is not allowed (--allow-origin)"
            ),
        ));
    }
    // Who (every route but the proxy, which checks its own tokens, /health, the site and the
    // file routes): the proxy, serving a target locally, says who it let in.
    let authenticated = req.extensions().get::<access::Authenticated>().cloned();
    let caller = || -> Result<q::Caller, RouteError> {
        let owner = match &authenticated {
            Some(a) => a.0.clone(),
            None => access::caller(&config.api_keys, &headers)?,
        };
        Ok(q::Caller {
            base_url: base.clone(),
            owner,
        })
    };

    if segs == ["api", "fal", "proxy"] {
        return Ok(match proxy::handle(state, req).await {
            proxy::Proxied::Answer(res) => res,
            // A target served here goes through the same routes as a direct request.
            proxy::Proxied::Local(req) => Box::pin(dispatch(state.clone(), req)).await,
        });
    }
    let storage = &state.storage;
    match (&method, segs.as_slice()) {
        (&Method::POST, ["storage", "upload", "initiate"]) => {
            caller()?;
            return st::initiate(storage, &base, query, &headers, req.into_body(), false).await;
        }
        (&Method::POST, ["storage", "upload", "initiate-multipart"]) => {
            caller()?;
            return st::initiate(storage, &base, query, &headers, req.into_body(), true).await;
        }
        (&Method::PUT, ["files", "upload", token]) => {
            return st::put(storage, &base, token, &headers, req.into_body()).await;
        }
        (&Method::PUT, ["files", "multipart", token, part]) => {
            return st::put_part(storage, token, part, &headers, req.into_body()).await;
        }
        (&Method::POST, ["files", "multipart", token, "complete"]) => {
            return st::complete(storage, &base, token, req.into_body()).await;
        }
        (&Method::GET | &Method::HEAD, ["files", key, name]) => {
            if config.files_need_key {
                caller()?;
            }
            return st::get(storage, &method, key, name).await;
        }
        (_, ["files", ..]) | (_, ["storage", ..]) => {
            return Err(RouteError::new(
                StatusCode::NOT_FOUND,
                format!("No storage route {method} {}", uri.path()),
            ));
        }
        (&Method::GET, ["health"]) => {
            let mut endpoints: Vec<&str> = state.queue.registry().app_ids().collect();
            endpoints.sort_unstable();
            return Ok(http::json(
                StatusCode::OK,
                &json!({ "status": "ok", "endpoints": endpoints }),
            ));
        }
        (&Method::POST, ["run", rest @ ..]) => {
            let caller = caller()?;
            let endpoint = parse_endpoint(&rest.join("/"))?;
            return q::run(
                &state.queue,
                endpoint,
                &headers,
                req.into_body(),
                caller,
                limit,
            )
            .await;
        }
        _ => {}
    }

    if let Some(i) = requests_index(&segs) {
        let app = segs[..i].join("/");
        let id = segs[i + 1];
        // Another key's request is, for this caller, no request at all.
        let owner = caller()?.owner;
        if !state.queue.owned_by(id, owner.as_deref()).await? {
            return Err(match (&method, &segs[i + 2..]) {
                (&Method::PUT, ["cancel"]) => q::cancel_not_found(id),
                _ => q::request_not_found(id),
            });
        }
        return match (&method, &segs[i + 2..]) {
            (&Method::GET, []) => q::result(&state.queue, &app, id).await,
            (&Method::GET, ["status"]) => q::status(&state.queue, &app, id, query).await,
            (&Method::GET, ["status", "stream"]) => {
                q::status_stream(&state.queue, &app, id, query).await
            }
            (&Method::PUT, ["cancel"]) => q::cancel(&state.queue, &app, id).await,
            _ => Err(RouteError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {}", uri.path()),
            )),
        };
    }
    if method == Method::POST {
        let caller = caller()?;
        let endpoint = parse_endpoint(&segs.join("/"))?;
        return q::submit(
            &state.queue,
            endpoint,
            query,
            &headers,
            req.into_body(),
            caller,
            limit,
        )
        .await;
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(static_file(state, req).await);
    }
    Err(RouteError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    ))
}

fn parse_endpoint(id: &str) -> Result<EndpointId, RouteError> {
    EndpointId::parse_strict(id).map_err(|e| RouteError::new(StatusCode::NOT_FOUND, e.to_string()))
}

async fn static_file(state: &AppState, req: Request<Body>) -> Response {
    let Some(dir) = &state.config.www_dir else {
        return http::error(
            StatusCode::NOT_FOUND,
            "Not found (no site directory is configured)",
        );
    };
    let serve = tower_http::services::ServeDir::new(dir).append_index_html_on_directories(true);
    match serve.oneshot(req).await {
        Ok(res) if res.status() == StatusCode::NOT_FOUND => {
            http::error(StatusCode::NOT_FOUND, "Not found")
        }
        Ok(res) => res.map(Body::new),
        Err(e) => http::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_paths_are_found_with_and_without_namespace() {
        assert_eq!(
            requests_index(&["fal-ai", "flux", "requests", "id"]),
            Some(2)
        );
        assert_eq!(
            requests_index(&["fal-ai", "flux", "requests", "id", "status"]),
            Some(2)
        );
        assert_eq!(
            requests_index(&["workflows", "me", "wf", "requests", "id"]),
            Some(3)
        );
        assert_eq!(requests_index(&["fal-ai", "flux", "dev"]), None);
        assert_eq!(requests_index(&["fal-ai", "flux", "requests"]), None);
        assert_eq!(requests_index(&["index.html"]), None);
    }
}
