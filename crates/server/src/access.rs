//! Who may call, and from where.
//!
//! - **API keys**, asked as fal asks for them (`Authorization: Key <key>`; `Bearer` too), on
//!   every route but `/health`, the site and (unless `--files-need-key`) `/files`, whose URLs
//!   are capabilities. A request belongs to the key that made it: another key asking for its
//!   status, result or cancel is told it does not exist. Without keys, the server binds only to
//!   loopback (see `fresco serve --insecure-no-auth`), and every caller is the same one.
//! - **Cross-site requests**: a browser page on another site can send a POST without a preflight
//!   (`text/plain`, a form). A request that changes state and carries an `Origin` that is neither
//!   this server's own nor an allowed one (`--allow-origin`) is refused, and so is a body that
//!   is not JSON where JSON is expected.
//! - **DNS rebinding**: a page whose host name is made to resolve to 127.0.0.1 talks to a server
//!   on loopback as same-origin; its `Host` header still carries its own name. A `Host` that is a
//!   name must be this server's: the public URL's host or `--allow-host`'s, or, without either,
//!   `localhost` when the server listens on loopback. Addresses and `localhost` always pass: no
//!   attacker's DNS stands behind them.

use crate::config::Config;
use crate::http::{self, RouteError};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// Set by the proxy on a request it serves locally, once it has checked the caller: the owner
/// the request runs as. (Extensions cannot come from the network.)
#[derive(Debug, Clone)]
pub struct Authenticated(pub Option<String>);

/// The credential in `Authorization: Key <x>` or `Bearer <x>`.
pub fn credential(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("key") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| rest.trim())
}

/// Compares without an early exit, so the time taken does not tell how much of a key matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The owner a key's requests are stored under: a hash, so the database holds no key.
pub fn owner_of(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Which of `keys` the request presents, as its owner; `Ok(None)` when there are no keys.
pub fn caller(keys: &[String], headers: &HeaderMap) -> Result<Option<String>, RouteError> {
    if keys.is_empty() {
        return Ok(None);
    }
    let presented = http::header_str(headers, header::AUTHORIZATION.as_str())
        .and_then(credential)
        .unwrap_or("");
    keys.iter()
        .find(|k| constant_time_eq(k.as_bytes(), presented.as_bytes()))
        .map(|k| Some(owner_of(k)))
        .ok_or_else(|| {
            let mut res = http::error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: this server needs Authorization: Key <key> with one of its API keys",
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Key"));
            RouteError::from(res)
        })
}

/// Whether the `Host` header names this server (see the module's notes).
pub fn host_allowed(config: &Config, headers: &HeaderMap) -> bool {
    let Some(host) = http::header_str(headers, header::HOST.as_str()) else {
        // HTTP/1.0 without a Host: not a browser, so not a rebinding.
        return true;
    };
    let name = host_name(host);
    // Rebinding needs a name the attacker's DNS answers for: an address, or `localhost` (which
    // browsers resolve themselves), cannot be one.
    let literal = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok();
    if literal || name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let configured: Vec<String> = config
        .allowed_hosts
        .iter()
        .map(|h| host_name(h))
        .chain(
            config
                .public_url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| u.host_str().map(host_name)),
        )
        .collect();
    if !configured.is_empty() {
        return configured.contains(&name);
    }
    // No name configured: a server on loopback has none but `localhost`; elsewhere any goes.
    !config.listen.ip().is_loopback()
}

/// `Host: Name:8080` → `name`; `[::1]:8080` → `[::1]`.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request that changes state may come from the page that sent it: no `Origin` (not
/// a browser, or a same-origin GET), this server's own origin, or an allowed one.
pub fn origin_allowed(config: &Config, method: &Method, headers: &HeaderMap, own: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let Some(origin) = http::header_str(headers, header::ORIGIN.as_str()) else {
        return true;
    };
    origin.eq_ignore_ascii_case(own)
        || config
            .cors_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Whether a body where JSON is expected says it is JSON (`application/json`, `…+json`); an
/// empty body needs no type.
pub fn json_content_type(headers: &HeaderMap, body_len: usize) -> bool {
    if body_len == 0 {
        return true;
    }
    let Some(t) = http::header_str(headers, header::CONTENT_TYPE.as_str()) else {
        return false;
    };
    let essence = t
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_are_checked_and_owners_are_hashes() {
        let keys = vec!["alpha:1".to_owned(), "beta".to_owned()];
        assert_eq!(caller(&[], &HeaderMap::new()).unwrap(), None);
        for bad in [
            "",
            "Key ",
            "Key alpha",
            "Key alpha:12",
            "Basic alpha:1",
            "alpha:1",
        ] {
            let h = headers(&[("authorization", bad)]);
            let res = axum::response::IntoResponse::into_response(caller(&keys, &h).unwrap_err());
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
        }
        assert!(caller(&keys, &HeaderMap::new()).is_err());
        let a = caller(&keys, &headers(&[("authorization", "Key alpha:1")])).unwrap();
        let b = caller(&keys, &headers(&[("authorization", "Bearer beta")])).unwrap();
        assert_eq!(a.as_deref(), Some(owner_of("alpha:1").as_str()));
        assert_ne!(a, b);
        assert_eq!(owner_of("alpha:1").len(), 32);
        assert!(!owner_of("alpha:1").contains("alpha"));
    }

    #[test]
    fn hosts_are_loopback_names_on_a_loopback_server() {
        let mut c = Config::new("/tmp/x");
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:80",
            "app.localhost:1",
            "127.0.0.2",
            "10.0.0.1:8080",
        ] {
            assert!(host_allowed(&c, &headers(&[("host", ok)])), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
        ] {
            assert!(!host_allowed(&c, &headers(&[("host", bad)])), "{bad}");
        }
        c.public_url = Some("https://fresco.example.com".into());
        assert!(host_allowed(
            &c,
            &headers(&[("host", "fresco.example.com")])
        ));
        assert!(host_allowed(&c, &headers(&[("host", "localhost:8080")])));
        assert!(!host_allowed(&c, &headers(&[("host", "evil.example")])));
        c.allowed_hosts = vec!["other.example".into()];
        assert!(host_allowed(
            &c,
            &headers(&[("host", "other.example:8080")])
        ));
        let mut open = Config::new("/tmp/x");
        open.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(host_allowed(&open, &headers(&[("host", "anything:1")])));
        open.public_url = Some("https://fresco.example.com".into());
        assert!(!host_allowed(&open, &headers(&[("host", "anything:1")])));
    }

    #[test]
    fn cross_site_writes_are_refused() {
        let mut c = Config::new("/tmp/x");
        let own = "http://127.0.0.1:8080";
        let post = Method::POST;
        assert!(origin_allowed(&c, &post, &HeaderMap::new(), own));
        assert!(origin_allowed(&c, &post, &headers(&[("origin", own)]), own));
        assert!(!origin_allowed(
            &c,
            &post,
            &headers(&[("origin", "https://evil.example")]),
            own
        ));
        assert!(!origin_allowed(
            &c,
            &post,
            &headers(&[("origin", "null")]),
            own
        ));
        assert!(origin_allowed(
            &c,
            &Method::GET,
            &headers(&[("origin", "https://evil.example")]),
            own
        ));
        c.cors_origins = vec!["https://app.example".into()];
        assert!(origin_allowed(
            &c,
            &Method::PUT,
            &headers(&[("origin", "https://app.example")]),
            own
        ));
        assert!(!origin_allowed(
            &c,
            &Method::PUT,
            &headers(&[("origin", "https://evil.example")]),
            own
        ));
    }

    #[test]
    fn json_bodies_say_so() {
        assert!(json_content_type(&HeaderMap::new(), 0));
        assert!(!json_content_type(&HeaderMap::new(), 2));
        assert!(json_content_type(
            &headers(&[("content-type", "application/json; charset=utf-8")]),
            2
        ));
        assert!(json_content_type(
            &headers(&[("content-type", "application/merge-patch+json")]),
            2
        ));
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
        ] {
            assert!(
                !json_content_type(&headers(&[("content-type", bad)]), 2),
                "{bad}"
            );
        }
    }
}
