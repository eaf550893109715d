//! `fal-ai/inpaint` served by `fresco serve` on its own engine: the committed tiny SD 1.5
//! inpainting model fetched by Hugging Face id from a local stand-in for huggingface.co
//! (`HF_ENDPOINT`), inputs as `data:` URIs and as URLs of the server's own storage, the queue's
//! logs per step, the output image stored and downloadable — the same image `fresco inpaint`
//! writes for the same input, and the image diffusers paints for it. Bad inputs are 422s naming
//! the field.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fresco_protocol::queue::{QueueStatus, Status};
use serde_json::{Value, json};

const INPAINT: &str = "fal-ai/inpaint";

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `tests/fixtures/<name>/…` as repository `tiny/<name>` the way huggingface.co does
/// (`/tiny/<name>/resolve/<rev>/<path>`, with a commit and an ETag).
async fn hub() -> String {
    use axum::extract::Path;
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    async fn serve(
        Path((name, _rev, path)): Path<(String, String, String)>,
    ) -> axum::response::Response {
        let Ok(bytes) = std::fs::read(fixture(&name).join(&path)) else {
            return (
                StatusCode::NOT_FOUND,
                [("x-repo-commit", COMMIT)],
                "Entry not found",
            )
                .into_response();
        };
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let mut headers = HeaderMap::new();
        headers.insert("x-repo-commit", HeaderValue::from_static(COMMIT));
        headers.insert(
            "etag",
            HeaderValue::from_str(&format!("\"{:016x}\"", h.finish())).unwrap(),
        );
        (headers, bytes).into_response()
    }
    let app = axum::Router::new().route(
        "/tiny/{name}/resolve/{rev}/{*path}",
        axum::routing::get(serve),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    /// `fresco serve` with the fixtures as its models folder, and `extra` arguments.
    fn start(dir: &std::path::Path, hub: &str, extra: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fresco"))
            .args(["serve", "--port", "0", "--device", "cpu", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--models-dir")
            .arg(fixture(""))
            .args(extra)
            .env("FRESCO_LOG", "warn")
            .env("HF_ENDPOINT", hub)
            .env("HF_HUB_CACHE", dir.join("hf-server"))
            .env_remove("HF_HUB_OFFLINE")
            .stdout(Stdio::piped())
            .spawn()
            .expect("fresco runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let url = line
            .trim()
            .strip_prefix("fresco serving on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Serve { child, url }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data_uri(rel: &str) -> String {
    let bytes = std::fs::read(fixture(rel)).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Submits, waits for the end, and answers (final status with logs, result status, result body).
async fn run(http: &reqwest::Client, url: &str, input: Value) -> (QueueStatus, u16, Value) {
    run_on(http, url, INPAINT, input).await
}

async fn run_on(
    http: &reqwest::Client,
    url: &str,
    endpoint: &str,
    input: Value,
) -> (QueueStatus, u16, Value) {
    let res = http
        .post(format!("{url}/{endpoint}"))
        .json(&input)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Status and result live under the app id (a sub-path like /image-to-image is dropped).
    let submitted = res.json::<QueueStatus>().await.unwrap();
    let id = submitted.request_id.clone();
    let start = Instant::now();
    let done = loop {
        let s: QueueStatus = http
            .get(format!("{}?logs=1", submitted.status_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s.status == Status::Completed {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{id} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let res = http.get(&submitted.response_url).send().await.unwrap();
    (done, res.status().as_u16(), res.json().await.unwrap())
}

fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    fresco_diffusion::pipeline::image::psnr(a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fal_inpaint_paints_what_diffusers_paints_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub().await;
    let server = Serve::start(dir.path(), &hub, &[]);
    let url = &server.url;
    let http = fresco_server::http_client().unwrap();
    let model = "tiny/tiny-sd15-inpaint";

    // The case make_pipeline_references.py ran as "sd15_inpaint_pndm": negative prompt "" (the
    // endpoint's default), 10 steps, guidance 7.5, seed 42.
    let input = json!({
        "model_name": model,
        "prompt": "a red fox sitting in fresh snow, photo",
        "image_url": data_uri("pipelines/image32.png"),
        "mask_url": data_uri("pipelines/mask32.png"),
        "num_inference_steps": 10,
        "seed": 42
    });
    let (status, code, body) = run(&http, url, input.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["seed"], 42);
    let image = &body["image"];
    assert_eq!(image["content_type"], "image/png");
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(32), Some(32))
    );
    let logs: Vec<String> = status
        .logs
        .unwrap_or_default()
        .into_iter()
        .map(|l| l.message)
        .collect();
    // PNDM evaluates the UNet once more than the steps asked for (PLMS), as in diffusers.
    assert!(logs.iter().any(|l| l == "step 11/11"), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("loading")), "{logs:?}");

    let png = http
        .get(image["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(image["file_size"].as_u64(), Some(png.len() as u64));
    let got = image::load_from_memory(&png).unwrap().to_rgb8();
    let want = image::open(fixture("pipelines/sd15_inpaint_pndm.0.png"))
        .unwrap()
        .to_rgb8();
    let p = psnr(&got, &want);
    assert!(p >= 40.0, "PSNR {p:.1} dB against diffusers");

    // The CLI, same model id through the same hub, same inputs: the same pixels.
    let out = dir.path().join("cli.png");
    let cli = Command::new(env!("CARGO_BIN_EXE_fresco"))
        .args(["inpaint", "--model", model, "--image"])
        .arg(fixture("pipelines/image32.png"))
        .arg("--mask")
        .arg(fixture("pipelines/mask32.png"))
        .args([
            "--prompt",
            "a red fox sitting in fresh snow, photo",
            "--negative-prompt",
            "",
            "--steps",
            "10",
            "--seed",
            "42",
            "--out",
        ])
        .arg(&out)
        .env("HF_ENDPOINT", &hub)
        .env("HF_HUB_CACHE", dir.path().join("hf-cli"))
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(stdout.contains("seed 42"), "{stdout}");
    let from_cli = image::open(&out).unwrap().to_rgb8();
    assert_eq!(
        from_cli, got,
        "the CLI and the endpoint paint the same pixels"
    );

    // Inputs by URL (the server's own storage), the model already loaded, no seed: one is drawn
    // and returned.
    let stored = image["url"].as_str().unwrap().to_owned();
    let mut again = input.clone();
    again["image_url"] = json!(stored);
    again.as_object_mut().unwrap().remove("seed");
    again["num_inference_steps"] = json!(2);
    let (status, code, body) = run(&http, url, again).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["seed"].is_u64());
    let logs = status.logs.unwrap_or_default();
    assert!(
        !logs.iter().any(|l| l.message.contains("loading")),
        "the model stays loaded"
    );

    // Bad inputs: 422 naming the field.
    for (field, value, expect) in [
        ("mask_url", json!("data:image/png;base64,AAAA"), "mask_url"),
        ("num_inference_steps", json!(0), "num_inference_steps"),
        ("model_name", json!("./no/such/model"), "model_name"),
        ("model_name", json!("tiny/not-there"), "model_name"),
        // Local folders only inside --models-dir, links and `..` resolved first.
        ("model_name", json!("/"), "model_name"),
        ("model_name", json!("../../crates/cli"), "model_name"),
        (
            "model_name",
            json!(fixture("../../crates/cli").display().to_string()),
            "model_name",
        ),
    ] {
        let mut bad = input.clone();
        bad[field] = value;
        let (_, code, body) = run(&http, url, bad).await;
        assert_eq!(code, 422, "{field}: {body}");
        assert_eq!(body["detail"][0]["loc"][1], expect, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fal_lora_image_to_image_subset_matches_diffusers_and_names_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path(), "http://127.0.0.1:9", &[]);
    let url = &server.url;
    let http = fresco_server::http_client().unwrap();
    const I2I: &str = "fal-ai/lora/image-to-image";
    // make_pipeline_references.py's "sd2_img2img_ddim" (the model is v-prediction: on fal that
    // is said with prediction_type, whose default is epsilon).
    let input = json!({
        "model_name": fixture("tiny-sd2-4ch").display().to_string(),
        "prompt": "an oil painting of a harbour",
        "image_url": data_uri("pipelines/image48x40.png"),
        "num_inference_steps": 10,
        "noise_strength": 0.6,
        "prediction_type": "v_prediction",
        "seed": 21
    });
    let (_, code, body) = run_on(&http, url, I2I, input.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["has_nsfw_concepts"], json!([false]));
    let image = &body["images"][0];
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(48), Some(40))
    );
    let png = http
        .get(image["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let got = image::load_from_memory(&png).unwrap().to_rgb8();
    let want = image::open(fixture("pipelines/sd2_img2img_ddim.0.png"))
        .unwrap()
        .to_rgb8();
    let p = psnr(&got, &want);
    assert!(p >= 40.0, "PSNR {p:.1} dB against diffusers");

    // Two JPEGs with fal's scheduler name.
    let mut two = input.clone();
    two["num_images"] = json!(2);
    two["image_format"] = json!("jpeg");
    two["scheduler"] = json!("Euler A");
    two["num_inference_steps"] = json!(3);
    let (_, code, body) = run_on(&http, url, I2I, two).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["images"].as_array().unwrap().len(), 2);
    assert_eq!(body["images"][1]["content_type"], "image/jpeg");

    // What is not implemented is named; what the engine lacks too.
    for (field, value) in [
        (
            "loras",
            json!([{"path": "https://x.test/l.safetensors", "scale": 1.0}]),
        ),
        ("scheduler", json!("TCD")),
        ("noise_strength", json!(0.0)),
    ] {
        let mut bad = input.clone();
        bad[field] = value;
        let (_, code, body) = run_on(&http, url, I2I, bad).await;
        assert_eq!(code, 422, "{field}: {body}");
        assert_eq!(body["detail"][0]["loc"][1], field, "{body}");
    }
}

/// A TCP listener that counts the connections made to it: nothing may reach it.
async fn canary() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = conn.read(&mut [0; 4096]).await;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")
                .await;
        }
    });
    (port, hits)
}

/// 127.0.0.1 in the spellings a URL may use.
const LOOPBACK_SPELLINGS: [&str; 9] = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::1]",
    "localhost",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reaches_no_private_address_for_inputs_models_or_webhooks() {
    let (port, hits) = canary().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path(), "http://127.0.0.1:9", &["--echo"]);
    let url = &server.url;
    let http = fresco_server::http_client().unwrap();
    let input = json!({
        "model_name": "tiny/tiny-sd15-inpaint",
        "prompt": "p",
        "image_url": data_uri("pipelines/image32.png"),
        "mask_url": data_uri("pipelines/mask32.png"),
        "num_inference_steps": 2,
        "seed": 1
    });
    for host in LOOPBACK_SPELLINGS
        .iter()
        .chain(&["169.254.169.254", "10.0.0.1", "[fd00::1]"])
    {
        for field in ["image_url", "mask_url", "model_name"] {
            let target = format!("http://{host}:{port}/x.png");
            let mut bad = input.clone();
            bad[field] = json!(target);
            let (_, code, body) = run(&http, url, bad).await;
            assert_eq!(code, 422, "{target} as {field}: {body}");
            assert_eq!(body["detail"][0]["loc"][1], field, "{body}");
            // One text whatever the address, the port or the reason: no port scanner.
            let msg = body["detail"][0]["msg"].as_str().unwrap();
            let want = if field == "model_name" {
                "the model could not be loaded: could not fetch model_name".to_owned()
            } else {
                format!("could not fetch {field}")
            };
            assert_eq!(msg, want, "{target} as {field}");
        }
    }
    // A webhook to the canary: the request completes, the delivery is refused.
    let res = http
        .post(format!(
            "{url}/fresco/echo?fal_webhook=http://127.0.0.1:{port}/hook"
        ))
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the canary on 127.0.0.1 was reached"
    );
}

/// A model server that answers every file with 404 and `x-repo-commit` naming a folder outside
/// the cache, where a file waits to be truncated; and counts what it was asked.
async fn hostile_model_server(victim_dir: &std::path::Path) -> (String, Arc<AtomicUsize>) {
    let commit = victim_dir.display().to_string();
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let app = axum::Router::new().fallback(move || {
        let commit = commit.clone();
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            use axum::response::IntoResponse;
            (
                axum::http::StatusCode::NOT_FOUND,
                [("x-repo-commit", commit)],
                "",
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/m", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_model_server_writes_nothing_through_serve_or_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim/model_index.json");
    std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
    std::fs::write(&victim, "precious").unwrap();
    let (model_url, asked) = hostile_model_server(victim.parent().unwrap()).await;

    // The CLI, as a user would run it on a model URL.
    let cli = Command::new(env!("CARGO_BIN_EXE_fresco"))
        .args(["inpaint", "--model", &model_url, "--image"])
        .arg(fixture("pipelines/image32.png"))
        .arg("--mask")
        .arg(fixture("pipelines/mask32.png"))
        .args(["--prompt", "p", "--steps", "1", "--out"])
        .arg(dir.path().join("out.png"))
        .env("HF_HUB_CACHE", dir.path().join("hf-cli"))
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success());
    assert!(stderr.contains("x-repo-commit"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!dir.path().join("out.png").exists());

    // The server, allowed to reach the model server on 127.0.0.1.
    let server = Serve::start(dir.path(), "http://127.0.0.1:9", &["--allow-private-urls"]);
    let http = fresco_server::http_client().unwrap();
    let before = asked.load(Ordering::SeqCst);
    let (_, code, body) = run(
        &http,
        &server.url,
        json!({
            "model_name": model_url,
            "prompt": "p",
            "image_url": data_uri("pipelines/image32.png"),
            "mask_url": data_uri("pipelines/mask32.png"),
            "num_inference_steps": 1
        }),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"][1], "model_name", "{body}");
    assert!(asked.load(Ordering::SeqCst) > before, "the server did ask");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let victim_dir = std::fs::read_dir(victim.parent().unwrap()).unwrap().count();
    assert_eq!(victim_dir, 1, "nothing new beside the victim");
}
