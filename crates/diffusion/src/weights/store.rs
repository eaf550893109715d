//! Checkpoint tensors on the device, by name. Filled by streaming safetensors files tensor by
//! tensor (each converted and uploaded before the next is read); emptied by the models, which take
//! each tensor by its diffusers name with the shape they expect. Whatever is left at the end was
//! not used by any part of the model: that is an error, not something to ignore silently.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use burn::tensor::{DType, Device, Tensor, TensorData};

use super::WeightsError;
use super::convert::{to_f16, to_f32};
use super::safetensors::{Dtype, SafetensorsStream, TensorBytes};

/// How many bytes are read from a source at a time.
pub const READ_CHUNK: usize = 1 << 20;

/// The float type weights are stored and computed in on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    /// Burn's dtype for it.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
        }
    }
}

struct Entry {
    tensor: Tensor<1>,
    shape: Vec<usize>,
    file: String,
}

/// Tensors of one model component, on one device.
pub struct Weights {
    device: Device,
    precision: Precision,
    /// The file(s) they came from, for messages.
    label: String,
    tensors: HashMap<String, Entry>,
    /// When set, missing tensors are made up (benchmarks of model shapes without checkpoints).
    synthesize: Option<Synth>,
}

/// Random weights for [`Weights::synthetic`]: normal with std `1/sqrt(fan_in)` for matrices and
/// kernels, ones for norm scales, small values for biases; deterministic for a seed.
struct Synth {
    state: u64,
    made: Vec<(String, Vec<usize>)>,
    /// Only names and shapes matter: tensors are one broadcast value, nothing is drawn.
    shapes_only: bool,
}

impl Synth {
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    fn values(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        if shape.len() == 1 {
            let norm_scale = name.ends_with("weight") && name.contains("norm");
            return (0..n)
                .map(|_| {
                    if norm_scale {
                        1.0
                    } else {
                        0.02 * self.normal()
                    }
                })
                .collect();
        }
        let fan_in = (n / shape[0].max(1)).max(1) as f32;
        let std = fan_in.sqrt().recip();
        (0..n).map(|_| std * self.normal()).collect()
    }
}

impl Weights {
    pub fn new(device: &Device, precision: Precision, label: impl Into<String>) -> Self {
        Weights {
            device: device.clone(),
            precision,
            label: label.into(),
            tensors: HashMap::new(),
            synthesize: None,
        }
    }

    /// A store that makes up every tensor a model asks for (random, deterministic for `seed`):
    /// builds a model of any config without a checkpoint, for benchmarks.
    pub fn synthetic(device: &Device, precision: Precision, seed: u64) -> Self {
        let mut w = Weights::new(device, precision, "synthetic weights");
        w.synthesize = Some(Synth {
            state: seed,
            made: Vec::new(),
            shapes_only: false,
        });
        w
    }

    /// A store that only records what a model asks for (names and shapes), handing out broadcast
    /// placeholders: lists a full-size model's tensors without its memory.
    pub fn shapes_only(device: &Device) -> Self {
        let mut w = Weights::new(device, Precision::F32, "shapes only");
        w.synthesize = Some(Synth {
            state: 0,
            made: Vec::new(),
            shapes_only: true,
        });
        w
    }

    /// The names and shapes a synthetic store made, in the order the model asked for them.
    pub fn synthesized(&self) -> &[(String, Vec<usize>)] {
        self.synthesize.as_ref().map_or(&[], |s| s.made.as_slice())
    }

    /// The values a synthetic store gives each of `names` (the same as [`Weights::synthetic`]
    /// gave them, for the same seed and order).
    pub fn synthetic_values(
        seed: u64,
        names: &[(String, Vec<usize>)],
        mut each: impl FnMut(&str, &[usize], Vec<f32>),
    ) {
        let mut synth = Synth {
            state: seed,
            made: Vec::new(),
            shapes_only: false,
        };
        for (name, shape) in names {
            each(name, shape, synth.values(name, shape));
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// False for a shapes-only store, whose tensors are one broadcast value (never to be
    /// materialised).
    pub fn holds_values(&self) -> bool {
        !self.synthesize.as_ref().is_some_and(|s| s.shapes_only)
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Converts one tensor to the device's float type and uploads it.
    ///
    /// Integers are no weights: the one integer tensor real checkpoints carry, CLIP's
    /// `…embeddings.position_ids` buffer (int64 `[1, 77]` in SD's and SDXL's text encoders), is
    /// checked to hold the positions 0, 1, … that the model computes itself, and left out. Any
    /// other integer tensor is refused.
    pub fn insert(&mut self, t: TensorBytes, file: &str) -> Result<(), WeightsError> {
        if t.info.dtype == Dtype::I64 {
            if t.info.name.ends_with("position_ids") {
                let ids = super::convert::to_i64(&t.bytes);
                let row = t.info.shape.last().copied().unwrap_or(0).max(1);
                if ids.iter().enumerate().all(|(i, &v)| v == (i % row) as i64) {
                    return Ok(());
                }
                return Err(WeightsError::Corrupt {
                    file: file.to_owned(),
                    message: format!(
                        "tensor {:?} should hold the positions 0, 1, …, {}",
                        t.info.name,
                        row - 1
                    ),
                });
            }
            return Err(WeightsError::UnsupportedDtype {
                file: file.to_owned(),
                tensor: t.info.name,
                dtype: "I64".into(),
            });
        }
        let shape = t.info.shape.clone();
        let numel = t.info.numel();
        let same = matches!(
            (t.info.dtype, self.precision),
            (Dtype::F32, Precision::F32) | (Dtype::F16, Precision::F16)
        );
        // Already in the store's type: the file's bytes become the tensor's (little-endian, as
        // safetensors and every backend store them) without a converted copy beside them.
        let data = if same {
            TensorData::from_bytes_vec(t.bytes, [numel], self.precision.dtype())
        } else {
            let data = match self.precision {
                Precision::F32 => TensorData::new(to_f32(&t.bytes, t.info.dtype), [numel]),
                Precision::F16 => TensorData::new(to_f16(&t.bytes, t.info.dtype), [numel]),
            };
            drop(t.bytes);
            data
        };
        // Created in the store's dtype directly: an f16 tensor never exists in f32 on the device.
        let tensor = Tensor::<1>::from_data(data, (&self.device, self.precision.dtype()));
        if self
            .tensors
            .insert(
                t.info.name.clone(),
                Entry {
                    tensor,
                    shape,
                    file: file.to_owned(),
                },
            )
            .is_some()
        {
            return Err(WeightsError::corrupt(
                file,
                format!("tensor {:?} appears twice", t.info.name),
            ));
        }
        Ok(())
    }

    /// Streams a whole safetensors source in, `READ_CHUNK` bytes at a time.
    pub fn read_safetensors(
        &mut self,
        mut source: impl Read,
        file: &str,
    ) -> Result<(), WeightsError> {
        let mut stream = SafetensorsStream::new(file);
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(WeightsError::Io {
                        file: file.to_owned(),
                        source,
                    });
                }
            };
            stream.feed(&buf[..n], &mut |t| self.insert(t, file))?;
        }
        stream.finish()
    }

    fn file_of(&self, name: &str) -> String {
        self.tensors
            .get(name)
            .map_or_else(|| self.label.clone(), |e| e.file.clone())
    }

    /// Takes a tensor by name, checking its shape.
    pub fn take<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Tensor<D>, WeightsError> {
        if let Some(synth) = &mut self.synthesize
            && !self.tensors.contains_key(name)
        {
            synth.made.push((name.to_owned(), shape.to_vec()));
            if synth.shapes_only {
                return Ok(Tensor::<D>::zeros([1; D], &self.device).expand(shape));
            }
            let values = synth.values(name, &shape);
            let data = match self.precision {
                Precision::F32 => TensorData::new(values, shape),
                Precision::F16 => TensorData::new(
                    values
                        .into_iter()
                        .map(half::f16::from_f32)
                        .collect::<Vec<_>>(),
                    shape,
                ),
            };
            return Ok(Tensor::<D>::from_data(
                data,
                (&self.device, self.precision.dtype()),
            ));
        }
        let file = self.file_of(name);
        let entry = self
            .tensors
            .remove(name)
            .ok_or_else(|| WeightsError::Missing {
                file: file.clone(),
                tensor: name.to_owned(),
                expected: shape.to_vec(),
            })?;
        if entry.shape != shape {
            return Err(WeightsError::Shape {
                file,
                tensor: name.to_owned(),
                found: entry.shape,
                expected: shape.to_vec(),
            });
        }
        Ok(entry.tensor.reshape(shape))
    }

    /// Like [`Weights::take`], for a tensor a checkpoint may or may not carry.
    pub fn take_optional<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Option<Tensor<D>>, WeightsError> {
        if self.tensors.contains_key(name) || self.synthesize.is_some() {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Whether a tensor is there (some layouts are told apart by which names they use).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of a tensor still there.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|e| e.shape.as_slice())
    }

    /// Ends loading: tensors nobody took are an error, except those matching `ignorable`
    /// (buffers some checkpoints carry, such as `position_ids`).
    pub fn finish(mut self, ignorable: &[&str]) -> Result<(), WeightsError> {
        self.tensors
            .retain(|name, _| !ignorable.iter().any(|i| name.ends_with(i)));
        if self.tensors.is_empty() {
            return Ok(());
        }
        let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, e) in self.tensors {
            by_file.entry(e.file).or_default().push(name);
        }
        let (file, mut names) = by_file.into_iter().next().unwrap_or_default();
        names.sort();
        let total = names.len();
        let shown: Vec<String> = names.into_iter().take(8).collect();
        let more = if total > shown.len() {
            format!(" and {} more", total - shown.len())
        } else {
            String::new()
        };
        Err(WeightsError::Unexpected {
            file,
            tensors: format!("{}{more}", shown.join(", ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::safetensors::TensorInfo;

    fn int64(name: &str, values: &[i64]) -> TensorBytes {
        TensorBytes {
            info: TensorInfo {
                name: name.into(),
                dtype: Dtype::I64,
                shape: vec![1, values.len()],
                begin: 0,
                end: values.len() as u64 * 8,
            },
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn clips_int64_position_ids_are_checked_and_left_out() {
        let mut w = Weights::new(&Device::flex(), Precision::F32, "text_encoder");
        let file = "text_encoder/model.fp16.safetensors";
        let ids: Vec<i64> = (0..77).collect();
        w.insert(int64("text_model.embeddings.position_ids", &ids), file)
            .unwrap();
        assert!(w.is_empty(), "a buffer, not a weight");
        let mut wrong = ids.clone();
        wrong.swap(3, 4);
        let e = w
            .insert(int64("text_model.embeddings.position_ids", &wrong), file)
            .unwrap_err();
        assert!(e.to_string().contains("0, 1, …, 76"), "{e}");
        let e = w.insert(int64("some.weight", &ids), file).unwrap_err();
        assert!(matches!(e, WeightsError::UnsupportedDtype { .. }), "{e}");
    }
}
