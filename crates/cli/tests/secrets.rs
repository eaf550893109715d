//! FAL_KEY never reaches a log line: a server at debug level, proxying to an unreachable
//! upstream, refusing hostile targets and serving a local endpoint, never prints it.

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
