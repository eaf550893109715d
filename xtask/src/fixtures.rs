//! `cargo xtask fixtures real`: a random-weight checkpoint laid out exactly as a real Hugging Face
//! repository (its configs byte for byte, its file names, tensor names, shapes, dtypes and header
//! style), so that the real models' size and layout can be met without the hub.
//!
//! Everything comes from `tests/fixtures/real/<model>/`: the small files as they are in the real
//! repository, `tensors/<component>.tensors.tsv` (every tensor's name and shape), and `weights.tsv`
//! (the weight files to write: which tensor list, dtype, header style, and the real file's byte
//! size where it is established). The CLIP vocabulary is the real one, from the tiny fixtures.
//!
//! The weights are seeded and deterministic: each tensor's values depend only on the seed, its
//! name and its position (never on the order of writing or the number of threads), so the fp16
//! file is exactly the fp32 one rounded. Weights (2-D and up) are N(0, 1/fan_in), norms' weights 1,
//! biases 0, CLIP's `position_ids` buffer 0, 1, …: activations stay finite through every layer.
//! Files are streamed tensor by tensor (one tensor in memory), written under a temporary name and
//! renamed when whole; a layout already written with the same seed is left as it is.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::util::{Ctx, Result};

/// The layouts we can write, as `--model` names them.
pub const MODELS: [(&str, &str); 3] = [
    (
        "sdxl-inpaint",
        "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    ),
    (
        "sd15-inpaint",
        "stable-diffusion-v1-5/stable-diffusion-inpainting",
    ),
    ("sdxl-base", "stabilityai/stable-diffusion-xl-base-1.0"),
];

/// Which of a layout's weight files to write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variants {
    Fp16,
    Fp32,
    All,
}

impl Variants {
    pub fn parse(s: &str) -> Result<Variants> {
        match s {
            "fp16" => Ok(Variants::Fp16),
            "fp32" => Ok(Variants::Fp32),
            "all" => Ok(Variants::All),
            other => Err(format!("--variant {other:?}: expected fp16, fp32 or all")),
        }
    }

    fn wants(self, dtype: Dtype) -> bool {
        matches!(
            (self, dtype),
            (Variants::All, _) | (Variants::Fp16, Dtype::F16) | (Variants::Fp32, Dtype::F32)
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dtype {
    F16,
    F32,
    I64,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "F16",
            Dtype::F32 => "F32",
            Dtype::I64 => "I64",
        }
    }

    fn size(self) -> u64 {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::I64 => 8,
        }
    }
}

/// One tensor of a component, as its `.tensors.tsv` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<u64>,
}

impl TensorSpec {
    fn elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The integer buffer CLIP text encoders of some checkpoints carry.
    fn is_position_ids(&self) -> bool {
        self.name.ends_with("embeddings.position_ids")
    }
}

/// One weight file of a layout, as its `weights.tsv` lists it.
#[derive(Clone, Debug)]
pub struct FileSpec {
    pub path: String,
    pub tensors: String,
    pub dtype: Dtype,
    /// Old safetensors: keys and data in name order, no padding after the header. New: the
    /// integer tensors first, then by name, the header padded with spaces to 8 bytes.
    pub padded: bool,
    pub real_size: Option<u64>,
}

pub fn layout_dir(ctx: &Ctx, model: &str) -> PathBuf {
    ctx.root.join("tests/fixtures/real").join(model)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_tensors(text: &str) -> Result<Vec<TensorSpec>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(name), Some(shape)) = (cols.next(), cols.next()) else {
            return Err(format!("line {}: expected name<TAB>shape", i + 1));
        };
        let shape = shape
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .filter(|d| !d.trim().is_empty())
            .map(|d| d.trim().parse::<u64>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("line {}: shape {shape:?}: {e}", i + 1))?;
        out.push(TensorSpec {
            name: name.to_string(),
            shape,
        });
    }
    Ok(out)
}

pub fn parse_files(text: &str) -> Result<Vec<FileSpec>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [path, tensors, dtype, header, size] = cols[..] else {
            return Err(format!(
                "weights.tsv line {}: expected 5 tab-separated columns",
                i + 1
            ));
        };
        out.push(FileSpec {
            path: path.to_string(),
            tensors: tensors.to_string(),
            dtype: match dtype {
                "F16" => Dtype::F16,
                "F32" => Dtype::F32,
                other => return Err(format!("weights.tsv line {}: dtype {other:?}", i + 1)),
            },
            padded: match header {
                "padded" => true,
                "unpadded" => false,
                other => return Err(format!("weights.tsv line {}: header {other:?}", i + 1)),
            },
            real_size: match size {
                "-" => None,
                n => Some(
                    n.parse()
                        .map_err(|e| format!("weights.tsv line {}: size: {e}", i + 1))?,
                ),
            },
        });
    }
    Ok(out)
}

/// A safetensors file's plan: its header bytes (with the 8-byte length prefix) and its tensors in
/// data order, each with its dtype.
pub struct Plan {
    pub header: Vec<u8>,
    pub tensors: Vec<(TensorSpec, Dtype)>,
}

impl Plan {
    pub fn new(tensors: &[TensorSpec], dtype: Dtype, padded: bool) -> Plan {
        let mut tensors: Vec<(TensorSpec, Dtype)> = tensors
            .iter()
            .map(|t| {
                let d = if t.is_position_ids() {
                    Dtype::I64
                } else {
                    dtype
                };
                (t.clone(), d)
            })
            .collect();
        if padded {
            // safetensors ≥ 0.3 writes the widest dtype first (I64 before floats), then by name.
            tensors.sort_by(|(a, da), (b, db)| {
                db.size().cmp(&da.size()).then_with(|| a.name.cmp(&b.name))
            });
        } else {
            tensors.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name));
        }
        let mut json = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
        let mut offset = 0u64;
        for (t, d) in &tensors {
            let end = offset + t.elements() * d.size();
            let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
            json.push_str(&format!(
                ",\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
                t.name,
                d.name(),
                shape.join(",")
            ));
            offset = end;
        }
        json.push('}');
        if padded {
            while json.len() % 8 != 0 {
                json.push(' ');
            }
        }
        let mut header = (json.len() as u64).to_le_bytes().to_vec();
        header.extend_from_slice(json.as_bytes());
        Plan { header, tensors }
    }

    pub fn data_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|(t, d)| t.elements() * d.size())
            .sum()
    }

    pub fn file_bytes(&self) -> u64 {
        self.header.len() as u64 + self.data_bytes()
    }
}

/// FNV-1a: a tensor's name to its stream's seed.
fn fnv1a(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64, one stream per block of a tensor.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// Elements per independently seeded block: the unit of parallel work.
const BLOCK: usize = 1 << 20;

/// Fills `out` (elements `start..start + out.len()` of tensor `name`) with N(0, std²), Box–Muller
/// on a stream seeded by the seed, the name and the block index.
fn normals(seed: u64, name: &str, block: u64, std: f64, out: &mut [f32]) {
    let mut rng = SplitMix(fnv1a(seed, name) ^ block.wrapping_mul(0xd134_2543_de82_ef95));
    for pair in out.chunks_mut(2) {
        let r = (-2.0 * rng.unit().ln()).sqrt() * std;
        let theta = std::f64::consts::TAU * rng.unit();
        pair[0] = (r * theta.cos()) as f32;
        if let Some(second) = pair.get_mut(1) {
            *second = (r * theta.sin()) as f32;
        }
    }
}

/// IEEE half from single, rounding to nearest even (the values here are small: no overflow, but
/// it is handled).
pub fn f16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut out = m >> shift;
        if rest > half || (rest == half && out & 1 == 1) {
            out += 1;
        }
        return sign | out as u16;
    }
    let mut out = ((e as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && out & 1 == 1) {
        out += 1; // may carry into the exponent, which is the right answer
    }
    sign | out as u16
}

/// The values of one tensor, in f32 (before the file's dtype).
fn tensor_values(seed: u64, t: &TensorSpec, threads: usize) -> Vec<f32> {
    let n = t.elements() as usize;
    let is_bias = t.name.ends_with(".bias");
    if t.shape.len() < 2 {
        // Norms' weights are 1, every bias 0.
        return vec![if is_bias { 0.0 } else { 1.0 }; n];
    }
    let fan_in: u64 = t.shape[1..].iter().product();
    let std = (1.0 / fan_in as f64).sqrt();
    let mut out = vec![0f32; n];
    let blocks: Vec<(usize, &mut [f32])> = out.chunks_mut(BLOCK).enumerate().collect();
    let per = blocks.len().div_ceil(threads.max(1));
    std::thread::scope(|s| {
        let mut blocks = blocks;
        while !blocks.is_empty() {
            let rest = blocks.split_off(per.min(blocks.len()));
            let mine = std::mem::replace(&mut blocks, rest);
            s.spawn(move || {
                for (i, chunk) in mine {
                    normals(seed, &t.name, i as u64, std, chunk);
                }
            });
        }
    });
    out
}

fn write_tensor(
    out: &mut impl Write,
    seed: u64,
    t: &TensorSpec,
    dtype: Dtype,
    threads: usize,
) -> Result {
    let io = |e: std::io::Error| e.to_string();
    match dtype {
        Dtype::I64 => {
            for i in 0..t.elements() {
                out.write_all(&i.to_le_bytes()).map_err(io)?;
            }
        }
        Dtype::F32 => {
            let values = tensor_values(seed, t, threads);
            let mut bytes = Vec::with_capacity(values.len() * 4);
            for v in values {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            out.write_all(&bytes).map_err(io)?;
        }
        Dtype::F16 => {
            let values = tensor_values(seed, t, threads);
            let mut bytes = Vec::with_capacity(values.len() * 2);
            for v in values {
                bytes.extend_from_slice(&f16_bits(v).to_le_bytes());
            }
            out.write_all(&bytes).map_err(io)?;
        }
    }
    Ok(())
}

/// Writes one weight file; returns its size.
fn write_file(path: &Path, plan: &Plan, seed: u64, threads: usize) -> Result<u64> {
    let partial = path.with_extension("safetensors.partial");
    let file = File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut out = BufWriter::with_capacity(8 << 20, file);
    let io = |e: std::io::Error| format!("{}: {e}", partial.display());
    out.write_all(&plan.header).map_err(io)?;
    for (t, d) in &plan.tensors {
        write_tensor(&mut out, seed, t, *d, threads)?;
    }
    out.into_inner()
        .map_err(|e| format!("{}: {e}", partial.display()))?
        .sync_all()
        .map_err(io)?;
    fs::rename(&partial, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(plan.file_bytes())
}

/// Every small file of the layout (configs, tokenizer settings), relative to the layout folder.
fn small_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries =
            fs::read_dir(dir.join(&rel)).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = rel.join(entry.file_name());
            if entry.path().is_dir() {
                if name != Path::new("tensors") {
                    stack.push(name);
                }
            } else if name != Path::new("weights.tsv") {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `cargo xtask fixtures real`.
pub fn real(ctx: &Ctx, model: &str, dir: Option<&str>, variants: Variants, seed: u64) -> Result {
    if !MODELS.iter().any(|(m, _)| *m == model) {
        let names: Vec<&str> = MODELS.iter().map(|(m, _)| *m).collect();
        return Err(format!(
            "--model {model:?}: expected one of {}",
            names.join(", ")
        ));
    }
    let layout = layout_dir(ctx, model);
    let dest = dir
        .map(PathBuf::from)
        .unwrap_or_else(|| default_dir(ctx, model));
    let files = parse_files(&read(&layout.join("weights.tsv"))?)?;
    let stamp_path = dest.join(".fresco-fixture");
    let stamp = format!("model={model} seed={seed} generator=1\n");
    let wanted: Vec<&FileSpec> = files.iter().filter(|f| variants.wants(f.dtype)).collect();
    if fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp)
        && wanted.iter().all(|f| dest.join(&f.path).is_file())
    {
        println!(
            "{model}: already written in {} (seed {seed})",
            dest.display()
        );
        return Ok(());
    }
    fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    // A stale stamp from another seed must not vouch for the files about to be replaced.
    let _ = fs::remove_file(&stamp_path);
    for rel in small_files(&layout)? {
        crate::util::copy(&layout.join(&rel), &dest.join(&rel))?;
    }
    let vocab = ctx.root.join("tests/fixtures/tiny-sdxl-inpaint/tokenizer");
    for tokenizer in ["tokenizer", "tokenizer_2"] {
        if layout.join(tokenizer).is_dir() {
            for file in ["vocab.json", "merges.txt"] {
                crate::util::copy(&vocab.join(file), &dest.join(tokenizer).join(file))?;
            }
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let total: u64 = wanted
        .iter()
        .map(|f| -> Result<u64> { Ok(plan_of(&layout, f)?.file_bytes()) })
        .sum::<Result<u64>>()?;
    println!(
        "{model}: writing {} weight files ({:.2} GB) into {} (seed {seed}, {threads} threads)",
        wanted.len(),
        total as f64 / 1e9,
        dest.display()
    );
    for f in wanted {
        let plan = plan_of(&layout, f)?;
        let path = dest.join(&f.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let started = Instant::now();
        let bytes = write_file(&path, &plan, seed, threads)?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  {:<48} {:>14} bytes  {:>6.1} s  {:>6.0} MB/s{}",
            f.path,
            bytes,
            secs,
            bytes as f64 / 1e6 / secs.max(1e-9),
            match f.real_size {
                Some(real) if real == bytes => "  (= the real file's size)",
                Some(_) => "  (differs from the real file's size)",
                None => "",
            }
        );
    }
    fs::write(&stamp_path, stamp).map_err(|e| format!("{}: {e}", stamp_path.display()))?;
    println!(
        "{model}: done; use it as `fresco inpaint --model {}`",
        dest.display()
    );
    Ok(())
}

pub fn default_dir(ctx: &Ctx, model: &str) -> PathBuf {
    ctx.target_dir.join("real-models").join(model)
}

pub fn plan_of(layout: &Path, f: &FileSpec) -> Result<Plan> {
    let list = layout
        .join("tensors")
        .join(format!("{}.tensors.tsv", f.tensors));
    let tensors = parse_tensors(&read(&list)?).map_err(|e| format!("{}: {e}", list.display()))?;
    Ok(Plan::new(&tensors, f.dtype, f.padded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The plan (headers only) of every real layout: each file's header lists exactly the
    /// committed tensors, with their shapes and dtypes, and where the real file's size is
    /// established, the file we write has exactly that size — which depends on every name, shape,
    /// dtype, the data order and the header's padding.
    #[test]
    fn every_layouts_plan_matches_the_real_files() {
        let mut checked_sizes = 0;
        for (model, _) in MODELS {
            let layout = root().join("tests/fixtures/real").join(model);
            let files = parse_files(&read(&layout.join("weights.tsv")).unwrap()).unwrap();
            assert!(!files.is_empty(), "{model}");
            for f in &files {
                let plan = plan_of(&layout, f).unwrap();
                let len = u64::from_le_bytes(plan.header[..8].try_into().unwrap()) as usize;
                let header = std::str::from_utf8(&plan.header[8..]).unwrap();
                assert_eq!(header.len(), len);
                let listed = parse_tensors(
                    &read(&layout.join(format!("tensors/{}.tensors.tsv", f.tensors))).unwrap(),
                )
                .unwrap();
                // Every listed tensor is in the header with its shape, once.
                for t in &listed {
                    let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
                    let needle = format!("\"{}\":{{\"dtype\":\"", t.name);
                    assert_eq!(header.matches(&needle).count(), 1, "{model} {}", t.name);
                    let at = header.find(&needle).unwrap() + needle.len();
                    let dtype = if t.is_position_ids() {
                        "I64"
                    } else {
                        f.dtype.name()
                    };
                    assert!(
                        header[at..]
                            .starts_with(&format!("{dtype}\",\"shape\":[{}]", shape.join(","))),
                        "{model} {}",
                        t.name
                    );
                }
                assert_eq!(plan.tensors.len(), listed.len());
                assert_eq!(header.matches("data_offsets").count(), listed.len());
                if let Some(real) = f.real_size {
                    assert_eq!(plan.file_bytes(), real, "{model} {}", f.path);
                    checked_sizes += 1;
                }
            }
        }
        assert!(checked_sizes >= 10, "{checked_sizes}");
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        assert_eq!(f16_bits(0.0), 0);
        assert_eq!(f16_bits(-0.0), 0x8000);
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(65504.0), 0x7bff);
        assert_eq!(f16_bits(1e6), 0x7c00);
        assert_eq!(f16_bits(f32::NAN) & 0x7e00, 0x7e00);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: to even (1).
        assert_eq!(f16_bits(1.0 + 2f32.powi(-11)), 0x3c00);
        // Just above halfway rounds up.
        assert_eq!(f16_bits(1.0 + 2f32.powi(-11) + 2f32.powi(-20)), 0x3c01);
        // Subnormals: the smallest, and half of it (to even: 0).
        assert_eq!(f16_bits(2f32.powi(-24)), 0x0001);
        assert_eq!(f16_bits(2f32.powi(-25)), 0x0000);
        assert_eq!(f16_bits(3.0 * 2f32.powi(-25)), 0x0002);
        assert_eq!(f16_bits(6.1035156e-5), 0x0400);
    }

    /// The values depend on the seed, the name and the position only, not on the threads.
    #[test]
    fn weights_are_deterministic_and_scaled_by_fan_in() {
        let t = TensorSpec {
            name: "down.conv.weight".into(),
            shape: vec![64, 320, 3, 3],
        };
        let one = tensor_values(7, &t, 1);
        let three = tensor_values(7, &t, 3);
        assert_eq!(one, three);
        assert_ne!(one, tensor_values(8, &t, 1));
        let n = one.len() as f64;
        let mean = one.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = one.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let want = 1.0 / (320.0 * 9.0);
        assert!(mean.abs() < 1e-3, "{mean}");
        assert!((var / want - 1.0).abs() < 0.02, "{var} vs {want}");
        let bias = TensorSpec {
            name: "down.conv.bias".into(),
            shape: vec![64],
        };
        assert!(tensor_values(7, &bias, 1).iter().all(|&v| v == 0.0));
        let norm = TensorSpec {
            name: "down.norm1.weight".into(),
            shape: vec![64],
        };
        assert!(tensor_values(7, &norm, 1).iter().all(|&v| v == 1.0));
    }
}
