//! Secrets: FAL_KEY never reaches a log line (a server at debug level, proxying to an
//! unreachable upstream, refusing hostile targets and serving a local endpoint, never prints
//! it), and a server without API keys does not leave loopback.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

const KEY: &str = "sk-live-5e3c1d-DO-NOT-LOG";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fal_key_is_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fresco"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .args(["--upstream-override", "http://127.0.0.1:9", "--echo"])
        .env("FAL_KEY", KEY)
        .env("FRESCO_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("fresco serving on ")
        .unwrap()
        .to_owned();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let http = fresco_server::http_client().unwrap();
    let proxy = format!("{url}/api/fal/proxy");
    for target in [
        "https://fal.run/fal-ai/flux/dev",
        "https://queue.fal.run/fal-ai/flux/requests/x/status",
        "https://evil.test/x",
    ] {
        let res = http
            .post(&proxy)
            .header("x-fal-target-url", target)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(!res.text().await.unwrap().contains(KEY));
    }
    let res = http
        .post(&proxy)
        .header("x-fal-target-url", "https://fal.run/fresco/echo")
        .header("content-type", "application/json")
        .body("{\"a\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "{\"a\":1}");

    child.kill().unwrap();
    child.wait().unwrap();
    let logs = logs.join().unwrap();
    assert!(
        logs.contains("could not reach"),
        "the upstream failure was logged:\n{logs}"
    );
    assert!(!logs.contains(KEY), "FAL_KEY leaked into the logs:\n{logs}");
    assert!(
        !logs.contains("5e3c1d"),
        "part of FAL_KEY leaked into the logs"
    );
}

/// `fresco serve` with `args` (and `FRESCO_API_KEYS` = `keys`) that must refuse to start.
fn refused_start(args: &[&str], keys: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fresco"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env("FRESCO_API_KEYS", keys)
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn without_api_keys_the_server_stays_on_loopback() {
    let err = refused_start(&["--host", "0.0.0.0"], "");
    assert!(
        err.contains("--api-keys") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    let err = refused_start(&["--host", "::"], "");
    assert!(err.contains("--insecure-no-auth"), "{err}");
    // Keys too short to be secret are refused, whatever the address.
    let err = refused_start(&[], "short");
    assert!(err.contains("at least 16"), "{err}");
}
