//! The parsers that take bytes from outside, fed mutated inputs: none may panic, and each keeps
//! its promise on what it accepts (a repository path it passes has no `..`, a URL the outbound
//! guard passes has no private address, a data: URI it decodes is within the cap, …).
//!
//! Each target starts from real inputs (a safetensors header, the fixtures' PNG, fal's URLs, an
//! SSE stream, a completion body, a model index, …) and mutates them with a seeded generator:
//! flipped bits, bytes inserted and removed, ranges duplicated, spliced from another seed,
//! truncated, and "interesting" values written in (quotes, braces, huge numbers, `..`, `%00`).
//!
//! `FRESCO_FUZZ_CASES` (default 3000, what `cargo xtask test` runs) sets the cases per target;
//! `cargo xtask fuzz` runs a million each and prints the table. `FRESCO_FUZZ_SEED` replays a
//! run. A failing case is printed, escaped, with its target and case number.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use fresco_diffusion::pipeline::image::decode_at_most;
use fresco_diffusion::weights::names;
use fresco_diffusion::weights::repo::{ModelIndex, RepoLocation, ShardIndex};
use fresco_diffusion::weights::safetensors::{Prefix, read_prefix};
use fresco_protocol::EndpointId;
use fresco_protocol::sse::SseParser;
use fresco_protocol::storage::CompleteMultipart;
use fresco_protocol::urls::AbsoluteUrl;
use fresco_server::endpoints::input::{MAX_INPUT_BYTES, data_uri};
use fresco_server::outbound::check_url;

/// xorshift64*: small, seeded, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\\",
    b"/",
    b"..",
    b"../",
    b"%00",
    b"%2e%2e",
    b"\0",
    b"\xff",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"18446744073709551615",
    b"-1",
    b"1e308",
    b"\r\n",
    b"\n\n",
    b"data:",
    b"@",
    b"[::1]",
    b"127.0.0.1",
    b"0x7f000001",
    b"\xc3\x28",
    b"\xf0\x9f\x92\xa9",
];

/// One mutation or a few of `seed`, sometimes spliced with `other`.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                out.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let piece = out[i..i + n].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, piece);
            }
            4 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            5 => out.truncate(rng.below(len + 1)),
            6 => {
                let word = INTERESTING[rng.below(INTERESTING.len())];
                let i = rng.below(len + 1);
                out.splice(i..i, word.iter().copied());
            }
            _ if len > 0 => {
                // Overwrite a little-endian u64 (lengths, offsets) somewhere.
                let i = rng.below(len);
                let v = match rng.below(3) {
                    0 => u64::MAX,
                    1 => rng.next(),
                    _ => rng.below(1 << 20) as u64,
                };
                for (k, b) in v.to_le_bytes().iter().enumerate() {
                    if let Some(x) = out.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
            _ => out.push(rng.next() as u8),
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A safetensors file's first bytes: the length, the header, a little data.
fn safetensors_seed() -> Vec<u8> {
    let header = br#"{"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[],"data_offsets":[12,16]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&[0; 16]);
    out
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(rel),
    )
    .unwrap()
}

type Check = fn(&[u8]);
/// Makes a whole input from nothing but the generator: for structure mutations rarely reach.
type Generate = fn(&mut Rng) -> Vec<u8>;

/// A safetensors prefix built from parts: tensors with any dtype name, shapes of any rank with
/// dims from the edges (0, 1, 2³², `u64::MAX`), offsets consistent or not, a length that fits
/// or lies.
fn random_safetensors(rng: &mut Rng) -> Vec<u8> {
    const DIMS: [u64; 8] = [0, 1, 2, 3, 1 << 16, 1 << 32, u64::MAX / 2, u64::MAX];
    const DTYPES: [&str; 7] = ["F16", "F32", "BF16", "F64", "I64", "U8", "Q4"];
    let mut entries = Vec::new();
    let mut offset = 0u64;
    for i in 0..rng.below(4) {
        let shape: Vec<u64> = (0..rng.below(5))
            .map(|_| DIMS[rng.below(DIMS.len())])
            .collect();
        let dtype = DTYPES[rng.below(DTYPES.len())];
        let size = match dtype {
            "F16" | "BF16" => 2u64,
            "F32" => 4,
            "F64" | "I64" => 8,
            _ => 1,
        };
        let bytes = shape
            .iter()
            .try_fold(size, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX);
        let end = match rng.below(3) {
            0 => offset.saturating_add(bytes),
            1 => offset.wrapping_add(bytes),
            _ => rng.next(),
        };
        entries.push(format!(
            "\"t{i}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{end}]}}"
        ));
        offset = end;
    }
    let header = format!("{{{}}}", entries.join(","));
    let len = match rng.below(4) {
        0 => rng.next(),
        1 => header.len() as u64 + rng.below(16) as u64,
        _ => header.len() as u64,
    };
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out
}

/// A mutated fixture image with its PNG chunks' CRCs made right again, so that the mutation
/// reaches the decoder instead of stopping at the checksum.
fn random_png(rng: &mut Rng) -> Vec<u8> {
    let seeds = [
        fixture("pipelines/image32.png"),
        fixture("pipelines/mask32.png"),
    ];
    let seed = &seeds[rng.below(2)];
    let mut png = seed.clone();
    // Mutate after the signature, mostly inside the chunks' data.
    let body = mutate(rng, &png[8..], &[]);
    png.truncate(8);
    png.extend_from_slice(&body);
    let mut i = 8;
    while i + 12 <= png.len() {
        let len = u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]) as usize;
        let Some(end) = (i + 8).checked_add(len).filter(|&e| e + 4 <= png.len()) else {
            break;
        };
        let crc = crc32fast::hash(&png[i + 4..end]);
        png[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        i = end + 4;
    }
    png
}

/// The targets: name, seeds, and what must hold for any input.
#[allow(clippy::type_complexity)]
fn targets() -> Vec<(&'static str, Vec<Vec<u8>>, Check, Option<Generate>)> {
    let url_seeds = [
        "https://queue.fal.run/fal-ai/inpaint/requests/0123/status?logs=1",
        "http://127.0.0.1:8080/files/abc/x.png",
        "https://[::ffff:127.0.0.1]:443/a",
        "http://user:pw@example.com:99/a?b#c",
        "fal-ai/flux/dev",
        "workflows/me/wf/sub/path",
    ];
    let urls: Vec<Vec<u8>> = url_seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
    vec![
        (
            "safetensors header",
            vec![safetensors_seed(), fixture("pipelines/sd2_img2img_ddim.latents.safetensors")],
            |b| {
                if let Ok(Prefix::Header(h)) = read_prefix(b, "fuzz.safetensors") {
                    // Every tensor it accepts has exactly the bytes its shape and dtype need,
                    // inside the file it describes: nothing later is sized from a lie.
                    for t in &h.tensors {
                        let bytes = (t.numel() as u64).checked_mul(t.dtype.size() as u64);
                        assert_eq!(bytes, Some(t.end - t.begin), "{}", t.name);
                        assert!(t.end <= h.file_size, "a tensor past the file's end");
                    }
                    let _ = h.largest();
                }
            },
            Some(random_safetensors),
        ),
        (
            "data: URI",
            vec![
                b"image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==".to_vec(),
                b"text/plain,hello%20world%ZZ%".to_vec(),
                b",".to_vec(),
            ],
            |b| {
                if let Ok(bytes) = data_uri(&text(b), "image_url") {
                    assert!(bytes.len() <= MAX_INPUT_BYTES);
                }
            },
            None,
        ),
        (
            "image header and decode",
            vec![fixture("pipelines/image32.png"), fixture("pipelines/mask32.png")],
            |b| {
                if let Ok(img) = decode_at_most(b, "image_url", 64 * 64) {
                    assert!(u64::from(img.width()) * u64::from(img.height()) <= 64 * 64);
                }
            },
            Some(random_png),
        ),
        (
            "endpoint id",
            urls.clone(),
            |b| {
                let s = text(b);
                if let Ok(id) = EndpointId::parse_strict(&s) {
                    assert!(!id.owner.is_empty() && !id.alias.is_empty());
                }
                let _ = EndpointId::parse(&s);
            },
            None,
        ),
        (
            "URL (protocol and proxy target)",
            urls.clone(),
            |b| {
                let s = text(b);
                let _ = AbsoluteUrl::parse(&s);
                let _ = fresco_server::proxy::target::check(Some(&s));
            },
            None,
        ),
        (
            "outbound URL guard",
            urls,
            |b| {
                let Ok(url) = url::Url::parse(&text(b)) else {
                    return;
                };
                if check_url(&url).is_ok() {
                    assert!(matches!(url.scheme(), "http" | "https"));
                    match url.host() {
                        Some(url::Host::Ipv4(ip)) => {
                            assert!(fresco_server::outbound::is_public(ip.into()), "{url}")
                        }
                        Some(url::Host::Ipv6(ip)) => {
                            assert!(fresco_server::outbound::is_public(ip.into()), "{url}")
                        }
                        Some(url::Host::Domain(d)) => assert!(d != "localhost", "{url}"),
                        None => panic!("{url} has no host"),
                    }
                }
            },
            None,
        ),
        (
            "SSE stream",
            vec![
                b"event: message\ndata: {\"status\":\"IN_QUEUE\"}\n\n: keep-alive\n\nid: 7\nretry: 100\ndata: a\ndata: b\r\n\r\n".to_vec(),
            ],
            |b| {
                let mut p = SseParser::new();
                // In two chunks cut anywhere, as a network delivers them.
                let cut = b.len() / 3;
                let mut events = p.feed(&b[..cut]);
                events.extend(p.feed(&b[cut..]));
                assert!(events.len() <= b.len() / 2 + 1);
            },
            None,
        ),
        (
            "multipart completion body",
            vec![br#"{"parts":[{"partNumber":1,"etag":"a"},{"partNumber":2,"etag":"b"}]}"#.to_vec()],
            |b| {
                let _ = serde_json::from_slice::<CompleteMultipart>(b);
            },
            None,
        ),
        (
            "hub index files and names",
            vec![
                fixture("tiny-sd15-inpaint/model_index.json"),
                br#"{"weight_map":{"a":"diffusion_pytorch_model-00001-of-00002.safetensors","b":"../x"}}"#.to_vec(),
                b"0123456789abcdef0123456789abcdef01234567".to_vec(),
                b"unet/diffusion_pytorch_model.fp16.safetensors".to_vec(),
                b"owner/name@refs/pr/1".to_vec(),
            ],
            |b| {
                let s = text(b);
                let _ = ModelIndex::from_json(&s);
                if let Ok(index) = serde_json::from_str::<ShardIndex>(&s) {
                    for f in index.files() {
                        if names::file_name(&f).is_ok() {
                            assert!(!f.contains('/') && !f.contains('\\') && f != "..");
                        }
                    }
                }
                if let Ok(p) = names::repo_path(&s) {
                    assert!(!p.starts_with('/') && !p.split('/').any(|c| c == ".." || c.is_empty()));
                }
                if names::commit(&s).is_ok() {
                    assert!(s.len() == 40);
                }
                if let Ok(RepoLocation::Hub { revision, .. }) = RepoLocation::parse_hub_id(&s) {
                    assert!(!revision.split('/').any(|c| c == ".."));
                }
                let blob = names::blob_name(&s);
                assert!(names::file_name(&blob).is_ok(), "{blob:?}");
            },
            None,
        ),
    ]
}

#[test]
fn parsers_of_outside_bytes_never_panic_and_keep_their_promises() {
    let cases: usize = std::env::var("FRESCO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("FRESCO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f2e5_c0ff_ee01);
    // The panics are this test's findings: reported below, not on stderr as they happen.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    println!(
        "\n{:<34} {:>10} {:>9} {:>12} {:>7}",
        "target", "cases", "seconds", "cases/s", "panics"
    );
    for (name, seeds, check, generate) in targets() {
        let mut rng = Rng(seed ^ (name.len() as u64 * 0x9e37_79b9));
        let n = cases.max(1);
        let started = Instant::now();
        let mut panics = 0;
        // The seeds themselves first, then mutations of mutations.
        let mut pool = seeds.clone();
        for case in 0..n {
            let input = if case < seeds.len() {
                seeds[case].clone()
            } else if let Some(generate) = generate.filter(|_| case % 2 == 0) {
                generate(&mut rng)
            } else {
                let a = &pool[rng.below(pool.len())];
                let b = &pool[rng.below(pool.len())];
                mutate(&mut rng, a, b)
            };
            if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
                panics += 1;
                if failures.len() < 10 {
                    failures.push(format!("{name}, case {case}: {:?}", text(&input)));
                }
            }
            if pool.len() < 256 && input.len() < 1 << 16 && rng.below(16) == 0 {
                pool.push(input);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{name:<34} {n:>10} {secs:>9.2} {:>12.0} {panics:>7}",
            n as f64 / secs.max(1e-9)
        );
    }
    let _ = std::panic::take_hook();
    assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
}
