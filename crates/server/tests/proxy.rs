//! `/api/fal/proxy` over HTTP, against a local upstream standing in for fal: what is forwarded,
//! what is refused (a corpus of hostile targets), what is served locally, and that FAL_KEY never
//! leaks.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use fresco_protocol::queue::{QueueStatus, Status};
use fresco_protocol::sse::SseParser;
use fresco_protocol::storage::InitiateUploadResponse;
use serde_json::{Value, json};

const KEY: &str = "sk-test-7f3a9c-SECRET";
const PROXY: &str = "/api/fal/proxy";

/// Stands in for fal: answers by path.
async fn upstream(evil: Option<String>) -> common::Recorder {
    common::Recorder::start(Arc::new(move |r, _| {
        let json_res = |status: u16, body: Value| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("x-fal-request-id", "up-rid")
                .header("set-cookie", "a=b")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        match r.uri.path() {
            "/fal-ai/flux/requests/rid/status" => json_res(202, json!({"status": "IN_PROGRESS", "request_id": "rid"})),
            "/fal-ai/x" => json_res(422, json!({"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]})),
            "/redirect" => Response::builder()
                .status(302)
                .header("location", format!("{}/stolen", evil.clone().unwrap_or_default()))
                .body(Body::empty())
                .unwrap(),
            "/fal-ai/llm/stream" => Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(Body::from("data: {\"partial\":1}\n\ndata: {\"final\":true}\n\n"))
                .unwrap(),
            "/storage/upload/initiate" => json_res(200, json!({"upload_url": "https://upload.example/x", "file_url": "https://v3.fal.media/files/x"})),
            _ => json_res(404, json!({"detail": "no such thing upstream"})),
        }
    }))
    .await
}

/// A server with FAL_KEY whose forwarded requests go to `up`.
async fn with_key(up: &common::Recorder) -> common::TestServer {
    let url = up.url.clone();
    common::start(move |c| {
        c.fal_key = Some(KEY.into());
        c.upstream_override = Some(url);
    })
    .await
}

async fn proxied(
    t: &common::TestServer,
    method: reqwest::Method,
    target: &str,
) -> reqwest::RequestBuilder {
    t.http
        .request(method, format!("{}{PROXY}", t.url))
        .header("x-fal-target-url", target)
}

fn assert_no_key(res_headers: &reqwest::header::HeaderMap, body: &[u8]) {
    for (name, value) in res_headers {
        assert!(
            !value
                .as_bytes()
                .windows(KEY.len())
                .any(|w| w == KEY.as_bytes()),
            "FAL_KEY leaked in header {name}"
        );
    }
    assert!(
        !body.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
        "FAL_KEY leaked in a body"
    );
}

async fn body_checked(res: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.bytes().await.unwrap().to_vec();
    assert_no_key(&headers, &body);
    (status, headers, body)
}

#[tokio::test]
async fn forwards_with_fal_key_and_only_fal_headers_keeping_status_and_response_headers() {
    let up = upstream(None).await;
    let t = with_key(&up).await;
    let target = "https://queue.fal.run/fal-ai/flux/requests/rid/status?logs=1";
    let res = proxied(&t, reqwest::Method::GET, target)
        .await
        .header("cookie", "session=1")
        .header("x-custom", "no")
        .header("x-fal-runner-hint", "h1")
        .header("user-agent", "UA/1")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let (status, headers, body) = body_checked(res).await;
    assert_eq!(status, StatusCode::ACCEPTED, "upstream status kept");
    assert_eq!(headers["x-fal-request-id"], "up-rid");
    assert_eq!(headers["set-cookie"], "a=b");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["status"],
        "IN_PROGRESS"
    );

    let got = up.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.uri.to_string(), "/fal-ai/flux/requests/rid/status?logs=1");
    assert_eq!(r.headers["authorization"], format!("Key {KEY}").as_str());
    assert_eq!(r.headers["x-fal-target-url"], target);
    assert_eq!(r.headers["x-fal-runner-hint"], "h1");
    assert_eq!(r.headers["user-agent"], "UA/1");
    assert_eq!(r.headers["accept"], "application/json");
    assert!(
        r.headers["x-fal-client-proxy"]
            .to_str()
            .unwrap()
            .starts_with("fresco/")
    );
    assert!(r.headers.get("cookie").is_none() && r.headers.get("x-custom").is_none());

    // A POST: body passed through, upstream 422 reaches the client as a 422 (Express sends 200).
    let res = proxied(&t, reqwest::Method::POST, "https://fal.run/fal-ai/x")
        .await
        .json(&json!({"prompt": null}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(res).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["detail"][0]["loc"],
        json!(["body", "prompt"])
    );
    let got = up.received();
    assert_eq!(got[1].body.as_ref(), br#"{"prompt":null}"#);
    assert_eq!(
        got[1].headers["user-agent"]
            .to_str()
            .unwrap()
            .split('/')
            .next(),
        Some("fresco-proxy"),
        "no `undefined` UA"
    );
    assert_eq!(got[1].headers["content-type"], "application/json");
}

#[tokio::test]
async fn the_callers_own_authorization_is_preferred_and_missing_credentials_are_refused() {
    let up = upstream(None).await;
    let open = common::start(|c| c.upstream_override = Some(up.url.clone())).await;
    let target = "https://queue.fal.run/fal-ai/flux/requests/rid/status";
    let res = proxied(&open, reqwest::Method::GET, target)
        .await
        .header("authorization", "Key CLIENT")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(up.received()[0].headers["authorization"], "Key CLIENT");

    // No FAL_KEY and nothing from the caller: refused, never `Key undefined`.
    let res = proxied(&open, reqwest::Method::GET, target)
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()["x-fresco-proxy-error"]
            .to_str()
            .unwrap()
            .contains("FAL_KEY")
    );
    assert_eq!(res.text().await.unwrap(), "\"Unauthorized\"");
    assert_eq!(up.received().len(), 1);

    // With tokens configured, a caller must present one; fal gets FAL_KEY, never the token.
    let guarded = common::start(|c| {
        c.upstream_override = Some(up.url.clone());
        c.fal_key = Some(KEY.into());
        c.proxy_tokens = vec!["tok-1".into()];
    })
    .await;
    for auth in [None, Some("Key wrong"), Some(format!("Key {KEY}").as_str())] {
        let mut req = proxied(&guarded, reqwest::Method::GET, target).await;
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let (status, _, body) = body_checked(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(body, b"\"Unauthorized\"");
    }
    assert_eq!(
        up.received().len(),
        1,
        "refused requests never reach upstream"
    );
    let res = proxied(&guarded, reqwest::Method::GET, target)
        .await
        .header("authorization", "Bearer tok-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        up.received()[1].headers["authorization"],
        format!("Key {KEY}").as_str()
    );
}

#[tokio::test]
async fn hostile_targets_are_all_refused_and_never_reach_anything() {
    let up = upstream(None).await;
    let t = with_key(&up).await;
    let corpus = [
        "",
        "https://evil.com/x",
        "https://fal.run@evil.com/x",
        "https://evil.com#@fal.run",
        "https://evil.com\\@fal.run",
        "https://fal.run.evil.com/x",
        "https://queue.fal.run.evil.com/x",
        "https://evil.com/fal.run/x",
        "https://evil.com/?https://fal.run",
        "https://fal.run%2eevil.com/x",
        "http://fal.run/x",
        "http://queue.fal.run/fal-ai/flux/requests/rid/status",
        "ftp://fal.run/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "//fal.run/x",
        "fal.run/x",
        "https://127.0.0.1/x",
        "https://2130706433/x",
        "https://0x7f000001/x",
        "https://017700000001/x",
        "https://127.1/x",
        "https://0/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://[fd00::1]/x",
        "https://[::]/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/x",
        "https://localhost.:443/x",
        "https://fal.run:8443/x",
        "https://fal.run:80/x",
        "https://u:p@fal.run/x",
        "https://fal.run@127.0.0.1/x",
        "https://evil.fal.run/x",
        "https://my-app.fal.run/x",
        "https://fal.ai/x",
        "https://rest.fal.ai/admin",
        "https://rest.fal.ai/storage/upload/initiate",
        "https://rest.fal.ai/storage/upload/initiate?storage_type=other",
        "https://rest.fal.ai/tokens/?x=1",
        "https://fal.run\t.evil.com/x",
    ];
    assert!(corpus.len() >= 30);
    for target in corpus {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::PUT,
        ] {
            let res = proxied(&t, method.clone(), target)
                .await
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let (status, headers, body) = body_checked(res).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {target:?} was not refused"
            );
            assert_eq!(body, b"\"Invalid request\"", "{target:?}");
            assert!(headers.contains_key("x-fresco-proxy-error"), "{target:?}");
        }
    }
    // Without the header at all.
    let res = t
        .http
        .get(format!("{}{PROXY}", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(up.received().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn redirects_are_passed_back_not_followed() {
    let evil = common::Recorder::start(Arc::new(|_, _| Response::new(Body::from("stolen")))).await;
    let up = upstream(Some(evil.url.clone())).await;
    let t = with_key(&up).await;
    let res = proxied(&t, reqwest::Method::GET, "https://fal.run/redirect")
        .await
        .send()
        .await
        .unwrap();
    let (status, headers, _) = body_checked(res).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], format!("{}/stolen", evil.url).as_str());
    assert!(
        evil.received().is_empty(),
        "the proxy did not follow the redirect with the key"
    );
}

#[tokio::test]
async fn event_streams_pass_through_with_their_accept_header() {
    let up = upstream(None).await;
    let t = with_key(&up).await;
    let res = proxied(
        &t,
        reqwest::Method::POST,
        "https://fal.run/fal-ai/llm/stream",
    )
    .await
    .header("accept", "text/event-stream")
    .json(&json!({"prompt": "hi"}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let body = res.bytes().await.unwrap();
    let events: Vec<String> = SseParser::new()
        .feed(&body)
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(events, [r#"{"partial":1}"#, r#"{"final":true}"#]);
    assert_eq!(
        up.received()[0].headers["accept"],
        "text/event-stream",
        "accept is forwarded, not overwritten"
    );
}

#[tokio::test]
async fn endpoints_and_storage_hosted_here_are_served_locally() {
    let up = upstream(None).await;
    let t = with_key(&up).await;
    // Queue submit, status and result through the proxy.
    let res = proxied(
        &t,
        reqwest::Method::POST,
        "https://queue.fal.run/fresco/echo/sub",
    )
    .await
    .header("x-fal-queue-priority", "normal")
    .json(&json!({"hello": "local", "logs": ["l1"]}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let submitted: QueueStatus = res.json().await.unwrap();
    let id = submitted.request_id;
    let status_target = format!("https://queue.fal.run/fresco/echo/requests/{id}/status?logs=1");
    let mut last = None;
    for _ in 0..500 {
        let s: QueueStatus = proxied(&t, reqwest::Method::GET, &status_target)
            .await
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s.status == Status::Completed {
            last = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(last.unwrap().logs.unwrap()[0].message, "l1");
    let res = proxied(
        &t,
        reqwest::Method::GET,
        &format!("https://queue.fal.run/fresco/echo/requests/{id}"),
    )
    .await
    .send()
    .await
    .unwrap();
    assert_eq!(res.headers()["x-fal-request-id"], id.as_str());
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"hello": "local", "logs": ["l1"]})
    );

    // The synchronous run path.
    let res = proxied(&t, reqwest::Method::POST, "https://fal.run/fresco/echo")
        .await
        .json(&json!({"sync": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"sync": true}));

    // Storage: initiate through the proxy, PUT directly, download.
    let res = proxied(
        &t,
        reqwest::Method::POST,
        "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
    )
    .await
    .json(&json!({"content_type": "text/plain", "file_name": "hello.txt"}))
    .send()
    .await
    .unwrap();
    let up_info: InitiateUploadResponse = res.json().await.unwrap();
    assert!(up_info.file_url.starts_with(&t.url));
    t.http
        .put(&up_info.upload_url)
        .body("Hello, World!")
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.http
            .get(&up_info.file_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Hello, World!"
    );

    assert!(up.received().is_empty(), "nothing went upstream");
}

#[tokio::test]
async fn storage_goes_to_fal_in_fal_mode_and_unreachable_upstreams_are_a_502() {
    let up = upstream(None).await;
    let t = common::start(|c| {
        c.fal_key = Some(KEY.into());
        c.upstream_override = Some(up.url.clone());
        c.storage = fresco_server::StorageMode::Fal;
    })
    .await;
    let res = proxied(
        &t,
        reqwest::Method::POST,
        "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
    )
    .await
    .json(&json!({"content_type": "text/plain", "file_name": "hello.txt"}))
    .send()
    .await
    .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["file_url"], "https://v3.fal.media/files/x");
    assert_eq!(
        up.received()[0].uri.to_string(),
        "/storage/upload/initiate?storage_type=fal-cdn-v3"
    );

    let dead = common::start(|c| {
        c.fal_key = Some(KEY.into());
        c.upstream_override = Some("http://127.0.0.1:9".into());
    })
    .await;
    let res = proxied(&dead, reqwest::Method::GET, "https://fal.run/fal-ai/x")
        .await
        .send()
        .await
        .unwrap();
    let (status, _, body) = body_checked(res).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).contains("could not reach fal.run"));
}
