#![cfg(not(target_arch = "wasm32"))]
//! Loading through the repository layer: a local stand-in for huggingface.co (`HF_ENDPOINT`), the
//! hf-hub cache layout, offline use, the fp16 variant, sharded checkpoints, and clear errors for
//! missing shards and truncated files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use burn::tensor::Device;
use fresco_diffusion::models::unet::{UNet2DConditionModel, UNetConfig};
use fresco_diffusion::weights::WeightsError;
use fresco_diffusion::weights::convert::to_f32;
use fresco_diffusion::weights::hub::{HubOptions, RepoFiles};
use fresco_diffusion::weights::load::{config_json, load_weights};
use fresco_diffusion::weights::progress;
use fresco_diffusion::weights::repo::RepoLocation;
use fresco_diffusion::weights::safetensors::{self, Dtype, SafetensorsStream};
use fresco_diffusion::weights::store::Precision;

const COMMIT: &str = "3f2c1d0e9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e";

#[derive(Default)]
struct Counts {
    head: AtomicUsize,
    get: AtomicUsize,
}

/// Serves `root/<name>/…` as repository `tiny/<name>` at `/tiny/<name>/resolve/main/…`, with the
/// headers huggingface.co sends (commit, etag).
async fn hub(root: PathBuf) -> (String, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let state = (root, counts.clone());
    let app = axum::Router::new()
        .route(
            "/tiny/{name}/resolve/{rev}/{*path}",
            axum::routing::get(serve),
        )
        .route("/static/{*path}", axum::routing::get(serve_plain))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, counts)
}

async fn serve(
    State((root, counts)): State<(PathBuf, Arc<Counts>)>,
    method: Method,
    UrlPath((name, _rev, path)): UrlPath<(String, String, String)>,
) -> Response {
    if method == Method::HEAD {
        counts.head.fetch_add(1, Ordering::SeqCst);
    } else {
        counts.get.fetch_add(1, Ordering::SeqCst);
    }
    let Ok(bytes) = std::fs::read(root.join(&name).join(&path)) else {
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

/// `root/<path>` as a plain static server sends it: no commit, no ETag, a modification time.
async fn serve_plain(
    State((root, counts)): State<(PathBuf, Arc<Counts>)>,
    method: Method,
    UrlPath(path): UrlPath<String>,
) -> Response {
    if method == Method::HEAD {
        counts.head.fetch_add(1, Ordering::SeqCst);
    } else {
        counts.get.fetch_add(1, Ordering::SeqCst);
    }
    match std::fs::read(root.join(&path)) {
        Ok(bytes) => ([("last-modified", "Tue, 24 Nov 2026 04:00:00 GMT")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn options(endpoint: &str, cache: &Path, offline: bool) -> HubOptions {
    HubOptions {
        endpoint: endpoint.into(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline,
    }
}

async fn unet_matches(
    files: &RepoFiles,
    variant: Option<&str>,
    tol: f32,
) -> fresco_diffusion::weights::load::Loaded {
    let device = Device::flex();
    let config = UNetConfig::from_json(&config_json(files, "unet").await.unwrap()).unwrap();
    let (mut w, loaded) = load_weights(files, "unet", variant, &device, Precision::F32)
        .await
        .unwrap();
    let unet = UNet2DConditionModel::load(&config, &mut w).unwrap();
    w.finish(&[]).unwrap();
    let refs = common::references("tiny-sd15-inpaint/references/unet.safetensors");
    let out = unet
        .forward(
            refs["sample"].tensor::<4>(&device),
            &refs["timestep"].values,
            &refs["encoder_hidden_states"].tensor::<3>(&device),
            None,
        )
        .unwrap();
    common::assert_close(
        "unet loaded through the repository layer",
        out,
        &refs["out"],
        tol,
    );
    loaded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_into_the_hf_cache_then_reuses_it_online_and_offline() {
    let (endpoint, counts) = hub(common::fixture("")).await;
    let cache = tempfile::tempdir().unwrap();
    let location = RepoLocation::parse("tiny/tiny-sd15-inpaint").unwrap();

    let files = RepoFiles::new(
        location.clone(),
        options(&endpoint, cache.path(), false),
        progress::quiet(),
    )
    .unwrap();
    let loaded = unet_matches(&files, None, 1e-4).await;
    assert_eq!(loaded.files, ["unet/diffusion_pytorch_model.safetensors"]);
    let gets = counts.get.load(Ordering::SeqCst);
    assert_eq!(gets, 2, "config.json and the weights were downloaded");

    // The layout huggingface_hub uses.
    let repo = cache.path().join("models--tiny--tiny-sd15-inpaint");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let snap = repo
        .join("snapshots")
        .join(COMMIT)
        .join("unet/diffusion_pytorch_model.safetensors");
    assert!(
        std::fs::symlink_metadata(&snap)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_link(&snap)
            .unwrap()
            .starts_with("../../../blobs")
    );
    assert!(
        !repo
            .join(".no_exist")
            .join(COMMIT)
            .join("unet/diffusion_pytorch_model.safetensors")
            .exists()
    );

    // Again: only HEADs, no download.
    let files = RepoFiles::new(
        location.clone(),
        options(&endpoint, cache.path(), false),
        progress::quiet(),
    )
    .unwrap();
    unet_matches(&files, None, 1e-4).await;
    assert_eq!(
        counts.get.load(Ordering::SeqCst),
        gets,
        "nothing downloaded twice"
    );

    // Offline: no request at all.
    let before = counts.head.load(Ordering::SeqCst) + counts.get.load(Ordering::SeqCst);
    let files = RepoFiles::new(
        location.clone(),
        options("http://127.0.0.1:9", cache.path(), true),
        progress::quiet(),
    )
    .unwrap();
    unet_matches(&files, None, 1e-4).await;
    assert_eq!(
        counts.head.load(Ordering::SeqCst) + counts.get.load(Ordering::SeqCst),
        before
    );

    // A file that is not there is `None` online, and an error offline when never seen.
    let files = RepoFiles::new(
        location.clone(),
        options(&endpoint, cache.path(), false),
        progress::quiet(),
    )
    .unwrap();
    assert!(files.get("unet/nothing.bin").await.unwrap().is_none());
    let files = RepoFiles::new(
        location,
        options(&endpoint, cache.path(), true),
        progress::quiet(),
    )
    .unwrap();
    assert!(
        files.get("unet/nothing.bin").await.unwrap().is_none(),
        "the .no_exist marker answers offline"
    );
    let err = files.get("vae/other.bin").await.unwrap_err().to_string();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

/// Reads a safetensors file into (name → (dtype, shape, bytes)).
fn tensors_of(path: &Path) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = BTreeMap::new();
    let mut s = SafetensorsStream::new("x");
    s.feed(&bytes, &mut |t| {
        out.insert(
            t.info.name.clone(),
            (t.info.dtype, t.info.shape.clone(), t.bytes),
        );
        Ok::<_, WeightsError>(())
    })
    .unwrap();
    out
}

fn write(path: &Path, tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>) {
    let list: Vec<(&str, Dtype, &[usize], &[u8])> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.as_str(), *d, s.as_slice(), b.as_slice()))
        .collect();
    safetensors::write(&list, &mut std::fs::File::create(path).unwrap()).unwrap();
}

/// A repository folder with the fixture's UNet as an fp16 variant and as two plain shards.
fn variant_and_shards_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let unet = dir.path().join("unet");
    std::fs::create_dir_all(&unet).unwrap();
    let src = common::fixture("tiny-sd15-inpaint/unet");
    std::fs::copy(src.join("config.json"), unet.join("config.json")).unwrap();
    let all = tensors_of(&src.join("diffusion_pytorch_model.safetensors"));

    let f16: BTreeMap<_, _> = all
        .iter()
        .map(|(n, (d, s, b))| {
            let halves: Vec<u8> = to_f32(b, *d)
                .into_iter()
                .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
                .collect();
            (n.clone(), (Dtype::F16, s.clone(), halves))
        })
        .collect();
    write(&unet.join("diffusion_pytorch_model.fp16.safetensors"), &f16);

    let (first, second): (BTreeMap<_, _>, BTreeMap<_, _>) = all.into_iter().enumerate().fold(
        (BTreeMap::new(), BTreeMap::new()),
        |(mut a, mut b), (i, (n, t))| {
            if i % 2 == 0 {
                a.insert(n, t)
            } else {
                b.insert(n, t)
            };
            (a, b)
        },
    );
    let names = [
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
    ];
    write(&unet.join(names[0]), &first);
    write(&unet.join(names[1]), &second);
    let mut weight_map = serde_json::Map::new();
    for n in first.keys() {
        weight_map.insert(n.clone(), names[0].into());
    }
    for n in second.keys() {
        weight_map.insert(n.clone(), names[1].into());
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        unet.join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn the_fp16_variant_is_preferred_and_shards_are_joined() {
    let dir = variant_and_shards_repo();
    let files = RepoFiles::new(
        RepoLocation::Dir(dir.path().into()),
        HubOptions::from_env(),
        progress::quiet(),
    )
    .unwrap();
    // fp16 weights, computed in f32: within f16 rounding of the f32 reference.
    let loaded = unet_matches(&files, Some("fp16"), 5e-3).await;
    assert!(loaded.variant_used);
    assert_eq!(
        loaded.files,
        ["unet/diffusion_pytorch_model.fp16.safetensors"]
    );
    // No variant asked: the two shards, exactly the original weights.
    let loaded = unet_matches(&files, None, 1e-4).await;
    assert!(!loaded.variant_used);
    assert_eq!(loaded.files.len(), 2);
    // A variant the repository lacks falls back to the plain files.
    let loaded = unet_matches(&files, Some("bf16"), 1e-4).await;
    assert!(!loaded.variant_used);
}

#[tokio::test]
async fn missing_shards_and_truncated_files_name_what_is_wrong() {
    let dir = variant_and_shards_repo();
    let unet = dir.path().join("unet");
    std::fs::remove_file(unet.join("diffusion_pytorch_model.fp16.safetensors")).unwrap();
    std::fs::remove_file(unet.join("diffusion_pytorch_model-00002-of-00002.safetensors")).unwrap();
    let files = RepoFiles::new(
        RepoLocation::Dir(dir.path().into()),
        HubOptions::from_env(),
        progress::quiet(),
    )
    .unwrap();
    let err = load_weights(&files, "unet", None, &Device::flex(), Precision::F32)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("00002-of-00002") && err.contains("index.json"),
        "{err}"
    );

    // Truncate the first shard and restore the second: the error names the file and the tensor.
    let dir = variant_and_shards_repo();
    let unet = dir.path().join("unet");
    let first = unet.join("diffusion_pytorch_model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() - 100]).unwrap();
    let files = RepoFiles::new(
        RepoLocation::Dir(dir.path().into()),
        HubOptions::from_env(),
        progress::quiet(),
    )
    .unwrap();
    let err = load_weights(&files, "unet", None, &Device::flex(), Precision::F32)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("00001-of-00002.safetensors")
            && err.contains("truncated")
            && err.contains("tensor"),
        "{err}"
    );

    // A repository without the component at all.
    let err = load_weights(&files, "vae", None, &Device::flex(), Precision::F32)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no safetensors weights for vae"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_on_a_plain_web_server_loads_and_is_cached() {
    let (endpoint, counts) = hub(common::fixture("")).await;
    let cache = tempfile::tempdir().unwrap();
    let location = RepoLocation::parse(&format!("{endpoint}/static/tiny-sd15-inpaint/")).unwrap();
    assert_eq!(
        location,
        RepoLocation::Url(format!("{endpoint}/static/tiny-sd15-inpaint"))
    );
    let files = || {
        RepoFiles::new(
            location.clone(),
            options(&endpoint, cache.path(), false),
            progress::quiet(),
        )
        .unwrap()
    };
    unet_matches(&files(), None, 1e-4).await;
    let gets = counts.get.load(Ordering::SeqCst);
    assert_eq!(gets, 2, "config.json and the weights were downloaded");
    unet_matches(&files(), None, 1e-4).await;
    assert_eq!(
        counts.get.load(Ordering::SeqCst),
        gets,
        "known by URL, size and modification time: not downloaded again"
    );
}

/// A hub whose every answer `answer(method, path)` writes: the hostile servers below.
async fn scripted(
    answer: impl Fn(&Method, &str) -> Response + Send + Sync + Clone + 'static,
) -> String {
    let app = axum::Router::new().fallback(move |method: Method, uri: axum::http::Uri| {
        let answer = answer.clone();
        async move { answer(&method, uri.path()) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A folder outside the cache with a file a hostile hub would like to overwrite.
fn victim() -> (tempfile::TempDir, PathBuf) {
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("victim/model_index.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "precious").unwrap();
    (outside, file)
}

/// Every file under `dir`, links included (not followed).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_hostile_commit_header_is_refused_and_writes_nothing() {
    let (outside, victim) = victim();
    let victim_dir = victim.parent().unwrap().display().to_string();
    // The commit as an absolute folder (404: the not-found marker), and as a way up (200).
    for (status, commit) in [
        (StatusCode::NOT_FOUND, victim_dir.clone()),
        (StatusCode::OK, victim_dir.clone()),
        (
            StatusCode::OK,
            format!("../../../../../../../../..{victim_dir}"),
        ),
    ] {
        let header = commit.clone();
        let endpoint = scripted(move |_, _| {
            (
                status,
                [("x-repo-commit", header.as_str()), ("etag", "\"e1\"")],
                "{}",
            )
                .into_response()
        })
        .await;
        let cache = tempfile::tempdir().unwrap();
        for location in [
            RepoLocation::Url(format!("{endpoint}/models/x")),
            RepoLocation::parse("tiny/x").unwrap(),
        ] {
            let files = RepoFiles::new(
                location,
                options(&endpoint, cache.path(), false),
                progress::quiet(),
            )
            .unwrap();
            let err = files.get("model_index.json").await.unwrap_err().to_string();
            assert!(
                err.contains("x-repo-commit") && err.contains("40 hexadecimal digits"),
                "{status} {commit}: {err}"
            );
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            tree(outside.path()),
            std::slice::from_ref(&victim),
            "nothing new outside"
        );
    }
}

#[tokio::test]
async fn a_hostile_etag_and_a_planted_link_do_not_lead_outside_the_cache() {
    let (outside, victim) = victim();
    let planted = outside.path().join("planted");
    let etag = format!(
        "\"../../../../../../../..{}/owned\"",
        outside.path().display()
    );
    let endpoint = scripted(move |_, _| {
        (
            StatusCode::OK,
            [("x-repo-commit", COMMIT), ("etag", etag.as_str())],
            "{\"_class_name\": \"x\"}",
        )
            .into_response()
    })
    .await;
    let cache = tempfile::tempdir().unwrap();
    // A dangling link where the snapshot's file will go: written through, it would create
    // `planted` outside the cache.
    let snap_dir = cache.path().join("models--tiny--x/snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap_dir).unwrap();
    std::os::unix::fs::symlink(&planted, snap_dir.join("model_index.json")).unwrap();

    let files = RepoFiles::new(
        RepoLocation::parse("tiny/x").unwrap(),
        options(&endpoint, cache.path(), false),
        progress::quiet(),
    )
    .unwrap();
    let text = files.text("model_index.json").await.unwrap().unwrap();
    assert_eq!(text, "{\"_class_name\": \"x\"}");
    assert!(
        !planted.exists(),
        "nothing was written through the planted link"
    );
    assert_eq!(
        tree(outside.path()),
        std::slice::from_ref(&victim),
        "nothing new outside"
    );
    // The blob is named by the etag's hash, inside the cache; the snapshot links to it.
    let blobs = tree(&cache.path().join("models--tiny--x/blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let blob = blobs[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(blob.starts_with("etag-") && blob.len() == 69, "{blob}");
    assert_eq!(
        std::fs::read_link(snap_dir.join("model_index.json")).unwrap(),
        Path::new("../../blobs").join(&blob)
    );
}

#[tokio::test]
async fn hostile_shard_names_and_revisions_are_refused() {
    let (outside, victim) = victim();
    for shard in [
        format!("../../../../../../..{}", victim.display()),
        victim.display().to_string(),
        "sub/dir.safetensors".to_owned(),
        "..".to_owned(),
    ] {
        let index = serde_json::json!({"weight_map": {"conv.weight": shard}}).to_string();
        let endpoint = scripted(move |_, path| {
            if path.ends_with("unet/diffusion_pytorch_model.safetensors.index.json") {
                (
                    StatusCode::OK,
                    [("x-repo-commit", COMMIT), ("etag", "\"i1\"")],
                    index.clone(),
                )
                    .into_response()
            } else {
                (StatusCode::NOT_FOUND, [("x-repo-commit", COMMIT)], "").into_response()
            }
        })
        .await;
        let cache = tempfile::tempdir().unwrap();
        let files = RepoFiles::new(
            RepoLocation::parse("tiny/x").unwrap(),
            options(&endpoint, cache.path(), false),
            progress::quiet(),
        )
        .unwrap();
        let err = load_weights(&files, "unet", None, &Device::flex(), Precision::F32)
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused the file name"), "{shard}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(tree(outside.path()), std::slice::from_ref(&victim));
    for name in ["tiny/x@../../../../tmp", "tiny/x@/etc", "tiny/x@a/../b"] {
        assert!(RepoLocation::parse(name).is_err(), "{name}");
    }
}
