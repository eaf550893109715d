//! Storage over HTTP with rest.fal.ai's protocol: single and multipart uploads, downloads, limits,
//! expiry and bad input.

mod common;

use fresco_protocol::storage::{InitiateUploadResponse, UploadedPart};
use fresco_protocol::urls;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn initiate(t: &common::TestServer, multipart: bool, body: Value) -> reqwest::Response {
    let op = if multipart {
        "initiate-multipart"
    } else {
        "initiate"
    };
    t.http
        .post(format!(
            "{}/storage/upload/{op}?storage_type=fal-cdn-v3",
            t.url
        ))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn initiated(
    t: &common::TestServer,
    multipart: bool,
    content_type: &str,
    name: &str,
) -> InitiateUploadResponse {
    let res = initiate(
        t,
        multipart,
        json!({"content_type": content_type, "file_name": name}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn upload_then_download_round_trips_with_the_content_type() {
    let t = common::start(|_| {}).await;
    let up = initiated(&t, false, "image/png", "cat photo.png").await;
    assert!(
        up.upload_url
            .starts_with(&format!("{}/files/upload/", t.url))
    );
    assert!(
        up.file_url.starts_with(&t.url) && up.file_url.ends_with("/cat%20photo.png"),
        "{}",
        up.file_url
    );

    // Not there until uploaded.
    assert_eq!(
        t.http.get(&up.file_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    let bytes = pattern(300_000, 7);
    let res = t
        .http
        .put(&up.upload_url)
        .header("content-type", "image/png")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        res.json::<Value>().await.unwrap()["file_url"],
        up.file_url.as_str()
    );

    let res = t.http.get(&up.file_url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(res.bytes().await.unwrap().to_vec(), bytes);
    let head = t.http.head(&up.file_url).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "300000");

    // An upload URL works once.
    let again = t.http.put(&up.upload_url).body("x").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    // The name is part of the URL.
    let wrong = up.file_url.replace("cat%20photo.png", "dog.png");
    assert_eq!(
        t.http.get(&wrong).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn multipart_uploads_join_their_parts_in_order() {
    let t = common::start(|_| {}).await;
    let up = initiated(&t, true, "application/octet-stream", "weights.bin").await;
    assert!(up.upload_url.contains("/files/multipart/"));
    let mib = 1024 * 1024;
    let chunks = [
        pattern(10 * mib, 1),
        pattern(10 * mib, 2),
        pattern(mib + 3, 3),
    ];
    let mut parts = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        // The URL is derived as the client derives it.
        let url = urls::multipart_part_url(&up.upload_url, i as u32 + 1).unwrap();
        let res = t.http.put(url).body(chunk.clone()).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let part: UploadedPart = res.json().await.unwrap();
        assert_eq!(part.part_number, i as u32 + 1);
        parts.push(part);
    }
    let complete = urls::multipart_complete_url(&up.upload_url).unwrap();

    let mut wrong = parts.clone();
    wrong[1].etag = "nope".into();
    let res = t
        .http
        .post(&complete)
        .json(&json!({"parts": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        res.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("etag")
    );
    let res = t
        .http
        .post(&complete)
        .json(&json!({"parts": [parts[0], {"partNumber": 7, "etag": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(
        res.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("Part 7 was never uploaded")
    );

    let res = t
        .http
        .post(&complete)
        .json(&json!({ "parts": parts }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let got = t
        .http
        .get(&up.file_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), 21 * mib + 3);
    assert_eq!(got.to_vec(), chunks.concat());
}

#[tokio::test]
async fn sizes_and_bad_input_are_refused_clearly() {
    let t = common::start(|c| c.max_file_bytes = 1000).await;
    let up = initiated(&t, false, "text/plain", "a.txt").await;
    let res = t
        .http
        .put(&up.upload_url)
        .body(vec![b'a'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        res.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("1000")
    );
    assert_eq!(
        t.http.get(&up.file_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "no half-written file"
    );
    // The same URL can be used again after a refused attempt.
    let res = t
        .http
        .put(&up.upload_url)
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let res = t
        .http
        .put(format!("{}/files/upload/0123456789abcdef", t.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let mp = initiated(&t, true, "text/plain", "b.txt").await;
    for bad in ["0", "10001", "x"] {
        let res = t
            .http
            .put(format!("{}/{bad}", mp.upload_url))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "part {bad}");
    }
    let res = t.http.put(&mp.upload_url).body("x").send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "a multipart upload URL takes parts, not the whole file"
    );
    let res = t
        .http
        .post(urls::multipart_complete_url(&mp.upload_url).unwrap())
        .json(&json!({"parts": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let res = initiate(&t, false, json!({"file_name": "x"})).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        res.json::<Value>().await.unwrap()["detail"][0]["loc"],
        json!(["body", "content_type"])
    );
    let res = initiate(
        &t,
        false,
        json!({"content_type": "not a mime", "file_name": "x"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = t
        .http
        .post(format!("{}/storage/upload/initiate?storage_type=s3", t.url))
        .json(&json!({"content_type": "text/plain", "file_name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = t
        .http
        .post(format!(
            "{}/storage/upload/initiate?storage_type=fal-cdn-v3",
            t.url
        ))
        .header("x-fal-object-lifecycle", "{not json")
        .json(&json!({"content_type": "text/plain", "file_name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        res.json::<Value>().await.unwrap()["detail"][0]["loc"],
        json!(["header", "x-fal-object-lifecycle"])
    );
}

#[tokio::test]
async fn files_with_a_lifecycle_expire() {
    let t = common::start(|_| {}).await;
    let res = t
        .http
        .post(format!(
            "{}/storage/upload/initiate?storage_type=fal-cdn-v3",
            t.url
        ))
        .header(
            "x-fal-object-lifecycle",
            r#"{"expiration_duration_seconds":1}"#,
        )
        .json(&json!({"content_type": "text/plain", "file_name": "short.txt"}))
        .send()
        .await
        .unwrap();
    let up: InitiateUploadResponse = res.json().await.unwrap();
    t.http
        .put(&up.upload_url)
        .body("brief")
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.http
            .get(&up.file_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "brief"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(
        t.http.get(&up.file_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn urls_use_the_public_url_when_configured() {
    let t = common::start(|c| c.public_url = Some("https://media.example.test/".into())).await;
    let up = initiated(&t, false, "image/jpeg", "x.jpg").await;
    assert!(
        up.file_url.starts_with("https://media.example.test/files/"),
        "{}",
        up.file_url
    );
    assert!(
        up.upload_url
            .starts_with("https://media.example.test/files/upload/")
    );
}

#[tokio::test]
async fn stored_documents_cannot_run_script_on_the_servers_origin() {
    let t = common::start(|_| {}).await;
    for (content_type, name, disposition) in [
        ("text/html", "page.html", "attachment"),
        ("image/svg+xml", "pic.svg", "attachment"),
        ("application/xhtml+xml", "page.xhtml", "attachment"),
        ("image/png", "pic.png", "inline"),
    ] {
        let up = initiated(&t, false, content_type, name).await;
        let res = t
            .http
            .put(&up.upload_url)
            .header("content-type", content_type)
            .body("<html><script>alert(document.domain)</script></html>")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = t.http.get(&up.file_url).send().await.unwrap();
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{content_type}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("sandbox"), "{content_type}: {csp}");
        assert!(!csp.contains("allow-scripts"), "{csp}");
        let d = h["content-disposition"].to_str().unwrap();
        assert!(d.starts_with(disposition), "{content_type}: {d}");
    }
}

#[tokio::test]
async fn multipart_parts_count_against_the_file_limit_as_they_arrive() {
    let t = common::start(|c| c.max_file_bytes = 1000).await;
    let mp = initiated(&t, true, "text/plain", "parts.txt").await;
    let put = |n: u32, len: usize| {
        let req = t
            .http
            .put(format!("{}/{n}", mp.upload_url))
            .body(vec![b'a'; len]);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(put(1, 600).await, StatusCode::OK);
    // 600 + 500 > 1000: refused as it arrives, and nothing of it is kept.
    assert_eq!(put(2, 500).await, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(put(2, 400).await, StatusCode::OK);
    assert_eq!(put(3, 1).await, StatusCode::PAYLOAD_TOO_LARGE);
    // A part sent again replaces itself, so its old size does not count twice.
    assert_eq!(put(2, 400).await, StatusCode::OK);
    let parts_dir = std::fs::read_dir(t.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.ends_with("uploads"))
        .expect("the uploads folder");
    let kept: u64 = walk(&parts_dir)
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert_eq!(kept, 1000, "only the accepted parts are on disk");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
