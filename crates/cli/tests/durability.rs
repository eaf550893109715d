//! `fresco serve` killed with SIGKILL and restarted loses no accepted request: finished ones keep
//! their results, queued ones run, a running one is retried once and then marked failed, and
//! webhooks still pending are delivered after the restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fresco_protocol::queue::{LogLevel, QueueStatus, Status};
use serde_json::{Value, json};

const ECHO: &str = "fresco/echo";

/// A `fresco serve` child process, killed (SIGKILL) when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(dir: &std::path::Path, port: u16) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fresco"))
            .args(["serve", "--port", &port.to_string(), "--data-dir"])
            .arg(dir)
            .args(["--webhook-retry-base-ms", "100"])
            // The webhook receiver is on 127.0.0.1; the requests go to the test endpoint.
            .args(["--allow-private-urls", "--echo"])
            .env("FRESCO_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("fresco runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // Keep draining, so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = line
            .trim()
            .strip_prefix("fresco serving on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Serve { child, url }
    }

    /// SIGKILL: no chance to flush or clean up.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn submit(http: &reqwest::Client, url: &str, input: Value, webhook: Option<&str>) -> String {
    let target = match webhook {
        Some(w) => format!("{url}/{ECHO}?fal_webhook={w}"),
        None => format!("{url}/{ECHO}"),
    };
    let res = http.post(target).json(&input).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<QueueStatus>().await.unwrap().request_id
}

async fn status(http: &reqwest::Client, url: &str, id: &str) -> QueueStatus {
    http.get(format!("{url}/{ECHO}/requests/{id}/status?logs=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for(http: &reqwest::Client, url: &str, id: &str, state: Status) -> QueueStatus {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let s = status(http, url, id).await;
        if s.status == state {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} never reached {state:?}");
}

async fn result(http: &reqwest::Client, url: &str, id: &str) -> (StatusCode, Value) {
    let res = http
        .get(format!("{url}/{ECHO}/requests/{id}"))
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap())
}

/// A webhook receiver that refuses deliveries until `accept` is set, and counts what it accepted.
async fn receiver(accept: Arc<AtomicBool>, accepted: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().fallback(move || {
        let (accept, accepted) = (accept.clone(), accepted.clone());
        async move {
            if accept.load(Ordering::SeqCst) {
                accepted.fetch_add(1, Ordering::SeqCst);
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_no_accepted_request() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = fresco_server::http_client().unwrap();
    let accept = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let hook = format!("{}/hook", receiver(accept.clone(), accepted.clone()).await);

    let serve = Serve::start(dir.path(), port);
    let url = serve.url.clone();
    let finished = submit(&http, &url, json!({"n": "finished"}), Some(&hook)).await;
    wait_for(&http, &url, &finished, Status::Completed).await;
    let running = submit(
        &http,
        &url,
        json!({"n": "running", "delay_ms": 2500, "logs": ["started"]}),
        None,
    )
    .await;
    wait_for(&http, &url, &running, Status::InProgress).await;
    let queued_a = submit(&http, &url, json!({"n": "queued a"}), None).await;
    let queued_b = submit(
        &http,
        &url,
        json!({"n": "queued b", "delay_ms": 10}),
        Some(&hook),
    )
    .await;
    assert_eq!(status(&http, &url, &queued_b).await.queue_position, Some(1));
    serve.kill();

    // First restart: the running request is queued again, ahead of the others, and runs again.
    let serve = Serve::start(dir.path(), port);
    assert_eq!(
        result(&http, &url, &finished).await,
        (StatusCode::OK, json!({"n": "finished"}))
    );
    let again = wait_for(&http, &url, &running, Status::InProgress).await;
    let logs = again.logs.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.level == LogLevel::Warn && l.message.contains("restarted")),
        "the retry is explained in the logs: {logs:?}"
    );
    assert_eq!(
        status(&http, &url, &queued_a).await.queue_position,
        Some(0),
        "queued requests kept their order"
    );
    // Killed again in its second attempt: now it has had all its attempts.
    serve.kill();

    let serve = Serve::start(dir.path(), port);
    // Webhooks pending since before the kills are delivered once the receiver accepts.
    accept.store(true, Ordering::SeqCst);
    let failed = wait_for(&http, &url, &running, Status::Completed).await;
    assert_eq!(failed.error_type.as_deref(), Some("runner_disconnected"));
    let (code, body) = result(&http, &url, &running).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["detail"].as_str().unwrap().contains("2 time(s)"),
        "{body}"
    );
    wait_for(&http, &url, &queued_a, Status::Completed).await;
    wait_for(&http, &url, &queued_b, Status::Completed).await;
    assert_eq!(
        result(&http, &url, &queued_a).await,
        (StatusCode::OK, json!({"n": "queued a"}))
    );
    assert_eq!(
        result(&http, &url, &queued_b).await,
        (StatusCode::OK, json!({"n": "queued b", "delay_ms": 10}))
    );
    let start = Instant::now();
    while accepted.load(Ordering::SeqCst) < 2 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "both webhooks delivered, each once"
    );
    drop(serve);
}
