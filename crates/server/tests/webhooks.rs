//! Webhooks: delivered to a local receiver, retried with backoff after a failure, fal's payload.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use fresco_protocol::queue::Status;
use serde_json::{Value, json};

const ECHO: &str = "fresco/echo";

async fn wait_for_requests(r: &common::Recorder, n: usize) -> Vec<common::Recorded> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let got = r.received();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the receiver got {} requests, expected {n}",
        r.received().len()
    );
}

#[tokio::test]
async fn a_webhook_is_retried_until_the_receiver_accepts_it() {
    // The receiver fails twice, then accepts.
    let receiver = common::Recorder::start(Arc::new(|_, n| {
        if n <= 2 {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    }))
    .await;
    // The receiver is on 127.0.0.1: allowed explicitly (refused by default, as the last test
    // shows).
    let t = common::start(|c| c.allow_private_urls = true).await;
    let hook = format!("{}/hook?x=1", receiver.url);
    let res = t
        .http
        .post(
            fresco_protocol::urls::queue_submit_url(ECHO, Some(&hook))
                .unwrap()
                .replace("https://queue.fal.run", &t.url),
        )
        .json(&json!({"value": 42}))
        .send()
        .await
        .unwrap();
    let id = res
        .json::<fresco_protocol::QueueStatus>()
        .await
        .unwrap()
        .request_id;

    let got = wait_for_requests(&receiver, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "no delivery after the accepted one"
    );
    for r in &got {
        assert_eq!(r.uri.path(), "/hook");
        assert_eq!(r.uri.query(), Some("x=1"));
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["x-fal-webhook-request-id"], id.as_str());
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"request_id": id, "gateway_request_id": id, "status": "OK", "payload": {"value": 42}, "error": null})
        );
    }
    let _ = t.wait_for(ECHO, &id, Status::Completed).await;
}

#[tokio::test]
async fn a_failed_request_sends_an_error_webhook_and_delivery_gives_up_after_max_attempts() {
    let receiver = common::Recorder::start(Arc::new(|_, _| {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }))
    .await;
    let t = common::start(|c| {
        c.webhook_max_attempts = 3;
        c.allow_private_urls = true;
    })
    .await;
    let res = t
        .http
        .post(format!("{}/{ECHO}?fal_webhook={}/hook", t.url, receiver.url))
        .json(&json!({"fail": {"status": 422, "detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]}}))
        .send()
        .await
        .unwrap();
    let id = res
        .json::<fresco_protocol::QueueStatus>()
        .await
        .unwrap()
        .request_id;
    let got = wait_for_requests(&receiver, 3).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["status"], "ERROR");
    assert_eq!(body["error"], "Invalid status code: 422");
    assert_eq!(
        body["payload"]["detail"][0]["loc"],
        json!(["body", "prompt"])
    );
    // Backoff: the gaps grow (50 ms, then 100 ms base-doubled).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 3, "no fourth attempt");
    let _ = id;
}

#[tokio::test]
async fn a_webhook_to_a_private_address_is_refused_by_default() {
    let receiver = common::Recorder::start(Arc::new(|_, _| StatusCode::OK.into_response())).await;
    let t = common::start(|c| c.webhook_max_attempts = 2).await;
    // The receiver under three spellings of 127.0.0.1.
    let port = receiver.url.rsplit(':').next().unwrap().to_owned();
    for host in ["127.0.0.1", "localhost", "[::ffff:7f00:1]"] {
        let hooked = format!("{ECHO}?fal_webhook=http://{host}:{port}/hook");
        let id = t.submit(&hooked, json!({"value": 1})).await.request_id;
        t.wait_for(ECHO, &id, Status::Completed).await;
    }
    // Both attempts of each refused, and recorded as failed with the reason.
    let start = Instant::now();
    loop {
        let failed = t.failed_webhooks();
        if failed.len() == 3 {
            for why in &failed {
                assert!(why.contains("not a public address"), "{why}");
            }
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{failed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(receiver.received().is_empty(), "the receiver was reached");
}
