//! Requests to addresses that callers name — `image_url`, `mask_url`, a `model_name` URL, a
//! `fal_webhook` — reach public hosts only, as fal's own fetches do. A caller must not be able to
//! make the server talk to itself, to the machine's other services, to the cloud's metadata
//! service or to the private network behind it (server-side request forgery).
//!
//! Three guards, all needed:
//! - a URL's host that is an IP address (in any spelling the URL standard accepts: `127.1`,
//!   `2130706433`, `0x7f000001`, `0177.0.0.1`, `[::ffff:127.0.0.1]` — the `url` crate parses
//!   them all to an address) is checked before the request, and again on every redirect hop;
//! - a host name is resolved by [`PublicOnly`], which hands the connector only public addresses:
//!   the connection goes to the address that was checked, so a name that resolves to a public
//!   address when checked and a private one when connected (DNS rebinding) gets nowhere;
//! - no proxy from the environment (it would resolve names itself).
//!
//! `--allow-private-urls` turns all of it off, for development and tests on one machine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Redirect hops followed at most.
const MAX_REDIRECTS: usize = 5;

/// Why a URL was not fetched. Its text is for the server's log: callers are told only that the
/// fetch failed, so that errors do not map the network for them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    #[error("{0:?} is not an absolute http(s) URL")]
    NotHttp(String),
    #[error("{host} is not a public address")]
    Private { host: String },
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local,
/// shared (CGNAT), unique-local, multicast, unspecified, broadcast, documentation, benchmarking
/// or reserved — IPv4 addresses inside IPv6 (mapped, compatible, NAT64, 6to4) judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0 included
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254) // link-local, the cloud metadata service's
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4 carried inside IPv6 is judged as the IPv4 address it reaches.
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if s[..6] == [0; 6] {
        // ::, ::1 (as 0.0.0.0 and 0.0.0.1) and the deprecated IPv4-compatible ::a.b.c.d.
        return is_public_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return is_public_v4(embedded(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2])); // 6to4
    }
    !((s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] < 0x0200) // Teredo, benchmarking, ORCHID: IETF special use
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only
        || s[0] == 0) // the rest of ::/16
}

/// Checks what can be checked of `url` before it is fetched: an http(s) URL whose host, when it
/// is an address, is public. (A host name is checked when it is resolved, by [`PublicOnly`].)
pub fn check_url(url: &Url) -> Result<(), Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::NotHttp(url.to_string()));
    }
    let private = |host: String| Err(Refused::Private { host });
    match url.host() {
        Some(Host::Ipv4(ip)) if !is_public_v4(ip) => private(ip.to_string()),
        Some(Host::Ipv6(ip)) if !is_public_v6(ip) => private(ip.to_string()),
        Some(Host::Domain(d))
            if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") =>
        {
            private(d.to_owned())
        }
        Some(_) => Ok(()),
        None => Err(Refused::NotHttp(url.to_string())),
    }
}

/// A resolver that answers only a name's public addresses, and fails for a name with none.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(Refused::Private { host }) as _);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The client for requests to callers' URLs, and whether private addresses are allowed.
#[derive(Clone)]
pub struct Outbound {
    http: reqwest::Client,
    allow_private: bool,
}

impl Outbound {
    /// `allow_private`: reach any address (development and tests on one machine).
    pub fn new(allow_private: bool) -> Result<Self, String> {
        let http = builder(allow_private).build().map_err(|e| e.to_string())?;
        Ok(Outbound {
            http,
            allow_private,
        })
    }

    /// `url` parsed and checked; fetch it with [`Outbound::client`].
    pub fn check(&self, url: &str) -> Result<Url, Refused> {
        let parsed = Url::parse(url).map_err(|_| Refused::NotHttp(url.to_owned()))?;
        if self.allow_private {
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Refused::NotHttp(url.to_owned()));
            }
        } else {
            check_url(&parsed)?;
        }
        Ok(parsed)
    }

    /// The client that resolves names to public addresses only and checks every redirect. Use
    /// it for URLs that [`Outbound::check`] passed.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }
}

/// The client's settings: with `allow_private` off, names resolve to public addresses only, no
/// proxy, and every redirect hop is checked.
fn builder(allow_private: bool) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("fresco/", env!("CARGO_PKG_VERSION")));
    if allow_private {
        builder.redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
    } else {
        builder
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if let Err(refused) = check_url(attempt.url()) {
                    attempt.error(refused)
                } else {
                    attempt.follow()
                }
            }))
    }
}

/// A failed request's reason with its causes (a refused address, a refused connection, a
/// timeout), without the URL: for the server's log.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused_in_every_spelling() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[ff02::1]/",
            "http://[::]/",
            "http://0.0.0.0/",
            "http://0/",
            "http://localhost:8080/",
            "http://LOCALHOST/",
            "http://a.localhost/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "https://[::ffff:a9fe:a9fe]/",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert!(
                matches!(check_url(&parsed), Err(Refused::Private { .. })),
                "{url} → {parsed} was not refused"
            );
        }
    }

    #[test]
    fn public_addresses_and_names_pass() {
        for url in [
            "https://example.com/a.png",
            "http://8.8.8.8/",
            "http://172.32.0.1/",
            "http://100.128.0.1/",
            "http://[2606:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
        ] {
            assert!(check_url(&Url::parse(url).unwrap()).is_ok(), "{url}");
        }
    }

    #[test]
    fn only_http_schemes() {
        for url in ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"] {
            assert!(
                matches!(
                    check_url(&Url::parse(url).unwrap()),
                    Err(Refused::NotHttp(_))
                ),
                "{url}"
            );
        }
        let open = Outbound::new(true).unwrap();
        assert!(open.check("file:///etc/passwd").is_err());
        assert!(open.check("http://127.0.0.1:1/").is_ok());
        let closed = Outbound::new(false).unwrap();
        assert!(closed.check("http://127.0.0.1:1/").is_err());
        assert!(closed.check("not a url").is_err());
    }

    #[tokio::test]
    async fn a_redirect_into_a_private_address_is_not_followed() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A canary on 127.0.0.1 that counts who reaches it.
        let canary = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let canary_port = canary.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = canary.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                // The request first (its headers fit one read here), then the answer.
                let _ = conn.read(&mut [0; 4096]).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        // A redirector that sends each request where its query says.
        let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
            let to = uri
                .query()
                .unwrap_or("")
                .trim_start_matches("to=")
                .to_owned();
            (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, to)],
            )
        });
        let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = redirector.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(redirector, app).await });
        // The redirector stands for a public host: its name is pinned to it in this client only
        // (a test can have no public host), so the first hop is allowed and the next one judged.
        let guarded = builder(false).resolve("public.test", at).build().unwrap();
        for target in [
            format!("http://127.0.0.1:{canary_port}/"),
            format!("http://2130706433:{canary_port}/"),
            format!("http://[::ffff:127.0.0.1]:{canary_port}/"),
            format!("http://localhost:{canary_port}/"),
            "http://169.254.169.254/".to_owned(),
        ] {
            let url = format!("http://public.test:{}/?to={target}", at.port());
            let err = guarded.get(&url).send().await.expect_err(&target);
            assert!(err.is_redirect(), "{target}: {err:?}");
            assert!(describe(err).contains("not a public address"), "{target}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the canary was reached");
        // Allowed, the same redirect is followed (so the test above can fail).
        let open = builder(true).resolve("public.test", at).build().unwrap();
        let url = format!(
            "http://public.test:{}/?to=http://127.0.0.1:{canary_port}/",
            at.port()
        );
        assert!(open.get(&url).send().await.unwrap().status().is_success());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_resolver_hands_out_no_private_address() {
        let refused = PublicOnly
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost resolves to loopback only");
        assert!(
            refused.to_string().contains("not a public address"),
            "{refused}"
        );
    }
}
