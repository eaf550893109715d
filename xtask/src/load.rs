//! `cargo xtask bench load`: `fresco serve` under many callers, as a user would expose it (API
//! keys on, the defaults otherwise): the queue's own throughput and latency with `fresco/echo`,
//! the same with a real (tiny) inpainting, `/health` while it all happens, the server's peak
//! memory, and what callers see when the queue is full. Each row is a fresh server, so its peak
//! memory is that row's.

use std::process::Command;
use std::time::Duration;

use crate::bench::field;
use crate::util::{Ctx, Result, Service, base64, output};

const KEY: &str = "bench-load-key-0123456789abcdef";

/// How `fresco serve` is started for one row.
struct Server<'a> {
    workers: usize,
    max_queued: Option<usize>,
    fixtures: &'a std::path::Path,
}

impl Server<'_> {
    fn start(&self, ctx: &Ctx, data: &std::path::Path) -> Result<Service> {
        let _ = std::fs::remove_dir_all(data);
        let mut cmd = Command::new(ctx.bin("fresco"));
        cmd.args(["serve", "--port", "0", "--echo", "--data-dir"])
            .arg(data)
            .arg("--models-dir")
            .arg(self.fixtures)
            .args(["--workers", &self.workers.to_string()])
            .env("FRESCO_API_KEYS", KEY)
            .env("FRESCO_LOG", "warn");
        if let Some(cap) = self.max_queued {
            let cap = cap.to_string();
            cmd.args(["--max-queued", &cap, "--max-queued-per-key", &cap]);
        }
        Service::start("fresco serve", &mut cmd, Duration::from_secs(60))
    }
}

/// Runs the client program and returns its JSON line.
fn client(ctx: &Ctx, args: &[&str]) -> Result<String> {
    let out = output(
        Command::new(ctx.target_dir.join("debug/examples/load_bench"))
            .args(args)
            .args(["--key", KEY]),
    )?;
    out.lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_owned)
        .ok_or_else(|| format!("load_bench printed no result: {out}"))
}

struct Row {
    what: String,
    workers: usize,
    clients: usize,
    line: String,
    peak_mib: Option<f64>,
}

pub fn load(
    ctx: &Ctx,
    requests: usize,
    clients: &[usize],
    inpaint_requests: usize,
    inpaint_clients: &[usize],
) -> Result {
    crate::bench::build_benches(ctx)?;
    let fixtures = ctx.root.join("tests/fixtures");
    let data = std::env::temp_dir().join(format!("fresco-bench-load-{}", std::process::id()));
    let echo = r#"{"text":"hello","delay_ms":0}"#;
    let png = |name: &str| -> Result<String> {
        let bytes = std::fs::read(fixtures.join("pipelines").join(name))
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(format!("data:image/png;base64,{}", base64(&bytes)))
    };
    let inpaint = format!(
        r#"{{"model_name":"tiny-sd15-inpaint","prompt":"a red fox in snow","image_url":"{}","mask_url":"{}","num_inference_steps":4,"seed":1}}"#,
        png("image32.png")?,
        png("mask32.png")?
    );

    let mut rows = Vec::new();
    let mut measure = |what: &str,
                       endpoint: &str,
                       input: &str,
                       workers: usize,
                       n: usize,
                       c: usize,
                       warm_up: bool|
     -> Result {
        println!("{what}: {n} requests from {c} clients, {workers} worker(s)…");
        let server = Server {
            workers,
            max_queued: None,
            fixtures: &fixtures,
        }
        .start(ctx, &data)?;
        let url = server.url()?;
        let run = |n: usize, c: usize| {
            client(
                ctx,
                &[
                    "run",
                    "--url",
                    &url,
                    "--endpoint",
                    endpoint,
                    "--input",
                    input,
                    "--requests",
                    &n.to_string(),
                    "--clients",
                    &c.to_string(),
                ],
            )
        };
        if warm_up {
            let first = run(1, 1)?;
            println!(
                "  first call (loads the model): {:.0} ms",
                field(&first, "p50_ms")?
            );
        }
        let line = run(n, c)?;
        rows.push(Row {
            what: what.to_owned(),
            workers,
            clients: c,
            line,
            peak_mib: server.peak_rss_mib(),
        });
        Ok(())
    };
    for &c in clients {
        measure("fresco/echo", "fresco/echo", echo, 1, requests, c, false)?;
    }
    let most = clients.iter().copied().max().unwrap_or(1);
    measure("fresco/echo", "fresco/echo", echo, 8, requests, most, false)?;
    for &c in inpaint_clients {
        measure(
            "fal-ai/inpaint (tiny SD1.5, 32², 4 steps, CPU)",
            "fal-ai/inpaint",
            &inpaint,
            1,
            inpaint_requests,
            c,
            true,
        )?;
    }

    println!(
        "\n| endpoint | workers | clients | requests | ok | errors | 429s retried | req/s | p50 ms | p99 ms | /health p99 ms (n) | server peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failed = 0.0;
    for r in &rows {
        let f = |k: &str| field(&r.line, k);
        failed += f("errors")?;
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} ({:.0}) | {} |",
            r.what,
            r.workers,
            r.clients,
            f("requests")?,
            f("ok")?,
            f("errors")?,
            f("refused")?,
            f("rps")?,
            f("p50_ms")?,
            f("p99_ms")?,
            f("health_p99_ms")?,
            f("health_n")?,
            r.peak_mib.map_or("—".into(), |m| format!("{m:.0}")),
        );
    }

    // The queue full: one worker, echo taking 1 s, a queue of 20, and 100 callers at once. A
    // request that finishes while the burst is still arriving frees a place, so the queue may take
    // one more for each second the burst lasts.
    let (cap, burst) = (20usize, 100usize);
    println!(
        "\nthe queue full: --max-queued {cap}, 1 worker, fresco/echo taking 1 s, {burst} submits at once…"
    );
    let server = Server {
        workers: 1,
        max_queued: Some(cap),
        fixtures: &fixtures,
    }
    .start(ctx, &data)?;
    let url = server.url()?;
    let line = client(
        ctx,
        &[
            "cap",
            "--url",
            &url,
            "--endpoint",
            "fresco/echo",
            "--input",
            r#"{"delay_ms":1000}"#,
            "--burst",
            &burst.to_string(),
        ],
    )?;
    let f = |k: &str| field(&line, k);
    println!(
        "\n| submits | burst s | accepted | 429 (fal's body) | other errors | completed | lost | drain s | 429 p99 ms | a submit after the drain |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let after_ok = line.contains(r#""after_drain":"completed""#);
    println!(
        "| {:.0} | {:.2} | {:.0} | {:.0} ({:.0}) | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} |",
        f("burst")?,
        f("burst_s")?,
        f("accepted")?,
        f("refused")?,
        f("refused_ok")?,
        f("errors")?,
        f("completed")?,
        f("lost")?,
        f("drain_s")?,
        f("refuse_p99_ms")?,
        if after_ok {
            "completed"
        } else {
            "NOT completed"
        }
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&data);

    // What the figures must show for the server to have held: nothing lost, nothing failed, the
    // cap exactly enforced, 429s in fal's shape, and the server usable again afterwards.
    let mut broken = Vec::new();
    if failed > 0.0 {
        broken.push(format!("{failed} requests failed under load"));
    }
    let room = cap as f64 + f("burst_s")?.ceil();
    if f("accepted")? > room || f("accepted")? + f("refused")? + f("errors")? != burst as f64 {
        broken.push(format!("the queue of {cap} accepted {}", f("accepted")?));
    }
    if f("refused_ok")? != f("refused")? || f("lost")? > 0.0 || f("errors")? > 0.0 || !after_ok {
        broken.push("the full queue misbehaved (see the table)".into());
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken.join("; "))
    }
}
