//! The queue over real HTTP: life cycle, positions, logs, the status stream, cancel, timeouts,
//! priorities, failures, the synchronous run path and bad input.

mod common;

use std::time::Duration;

use fresco_protocol::queue::{LogLevel, Status};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ECHO: &str = "fresco/echo";

#[tokio::test]
async fn a_request_goes_through_queue_progress_and_completion_with_logs() {
    let t = common::start(|_| {}).await;
    // The first request holds the only worker, so the others really wait.
    let blocker = t.submit(ECHO, json!({"delay_ms": 600})).await;
    t.wait_for(ECHO, &blocker.request_id, Status::InProgress)
        .await;
    let input = json!({"prompt": "a cat", "delay_ms": 300, "logs": ["step 1", "step 2", "step 3"]});
    let submitted = t.submit(ECHO, input.clone()).await;
    assert_eq!(submitted.status, Status::InQueue);
    assert_eq!(
        submitted.queue_position,
        Some(0),
        "the running request is not ahead in the queue"
    );
    let id = submitted.request_id.clone();
    assert_eq!(submitted.gateway_request_id.as_deref(), Some(id.as_str()));
    assert!(
        submitted
            .status_url
            .ends_with(&format!("/fresco/echo/requests/{id}/status"))
    );
    assert!(submitted.response_url.starts_with(&t.url));
    let second = t.submit(ECHO, json!({})).await;
    assert_eq!(second.queue_position, Some(1));

    let (code, queued) = t.status(ECHO, &id, false).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(queued.status, Status::InQueue);
    assert_eq!(queued.queue_position, Some(0));
    assert_eq!(queued.logs, None, "logs are null unless asked for");

    // Once ours starts, the second moves up.
    t.wait_for(ECHO, &id, Status::InProgress).await;
    let (_, moved) = t.status(ECHO, &second.request_id, false).await;
    assert_eq!(moved.queue_position, Some(0));

    let done = t.wait_for(ECHO, &id, Status::Completed).await;
    let logs = done.logs.unwrap();
    assert_eq!(
        logs.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["step 1", "step 2", "step 3"]
    );
    assert!(
        logs.iter()
            .all(|l| l.level == LogLevel::Info && l.source == "USER" && l.timestamp.ends_with('Z'))
    );
    let inference = done.metrics.unwrap().inference_time.unwrap();
    assert!(
        (0.25..5.0).contains(&inference),
        "inference_time {inference}"
    );
    let (code, _) = t.status(ECHO, &id, false).await;
    assert_eq!(code, StatusCode::OK, "a completed status answers 200");

    let res = t.result(ECHO, &id).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-fal-request-id"], id.as_str());
    assert_eq!(res.json::<Value>().await.unwrap(), input);
}

#[tokio::test]
async fn a_waiting_requests_stream_follows_its_place_as_others_are_claimed() {
    // One worker: the running request, two waiting ahead of ours, then ours.
    let t = common::start(|_| {}).await;
    let running = t.submit(ECHO, json!({"delay_ms": 400})).await;
    t.wait_for(ECHO, &running.request_id, Status::InProgress)
        .await;
    t.submit(ECHO, json!({"delay_ms": 100})).await;
    t.submit(ECHO, json!({"delay_ms": 100})).await;
    // Long enough to be seen running.
    let ours = t.submit(ECHO, json!({"delay_ms": 150})).await;
    assert_eq!(ours.queue_position, Some(2));
    let events = t.stream(ECHO, &ours.request_id, false).await;
    let seen: Vec<(Status, Option<u64>)> = events
        .iter()
        .map(|e| (e.status, e.queue_position))
        .collect();
    // Other requests' changes are followed, each place once, then its own.
    assert_eq!(
        seen,
        [
            (Status::InQueue, Some(2)),
            (Status::InQueue, Some(1)),
            (Status::InQueue, Some(0)),
            (Status::InProgress, None),
            (Status::Completed, None)
        ]
    );
}

#[tokio::test]
async fn the_status_stream_sends_each_change_and_only_new_log_lines() {
    let t = common::start(|_| {}).await;
    let blocker = t.submit(ECHO, json!({"delay_ms": 300})).await;
    t.wait_for(ECHO, &blocker.request_id, Status::InProgress)
        .await;
    let s = t
        .submit(ECHO, json!({"delay_ms": 300, "logs": ["a", "b"]}))
        .await;
    let events = t.stream(ECHO, &s.request_id, true).await;
    let states: Vec<Status> = events.iter().map(|e| e.status).collect();
    assert_eq!(states.first(), Some(&Status::InQueue), "{states:?}");
    assert_eq!(events[0].queue_position, Some(0));
    assert_eq!(states.last(), Some(&Status::Completed));
    assert!(states.contains(&Status::InProgress));
    // Each line arrives once, in order; the client accumulates them.
    let lines: Vec<String> = events
        .iter()
        .flat_map(|e| e.logs.clone().unwrap_or_default())
        .map(|l| l.message)
        .collect();
    assert_eq!(lines, ["a", "b"]);
    assert!(events.last().unwrap().metrics.is_some());
    // A stream opened after completion sends the final status and ends.
    let again = t.stream(ECHO, &s.request_id, false).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].status, Status::Completed);
    assert_eq!(again[0].logs, None);
}

#[tokio::test]
async fn normal_priority_goes_before_low() {
    let t = common::start(|_| {}).await;
    let blocker = t.submit(ECHO, json!({"delay_ms": 400})).await;
    t.wait_for(ECHO, &blocker.request_id, Status::InProgress)
        .await;
    let res = t
        .http
        .post(format!("{}/{ECHO}", t.url))
        .header("x-fal-queue-priority", "low")
        .json(&json!({"n": "low"}))
        .send()
        .await
        .unwrap();
    let low: fresco_protocol::QueueStatus = res.json().await.unwrap();
    assert_eq!(low.queue_position, Some(0));
    let normal = t
        .submit(ECHO, json!({"n": "normal", "delay_ms": 400}))
        .await;
    assert_eq!(normal.queue_position, Some(0), "normal goes ahead of low");
    let (_, low_now) = t.status(ECHO, &low.request_id, false).await;
    assert_eq!(low_now.queue_position, Some(1));
    // When the worker frees up it takes the normal one, though the low one came first.
    t.wait_for(ECHO, &normal.request_id, Status::InProgress)
        .await;
    let (_, low_now) = t.status(ECHO, &low.request_id, false).await;
    assert_eq!(low_now.status, Status::InQueue);
    assert_eq!(low_now.queue_position, Some(0));
    t.wait_for(ECHO, &low.request_id, Status::Completed).await;
}

#[tokio::test]
async fn cancel_removes_queued_requests_stops_running_ones_and_refuses_finished_ones() {
    let t = common::start(|_| {}).await;
    let running = t.submit(ECHO, json!({"delay_ms": 30_000})).await;
    let queued = t.submit(ECHO, json!({"x": 1})).await;
    t.wait_for(ECHO, &running.request_id, Status::InProgress)
        .await;

    let cancel = |id: String| {
        let http = t.http.clone();
        let url = format!("{}/{ECHO}/requests/{id}/cancel", t.url);
        async move { http.put(url).send().await.unwrap() }
    };
    let res = cancel(queued.request_id.clone()).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["status"],
        "CANCELLATION_REQUESTED"
    );
    let s = t
        .wait_for(ECHO, &queued.request_id, Status::Completed)
        .await;
    assert_eq!(s.error_type.as_deref(), Some("client_cancelled"));

    let started = std::time::Instant::now();
    let res = cancel(running.request_id.clone()).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let s = t
        .wait_for(ECHO, &running.request_id, Status::Completed)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the 30 s job stopped early"
    );
    assert_eq!(s.error.as_deref(), Some("Request was cancelled"));
    let res = t.result(ECHO, &running.request_id).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error_type"],
        "client_cancelled"
    );

    let res = cancel(running.request_id.clone()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json::<Value>().await.unwrap()["status"],
        "ALREADY_COMPLETED"
    );
    let res = cancel("00000000-0000-0000-0000-000000000000".into()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "NOT_FOUND");
}

#[tokio::test]
async fn a_request_that_cannot_start_in_time_fails_with_a_user_timeout() {
    let t = common::start(|_| {}).await;
    let blocker = t.submit(ECHO, json!({"delay_ms": 3000})).await;
    t.wait_for(ECHO, &blocker.request_id, Status::InProgress)
        .await;
    let res = t
        .http
        .post(format!("{}/{ECHO}", t.url))
        .header("x-fal-request-timeout", "1")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let id = res
        .json::<fresco_protocol::QueueStatus>()
        .await
        .unwrap()
        .request_id;
    let s = t.wait_for(ECHO, &id, Status::Completed).await;
    assert_eq!(s.error_type.as_deref(), Some("request_timeout"));
    let (_, b) = t.status(ECHO, &blocker.request_id, false).await;
    assert_eq!(
        b.status,
        Status::InProgress,
        "it expired while waiting, not after the blocker ended"
    );
    let res = t.result(ECHO, &id).await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.headers()["x-fal-request-timeout-type"], "user");
    assert_eq!(res.headers()["x-fal-error-type"], "request_timeout");
}

#[tokio::test]
async fn failures_are_replayed_by_result_with_their_status_and_body() {
    let t = common::start(|_| {}).await;
    let s = t.submit(ECHO, json!({"delay_ms": "soon"})).await;
    assert_eq!(
        s.status,
        Status::InQueue,
        "validation happens when the request runs, as on fal"
    );
    let done = t.wait_for(ECHO, &s.request_id, Status::Completed).await;
    assert!(done.error.is_some());
    let res = t.result(ECHO, &s.request_id).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"], json!(["body", "delay_ms"]));
    assert_eq!(body["detail"][0]["type"], "type_error.integer");

    let s = t
        .submit(ECHO, json!({"fail": {"status": 503, "detail": "busy"}}))
        .await;
    t.wait_for(ECHO, &s.request_id, Status::Completed).await;
    let res = t.result(ECHO, &s.request_id).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"detail": "busy"})
    );
}

#[tokio::test]
async fn the_run_path_answers_synchronously_with_a_request_id() {
    let t = common::start(|_| {}).await;
    let res = t
        .http
        .post(format!("{}/run/{ECHO}/sub/path", t.url))
        .json(&json!({"a": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let id = res.headers()["x-fal-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"a": [1, 2]}));
    let res = t
        .http
        .post(format!("{}/run/{ECHO}", t.url))
        .json(&json!({"fail": "boom"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.json::<Value>().await.unwrap()["detail"], "boom");
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let t = common::start(|c| c.max_body_bytes = 1024).await;
    let post = |path: &str, body: &'static str| {
        let req = t
            .http
            .post(format!("{}/{path}", t.url))
            .header("content-type", "application/json")
            .body(body);
        async move { req.send().await.unwrap() }
    };
    let res = post(ECHO, "{\"a\": ").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        res.json::<Value>().await.unwrap()["detail"][0]["type"],
        "value_error.jsondecode"
    );

    let res = post("nobody/nothing", "{}").await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        res.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("nobody/nothing")
    );

    let big = t
        .http
        .post(format!("{}/{ECHO}", t.url))
        .body(format!("{{\"x\":\"{}\"}}", "a".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        big.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("1024")
    );

    let res = t
        .http
        .post(format!("{}/{ECHO}?fal_webhook=not-a-url", t.url))
        .header("x-fal-queue-priority", "urgent")
        .header("x-fal-request-timeout", "soon")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let locs: Vec<Value> = res.json::<Value>().await.unwrap()["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loc"].clone())
        .collect();
    assert_eq!(
        locs,
        [
            json!(["query", "fal_webhook"]),
            json!(["header", "x-fal-queue-priority"]),
            json!(["header", "x-fal-request-timeout"])
        ]
    );

    let missing = "5bd0b4f0-0000-0000-0000-000000000000";
    for path in [
        format!("{ECHO}/requests/{missing}/status"),
        format!("{ECHO}/requests/{missing}"),
    ] {
        let res = t
            .http
            .get(format!("{}/{path}", t.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            res.json::<Value>().await.unwrap()["detail"]
                .as_str()
                .unwrap()
                .contains(missing)
        );
    }
    // A request is only found under the app it was submitted to.
    let s = t.submit(ECHO, json!({})).await;
    let res = t
        .http
        .get(format!(
            "{}/fal-ai/other/requests/{}/status",
            t.url, s.request_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let res = t
        .http
        .delete(format!("{}/{ECHO}/requests/{}", t.url, s.request_id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);

    let pending = t.submit(ECHO, json!({"delay_ms": 2000})).await;
    let res = t.result(ECHO, &pending.request_id).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        res.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .starts_with("Request is still")
    );
}

#[tokio::test]
async fn health_lists_the_endpoints() {
    let t = common::start(|_| {}).await;
    let body: Value = t
        .http
        .get(format!("{}/health", t.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"status": "ok", "endpoints": ["fresco/echo"]}));
}

const KEY_ONE: &str = "key-one-0123456789abcdef";
const KEY_TWO: &str = "key-two-0123456789abcdef";

#[tokio::test]
async fn with_api_keys_every_call_needs_one_and_requests_belong_to_their_key() {
    let t = common::start(|c| c.api_keys = vec![KEY_ONE.into(), KEY_TWO.into()]).await;
    let with = |req: reqwest::RequestBuilder, key: Option<&str>| match key {
        Some(k) => req.header("authorization", format!("Key {k}")),
        None => req,
    };
    let submit = |key: Option<&'static str>| {
        let req = with(t.http.post(format!("{}/{ECHO}", t.url)), key).json(&json!({"v": 1}));
        async move { req.send().await.unwrap() }
    };
    // No key, a wrong one, a scheme fal does not use: 401.
    assert_eq!(submit(None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        submit(Some("key-three-0123456789")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = t
        .http
        .post(format!("{}/run/{ECHO}", t.url))
        .header("authorization", format!("Basic {KEY_ONE}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Key");

    let res = submit(Some(KEY_ONE)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let id = res.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = format!("{}/{ECHO}/requests/{id}", t.url);
    let get = |path: String, key: Option<&'static str>| {
        let req = with(t.http.get(path), key);
        async move { req.send().await.unwrap().status() }
    };
    // The owner sees it; another key and no key do not, as if it did not exist.
    let mut done = false;
    for _ in 0..200 {
        if get(format!("{base}/status"), Some(KEY_ONE)).await == StatusCode::OK {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(done);
    assert_eq!(get(base.clone(), Some(KEY_ONE)).await, StatusCode::OK);
    for path in [
        format!("{base}/status"),
        format!("{base}/status/stream"),
        base.clone(),
    ] {
        assert_eq!(
            get(path.clone(), Some(KEY_TWO)).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(
            get(path.clone(), None).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    let cancel = with(t.http.put(format!("{base}/cancel")), Some(KEY_TWO))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    assert_eq!(cancel.json::<Value>().await.unwrap()["status"], "NOT_FOUND");

    // /health and stored files need no key; storage's initiate does.
    assert_eq!(get(format!("{}/health", t.url), None).await, StatusCode::OK);
    let initiate = |key: Option<&'static str>| {
        let req = with(
            t.http.post(format!(
                "{}/storage/upload/initiate?storage_type=fal-cdn-v3",
                t.url
            )),
            key,
        )
        .json(&json!({"content_type": "image/png", "file_name": "a.png"}));
        async move { req.send().await.unwrap() }
    };
    assert_eq!(initiate(None).await.status(), StatusCode::UNAUTHORIZED);
    let up: Value = initiate(Some(KEY_TWO)).await.json().await.unwrap();
    let put = t
        .http
        .put(up["upload_url"].as_str().unwrap())
        .body("png")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let file_url = up["file_url"].as_str().unwrap().to_owned();
    assert_eq!(get(file_url.clone(), None).await, StatusCode::OK);

    // Through the proxy: a key lets a local call in, as its owner.
    let proxied = |key: Option<&'static str>| {
        let req = with(t.http.post(format!("{}/api/fal/proxy", t.url)), key)
            .header("x-fal-target-url", format!("https://queue.fal.run/{ECHO}"))
            .json(&json!({"v": 2}));
        async move { req.send().await.unwrap() }
    };
    assert_eq!(proxied(None).await.status(), StatusCode::UNAUTHORIZED);
    let res = proxied(Some(KEY_TWO)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let id2 = res.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base2 = format!("{}/{ECHO}/requests/{id2}/status", t.url);
    assert_ne!(
        get(base2.clone(), Some(KEY_TWO)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(base2, Some(KEY_ONE)).await, StatusCode::NOT_FOUND);

    // Files behind keys when asked.
    let strict = common::start(|c| {
        c.api_keys = vec![KEY_ONE.into()];
        c.files_need_key = true;
    })
    .await;
    let path = file_url.replacen(&t.url, &strict.url, 1);
    let res = strict.http.get(&path).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_of_other_sites_cannot_write_and_foreign_hosts_are_refused() {
    let t = common::start(|_| {}).await;
    let post = |origin: Option<&str>, content_type: Option<&str>, host: Option<&str>| {
        let mut req = t.http.post(format!("{}/{ECHO}", t.url)).body("{\"v\":1}");
        for (name, value) in [
            ("origin", origin),
            ("content-type", content_type),
            ("host", host),
        ] {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        async move { req.send().await.unwrap().status() }
    };
    let json = Some("application/json");
    // What a page of another site can send without a preflight: refused.
    assert_eq!(
        post(Some("https://evil.example"), Some("text/plain"), None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(Some("https://evil.example"), json, None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(post(Some("null"), json, None).await, StatusCode::FORBIDDEN);
    // Not JSON, whoever sends it.
    assert_eq!(
        post(None, Some("text/plain"), None).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        post(None, None, None).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        post(None, Some("application/x-www-form-urlencoded"), None).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    // This server's own pages, and programs (no Origin), may.
    assert_eq!(post(Some(&t.url), json, None).await, StatusCode::OK);
    assert_eq!(post(None, json, None).await, StatusCode::OK);
    // A page under another host name that resolves here (DNS rebinding): refused, even reads.
    assert_eq!(
        post(None, json, Some("evil.example")).await,
        StatusCode::FORBIDDEN
    );
    let res = t
        .http
        .get(format!("{}/health", t.url))
        .header("host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let port = t.url.rsplit(':').next().unwrap();
    assert_eq!(
        post(None, json, Some(&format!("localhost:{port}"))).await,
        StatusCode::OK
    );

    // An allowed origin may; the proxy mints no fal token while it is open.
    let allowed = common::start(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let res = allowed
        .http
        .post(format!("{}/{ECHO}", allowed.url))
        .header("origin", "https://app.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = allowed
        .http
        .post(format!("{}/api/fal/proxy", allowed.url))
        .header("x-fal-target-url", "https://rest.fal.ai/tokens/")
        .json(&json!({"allowed_apps": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_full_queue_answers_429_in_all_and_per_key() {
    let t = common::start(|c| {
        c.api_keys = vec![KEY_ONE.into(), KEY_TWO.into()];
        c.max_queued = 3;
        c.max_queued_per_key = 2;
    })
    .await;
    let submit = |key: &'static str| {
        let req = t
            .http
            .post(format!("{}/{ECHO}", t.url))
            .header("authorization", format!("Key {key}"))
            .json(&json!({"delay_ms": 5000}));
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(submit(KEY_ONE).await.0, StatusCode::OK);
    assert_eq!(submit(KEY_ONE).await.0, StatusCode::OK);
    let (code, body) = submit(KEY_ONE).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("most one caller may"),
        "{body}"
    );
    // Another key has its own share, until the whole queue is full.
    assert_eq!(submit(KEY_TWO).await.0, StatusCode::OK);
    let (code, body) = submit(KEY_TWO).await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        body["detail"].as_str().unwrap().contains("queue is full"),
        "{body}"
    );
}

#[tokio::test]
async fn a_client_that_is_slow_to_send_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = common::start(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let addr = t.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // The rest of the headers never comes: the server closes the connection (408 or EOF).
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // A prompt client on another connection is served as usual.
    let res = t
        .http
        .get(format!("{}/health", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_finished_or_cancelled_request_leaves_no_input_in_the_database() {
    let t = common::start(|_| {}).await;
    let big = "x".repeat(100_000);
    let blocker = t.submit(ECHO, json!({"delay_ms": 400, "pad": big})).await;
    let queued = t.submit(ECHO, json!({"pad": big})).await;
    assert!(t.stored_input_len(&queued.request_id) > 100_000);
    let res = t
        .http
        .put(format!(
            "{}/{ECHO}/requests/{}/cancel",
            t.url, queued.request_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(t.stored_input_len(&queued.request_id), 0);
    t.wait_for(ECHO, &blocker.request_id, Status::Completed)
        .await;
    assert_eq!(t.stored_input_len(&blocker.request_id), 0);
    // The result is still there.
    let res = t.result(ECHO, &blocker.request_id).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["pad"]
            .as_str()
            .unwrap()
            .len(),
        100_000
    );
}
