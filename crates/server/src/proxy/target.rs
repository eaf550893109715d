//! Which `x-fal-target-url`s the proxy accepts.
//!
//! The same targets as `@fal-ai/server-proxy`'s default allow-list (fal-api.md §14.2), checked on
//! the parsed URL rather than with a glob over a string, and stricter where the original is loose:
//! only `https`, no user info, no port, no IP literal, no control characters. Added to the
//! original list: `initiate-multipart` and `tokens/`, which the client needs and the original
//! refuses (§14.2, §17).

use fresco_protocol::urls::{QUEUE_HOST, REST_HOST, RUN_HOST, STORAGE_TYPE};
use url::{Host, Url};

/// Which fal service a target belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `fal.run`: synchronous runs.
    Run,
    /// `queue.fal.run`: the queue.
    Queue,
    /// `rest.fal.ai`: storage and tokens.
    Rest,
}

/// An accepted target.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: Service,
    pub url: Url,
}

/// Why a target was refused (told to the caller in a header; the body stays `"Invalid request"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing x-fal-target-url header")]
    Missing,
    #[error("the target URL contains whitespace or control characters")]
    ControlCharacters,
    #[error("the target is not an absolute URL")]
    NotAUrl,
    #[error("only https targets are allowed")]
    NotHttps,
    #[error("the target URL must not carry user info")]
    UserInfo,
    #[error("the target must not name a port")]
    Port,
    #[error("the target host must be a fal host name, not an IP address")]
    IpLiteral,
    #[error("host {0:?} is not allowed (allowed: fal.run, queue.fal.run, rest.fal.ai)")]
    Host(String),
    #[error("path {0:?} of rest.fal.ai is not allowed")]
    RestPath(String),
}

/// The rest.fal.ai paths the client uses, and the query each must have.
fn rest_path_allowed(path: &str, query: Option<&str>) -> bool {
    let storage_query = format!("storage_type={STORAGE_TYPE}");
    match path {
        "/storage/upload/initiate"
        | "/storage/upload/initiate-multipart"
        | "/storage/upload/complete-multipart" => query == Some(storage_query.as_str()),
        "/tokens/" => query.is_none(),
        _ => false,
    }
}

/// Checks a target URL against the allow-list.
pub fn check(raw: Option<&str>) -> Result<Target, Refusal> {
    let raw = raw.filter(|r| !r.is_empty()).ok_or(Refusal::Missing)?;
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Refusal::ControlCharacters);
    }
    let url = Url::parse(raw).map_err(|_| Refusal::NotAUrl)?;
    if url.scheme() != "https" {
        return Err(Refusal::NotHttps);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::UserInfo);
    }
    if url.port().is_some() {
        return Err(Refusal::Port);
    }
    let host = match url.host() {
        Some(Host::Domain(d)) => d.to_owned(),
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => return Err(Refusal::IpLiteral),
        None => return Err(Refusal::NotAUrl),
    };
    let service = match host.as_str() {
        RUN_HOST => Service::Run,
        QUEUE_HOST => Service::Queue,
        REST_HOST => Service::Rest,
        _ => return Err(Refusal::Host(host)),
    };
    if service == Service::Rest && !rest_path_allowed(url.path(), url.query()) {
        let shown = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        return Err(Refusal::RestPath(shown));
    }
    Ok(Target { service, url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_targets_of_the_verified_matrix() {
        for ok in [
            "https://fal.run/fal-ai/flux/dev",
            "https://fal.run/a/b?x=1&y=2",
            "https://queue.fal.run/fal-ai/flux/requests/x/status?logs=1",
            "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
            "https://rest.fal.ai/storage/upload/complete-multipart?storage_type=fal-cdn-v3",
            "https://fal.run",
            "https://fal.run/",
            "https://FAL.RUN/x",
            // Fixed: the original refuses these two, which breaks big uploads and tokens.
            "https://rest.fal.ai/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
            "https://rest.fal.ai/tokens/",
        ] {
            assert!(check(Some(ok)).is_ok(), "{ok} should be allowed");
        }
    }

    #[test]
    fn services_are_told_apart() {
        assert_eq!(
            check(Some("https://fal.run/a/b")).unwrap().service,
            Service::Run
        );
        assert_eq!(
            check(Some("https://queue.fal.run/a/b")).unwrap().service,
            Service::Queue
        );
        assert_eq!(
            check(Some("https://rest.fal.ai/tokens/")).unwrap().service,
            Service::Rest
        );
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(check(None).unwrap_err(), Refusal::Missing);
        assert_eq!(
            check(Some("http://fal.run/x")).unwrap_err(),
            Refusal::NotHttps
        );
        assert_eq!(
            check(Some("https://fal.run@evil.com/x")).unwrap_err(),
            Refusal::UserInfo
        );
        assert_eq!(
            check(Some("https://evil.com#@fal.run")).unwrap_err(),
            Refusal::Host("evil.com".into())
        );
        assert_eq!(
            check(Some("https://u:p@fal.run/x")).unwrap_err(),
            Refusal::UserInfo
        );
        assert_eq!(
            check(Some("https://fal.run:8443/x")).unwrap_err(),
            Refusal::Port
        );
        assert_eq!(
            check(Some("https://2130706433/")).unwrap_err(),
            Refusal::IpLiteral
        );
        assert_eq!(
            check(Some("https://fal.run/\nx")).unwrap_err(),
            Refusal::ControlCharacters
        );
        assert!(matches!(
            check(Some("https://rest.fal.ai/admin")).unwrap_err(),
            Refusal::RestPath(_)
        ));
    }
}
