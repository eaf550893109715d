//! The client half of `cargo xtask bench load`: many callers of one `fresco serve`, as fal's
//! clients call it, and a watcher of `/health` beside them.
//!
//! - `load_bench run --url U --endpoint E --input JSON --requests N --clients C [--key K]`:
//!   C clients each submit, follow the status stream (SSE) to `COMPLETED` and read the result,
//!   until N requests are done in all; meanwhile `/health` is asked every 20 ms. A 429 (queue
//!   full) is retried after 100 ms, as fal's clients retry it, and counted. Prints one JSON line:
//!   requests, ok, errors, refused (429s seen), seconds, rps, p50/p99 of submit→result in ms,
//!   health n/p50/p99 in ms.
//! - `load_bench cap --url U --endpoint E --input JSON --burst B [--key K]`: B submits at once
//!   against a server whose queue holds fewer; then every accepted request is followed to its
//!   end, and one more submit must be accepted once the queue has drained. Prints one JSON line:
//!   burst, burst_s (until every submit was answered), accepted, refused, refused_ok (429s with fal's body), completed, lost, drain_s,
//!   refuse_p99_ms (how fast a 429 comes back), after_drain (the status of the last submit).
//!
//! A client error (connection refused, a status that is neither 200 nor 429, a stream that ends
//! before `COMPLETED`, a result that is not 200) counts as an error, never as a success.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn usage() -> ! {
    eprintln!(
        "usage: load_bench run --url U --endpoint E --input JSON --requests N --clients C [--key K]\n       load_bench cap --url U --endpoint E --input JSON --burst B [--key K]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let need = |name: &str| arg(&args, name).unwrap_or_else(|| usage());
    let number = |name: &str| -> usize { need(name).parse().unwrap_or_else(|_| usage()) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let input: Value = serde_json::from_str(&need("--input")).unwrap_or_else(|e| {
        eprintln!("--input is not JSON: {e}");
        std::process::exit(2)
    });
    let target = Target {
        url: need("--url").trim_end_matches('/').to_owned(),
        endpoint: need("--endpoint"),
        input,
        key: arg(&args, "--key"),
        http: fresco_server::http_client().expect("http client"),
    };
    let line = match args.first().map(String::as_str) {
        Some("run") => runtime.block_on(run(
            Arc::new(target),
            number("--requests"),
            number("--clients"),
        )),
        Some("cap") => runtime.block_on(cap(Arc::new(target), number("--burst"))),
        _ => usage(),
    };
    println!("{line}");
}

struct Target {
    url: String,
    endpoint: String,
    input: Value,
    key: Option<String>,
    http: reqwest::Client,
}

/// What a submit got.
enum Submitted {
    /// The request's result URL and status stream URL.
    Queued {
        response_url: String,
        stream: String,
    },
    /// 429, and whether its body was fal's error body (`{"detail": "…"}`).
    Refused { fal_body: bool },
}

impl Target {
    fn authorised(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => req.header("authorization", format!("Key {k}")),
            None => req,
        }
    }

    async fn submit(&self) -> Result<Submitted, String> {
        let res = self
            .authorised(self.http.post(format!("{}/{}", self.url, self.endpoint)))
            .timeout(Duration::from_secs(60))
            .json(&self.input)
            .send()
            .await
            .map_err(|e| format!("submit: {e}"))?;
        let status = res.status().as_u16();
        let body: Value = res.json().await.map_err(|e| format!("submit body: {e}"))?;
        match status {
            200 => {
                let url = |k: &str| {
                    body[k]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("submit answer without {k}: {body}"))
                };
                Ok(Submitted::Queued {
                    response_url: url("response_url")?,
                    stream: format!("{}/stream", url("status_url")?),
                })
            }
            429 => Ok(Submitted::Refused {
                fal_body: body["detail"].is_string(),
            }),
            s => Err(format!("submit answered {s}: {body}")),
        }
    }

    /// Follows the status stream to `COMPLETED`, then reads the result; Ok when it is a 200.
    async fn finish(&self, response_url: &str, stream: &str) -> Result<(), String> {
        let res = self
            .authorised(self.http.get(stream))
            .timeout(Duration::from_secs(900))
            .send()
            .await
            .map_err(|e| format!("status stream: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("status stream answered {}", res.status()));
        }
        let mut parser = fresco_protocol::sse::SseParser::new();
        let mut chunks = res.bytes_stream();
        let mut completed = false;
        'read: while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| format!("status stream: {e}"))?;
            for event in parser.feed(&chunk) {
                let status: Value = serde_json::from_str(&event.data)
                    .map_err(|e| format!("status event is not JSON: {e}"))?;
                if status["status"] == "COMPLETED" {
                    completed = true;
                    break 'read;
                }
            }
        }
        if !completed {
            return Err("the status stream ended before COMPLETED".into());
        }
        let res = self
            .authorised(self.http.get(response_url))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| format!("result: {e}"))?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| format!("result: {e}"))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "result answered {status}: {}",
                String::from_utf8_lossy(&body)
            ))
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Asks `/health` every 20 ms until `stop`; the latencies, sorted. A failed probe counts as
/// the time it took to fail, and is reported on stderr.
async fn watch_health(url: String, http: reqwest::Client, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = Instant::now();
        let probe = http
            .get(format!("{url}/health"))
            .timeout(Duration::from_secs(10))
            .send();
        match probe.await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
            }
            Ok(r) => eprintln!("/health answered {}", r.status()),
            Err(e) => eprintln!("/health failed: {e}"),
        }
        out.push(t.elapsed());
    }
    out.sort_unstable();
    out
}

async fn run(target: Arc<Target>, requests: usize, clients: usize) -> String {
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let health = tokio::spawn(watch_health(
        target.url.clone(),
        target.http.clone(),
        stop.clone(),
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (target, next, refused) = (target.clone(), next.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut done: Vec<Result<Duration, String>> = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let t = Instant::now();
                let outcome = loop {
                    match target.submit().await {
                        Ok(Submitted::Queued {
                            response_url,
                            stream,
                        }) => break target.finish(&response_url, &stream).await,
                        Ok(Submitted::Refused { .. }) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => break Err(e),
                    }
                };
                done.push(outcome.map(|()| t.elapsed()));
            }
            done
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    for task in tasks {
        for outcome in task.await.expect("client task") {
            match outcome {
                Ok(d) => latencies.push(d),
                Err(e) => {
                    if errors < 5 {
                        eprintln!("error: {e}");
                    }
                    errors += 1;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let health = health.await.expect("health task");
    latencies.sort_unstable();
    serde_json::json!({
        "requests": requests,
        "ok": latencies.len(),
        "errors": errors,
        "refused": refused.load(Ordering::Relaxed),
        "seconds": secs,
        "rps": latencies.len() as f64 / secs,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "health_n": health.len(),
        "health_p50_ms": percentile(&health, 0.50),
        "health_p99_ms": percentile(&health, 0.99),
    })
    .to_string()
}

async fn cap(target: Arc<Target>, burst: usize) -> String {
    let started = Instant::now();
    let burst_tasks: Vec<_> = (0..burst)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let r = target.submit().await;
                (r, t.elapsed())
            })
        })
        .collect();
    let mut accepted = Vec::new();
    let (mut refused, mut refused_ok, mut errors) = (0usize, 0usize, 0usize);
    let mut refuse_times = Vec::new();
    for task in burst_tasks {
        match task.await.expect("submit task") {
            (
                Ok(Submitted::Queued {
                    response_url,
                    stream,
                }),
                _,
            ) => accepted.push((response_url, stream)),
            (Ok(Submitted::Refused { fal_body }), d) => {
                refused += 1;
                refused_ok += usize::from(fal_body);
                refuse_times.push(d);
            }
            (Err(e), _) => {
                eprintln!("error: {e}");
                errors += 1;
            }
        }
    }
    let burst_s = started.elapsed().as_secs_f64();
    refuse_times.sort_unstable();
    let drain = Instant::now();
    let followers: Vec<_> = accepted
        .iter()
        .cloned()
        .map(|(response_url, stream)| {
            let target = target.clone();
            tokio::spawn(async move { target.finish(&response_url, &stream).await })
        })
        .collect();
    let mut completed = 0usize;
    for f in followers {
        match f.await.expect("follower") {
            Ok(()) => completed += 1,
            Err(e) => eprintln!("lost: {e}"),
        }
    }
    let drain_s = drain.elapsed().as_secs_f64();
    let after = match target.submit().await {
        Ok(Submitted::Queued {
            response_url,
            stream,
        }) => match target.finish(&response_url, &stream).await {
            Ok(()) => "completed".to_owned(),
            Err(e) => e,
        },
        Ok(Submitted::Refused { .. }) => "refused".to_owned(),
        Err(e) => e,
    };
    serde_json::json!({
        "burst": burst,
        "burst_s": burst_s,
        "accepted": accepted.len(),
        "refused": refused,
        "refused_ok": refused_ok,
        "errors": errors,
        "completed": completed,
        "lost": accepted.len() - completed,
        "drain_s": drain_s,
        "refuse_p99_ms": percentile(&refuse_times, 0.99),
        "after_drain": after,
    })
    .to_string()
}
