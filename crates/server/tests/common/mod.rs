//! Helpers for the server's HTTP tests: a real server on a free port, a client, small receivers.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fresco_protocol::queue::{QueueStatus, Status};
use fresco_protocol::sse::SseParser;
use fresco_server::{Config, Registry, Server};
use serde_json::Value;

pub struct TestServer {
    pub server: Server,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub async fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.webhook_retry_base = Duration::from_millis(50);
    configure(&mut config);
    let server = fresco_server::start(config, Registry::builtin())
        .await
        .unwrap();
    let url = server.url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestServer {
        server,
        url,
        dir,
        http,
    }
}

impl TestServer {
    pub async fn submit(&self, app: &str, input: Value) -> QueueStatus {
        let res = self
            .http
            .post(format!("{}/{app}", self.url))
            .json(&input)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    pub async fn status(&self, app: &str, id: &str, logs: bool) -> (StatusCode, QueueStatus) {
        let res = self
            .http
            .get(format!(
                "{}/{app}/requests/{id}/status?logs={}",
                self.url,
                if logs { 1 } else { 0 }
            ))
            .send()
            .await
            .unwrap();
        let code = res.status();
        (code, res.json().await.unwrap())
    }

    /// Polls until the request is in `state` (or panics after 20 s).
    /// The last errors of the webhooks the server gave up on (read from its database).
    pub fn failed_webhooks(&self) -> Vec<String> {
        let db = rusqlite::Connection::open(self.dir.path().join("fresco.sqlite3")).unwrap();
        let mut stmt = db
            .prepare("SELECT COALESCE(last_error, '') FROM webhooks WHERE failed = 1")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// How many bytes of request `id`'s input the database still holds.
    pub fn stored_input_len(&self, id: &str) -> usize {
        let db = rusqlite::Connection::open(self.dir.path().join("fresco.sqlite3")).unwrap();
        db.query_row(
            "SELECT length(input) FROM requests WHERE id = ?1",
            [id],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as usize
    }

    pub async fn wait_for(&self, app: &str, id: &str, state: Status) -> QueueStatus {
        for _ in 0..2000 {
            let (_, s) = self.status(app, id, true).await;
            if s.status == state {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("request {id} never reached {state:?}");
    }

    pub async fn result(&self, app: &str, id: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/{app}/requests/{id}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// Reads a status stream to its end, returning every event.
    pub async fn stream(&self, app: &str, id: &str, logs: bool) -> Vec<QueueStatus> {
        let mut res = self
            .http
            .get(format!(
                "{}/{app}/requests/{id}/status/stream?logs={}",
                self.url,
                if logs { 1 } else { 0 }
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), res.chunk())
            .await
            .unwrap()
            .unwrap()
        {
            for e in parser.feed(&chunk) {
                events.push(serde_json::from_str(&e.data).unwrap());
            }
        }
        events
    }
}

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A local HTTP server that records requests and answers from a script.
#[derive(Clone)]
pub struct Recorder {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

pub type Responder = Arc<dyn Fn(&Recorded, usize) -> axum::response::Response + Send + Sync>;

impl Recorder {
    pub async fn start(respond: Responder) -> Recorder {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let reqs = requests.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let reqs = reqs.clone();
                let respond = respond.clone();
                async move {
                    let rec = Recorded {
                        method,
                        uri,
                        headers,
                        body,
                    };
                    let n = {
                        let mut r = reqs.lock().unwrap();
                        r.push(rec.clone());
                        r.len()
                    };
                    respond(&rec, n)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Recorder { url, requests }
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}
