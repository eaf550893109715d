//! The two halves of `cargo xtask bench proxy` that are not the proxies themselves:
//!
//! - `proxy_bench upstream --port P`: a minimal stand-in for queue.fal.run that answers every
//!   request with a fixed status JSON (so both proxies are measured against the same upstream);
//! - `proxy_bench load --url U --target T [--requests N] [--concurrency C] [--warmup W]`: sends
//!   status polls (`GET U` with `x-fal-target-url: T`) over keep-alive connections and prints one
//!   JSON line: requests, errors, seconds, req/s, p50/p90/p99 latency in ms.

use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("upstream") => runtime.block_on(upstream(
            arg(&args, "--port")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
        )),
        Some("load") => {
            let url = arg(&args, "--url").expect("--url");
            let target = arg(&args, "--target").expect("--target");
            let n = arg(&args, "--requests")
                .and_then(|v| v.parse().ok())
                .unwrap_or(20_000);
            let c = arg(&args, "--concurrency")
                .and_then(|v| v.parse().ok())
                .unwrap_or(32);
            let warmup = arg(&args, "--warmup")
                .and_then(|v| v.parse().ok())
                .unwrap_or(500);
            runtime.block_on(load(url, target, n, c, warmup));
        }
        _ => {
            eprintln!(
                "usage: proxy_bench upstream --port P | load --url U --target T [--requests N] [--concurrency C]"
            );
            std::process::exit(2);
        }
    }
}

const STATUS_BODY: &str = r#"{"status":"IN_PROGRESS","request_id":"8c3f2a14-0000-4000-8000-000000000000","response_url":"https://queue.fal.run/fal-ai/flux/requests/8c3f2a14-0000-4000-8000-000000000000","status_url":"https://queue.fal.run/fal-ai/flux/requests/8c3f2a14-0000-4000-8000-000000000000/status","cancel_url":"https://queue.fal.run/fal-ai/flux/requests/8c3f2a14-0000-4000-8000-000000000000/cancel","logs":null}"#;

async fn upstream(port: u16) {
    let app = axum::Router::new().fallback(|| async {
        let mut res = Response::new(axum::body::Body::from(STATUS_BODY));
        *res.status_mut() = StatusCode::OK;
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        res.headers_mut().insert(
            "x-fal-request-id",
            HeaderValue::from_static("8c3f2a14-0000-4000-8000-000000000000"),
        );
        res
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!(
        "upstream on http://{}",
        listener.local_addr().expect("addr")
    );
    axum::serve(listener, app).await.expect("serve");
}

async fn load(url: String, target: String, n: usize, concurrency: usize, warmup: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let send = |client: reqwest::Client, url: String, target: String| async move {
        let started = Instant::now();
        let ok = match client
            .get(&url)
            .header("x-fal-target-url", &target)
            .send()
            .await
        {
            Ok(res) => {
                res.status().is_success()
                    && res
                        .bytes()
                        .await
                        .is_ok_and(|b| b.len() == STATUS_BODY.len())
            }
            Err(_) => false,
        };
        (started.elapsed(), ok)
    };
    for _ in 0..warmup {
        send(client.clone(), url.clone(), target.clone()).await;
    }
    let started = Instant::now();
    let per_task = n.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, target) = (client.clone(), url.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                out.push(send(client.clone(), url.clone(), target.clone()).await);
            }
            out
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(n);
    let mut errors = 0usize;
    for t in tasks {
        for (d, ok) in t.await.expect("task") {
            latencies.push(d);
            if !ok {
                errors += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!(
        "{{\"requests\":{},\"errors\":{errors},\"seconds\":{secs:.3},\"rps\":{:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3}}}",
        latencies.len(),
        latencies.len() as f64 / secs,
        pct(0.50),
        pct(0.90),
        pct(0.99)
    );
}
