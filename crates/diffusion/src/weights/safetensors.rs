//! A streaming safetensors reader: bytes go in as they arrive (from a file, an HTTP body or a
//! browser `fetch` stream), whole tensors come out one at a time, in the order their data lies in
//! the file. It never holds more than the header and the one tensor it is assembling, so a
//! checkpoint is never whole in memory.
//!
//! Format: an 8-byte little-endian header length N, N bytes of JSON
//! (`{"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`),
//! then the data, with offsets relative to its start.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::WeightsError;

/// Headers larger than this are refused (the reference implementation's limit).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// Element types this reader converts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    /// Integers: token ids in reference files; never weights.
    I64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::I64 => 8,
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            "I64" => Some(Dtype::I64),
            _ => None,
        }
    }
}

/// Where one tensor lies, as the header says.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A whole tensor's raw little-endian bytes.
#[derive(Debug)]
pub struct TensorBytes {
    pub info: TensorInfo,
    pub bytes: Vec<u8>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Parses and checks a header: dtypes known, sizes matching shapes, ranges inside the data and not
/// overlapping. Returns the tensors sorted by where their data begins.
pub fn parse_header(json: &[u8], file: &str) -> Result<Vec<TensorInfo>, WeightsError> {
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| WeightsError::corrupt(file, format!("the header is not valid JSON: {e}")))?;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let entry: RawEntry = serde_json::from_value(value).map_err(|e| {
            WeightsError::corrupt(
                file,
                format!("header entry of tensor {name:?} is malformed: {e}"),
            )
        })?;
        let dtype = Dtype::parse(&entry.dtype).ok_or_else(|| WeightsError::UnsupportedDtype {
            file: file.to_owned(),
            tensor: name.clone(),
            dtype: entry.dtype.clone(),
        })?;
        let [begin, end] = entry.data_offsets;
        // A hostile header's shape can multiply past 2⁶⁴ (or past this machine's usize): such a
        // tensor has no size, and is refused rather than wrapped into a small, plausible one.
        let bytes = entry
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .filter(|&n| usize::try_from(n).is_ok())
            .and_then(|n| n.checked_mul(dtype.size() as u64));
        if end < begin || Some(end - begin) != bytes {
            return Err(WeightsError::corrupt(
                file,
                format!(
                    "tensor {name:?} claims {} bytes for shape {:?} of {:?} ({} expected)",
                    end.saturating_sub(begin),
                    entry.shape,
                    dtype,
                    bytes.map_or_else(|| "more than 2⁶⁴".to_owned(), |b| b.to_string())
                ),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: entry.shape,
            begin,
            end,
        });
    }
    tensors.sort_by_key(|t| (t.begin, t.end));
    for pair in tensors.windows(2) {
        if pair[1].begin < pair[0].end {
            return Err(WeightsError::corrupt(
                file,
                format!("tensors {:?} and {:?} overlap", pair[0].name, pair[1].name),
            ));
        }
    }
    Ok(tensors)
}

/// The 8-byte little-endian header length at the start of a file, checked for plausibility.
fn header_len(first: [u8; 8], file: &str) -> Result<u64, WeightsError> {
    let n = u64::from_le_bytes(first);
    if n > MAX_HEADER_BYTES {
        return Err(WeightsError::corrupt(
            file,
            format!("header length {n} is implausible: not a safetensors file?"),
        ));
    }
    Ok(n)
}

/// A safetensors file's table of contents, read from its first bytes alone (no tensor data):
/// enough to know, before downloading a checkpoint, what it will take to hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The tensors, in data order.
    pub tensors: Vec<TensorInfo>,
    /// The file's size in bytes: as the server that has it reports it, else `8 + header + data`.
    pub file_size: u64,
}

impl Header {
    /// The tensor with the most elements.
    pub fn largest(&self) -> Option<&TensorInfo> {
        self.tensors.iter().max_by_key(|t| t.numel())
    }
}

/// What the first bytes of a safetensors file tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Prefix {
    Header(Header),
    /// The header needs the file's first `n` bytes: `prefix` was shorter.
    Needs(u64),
}

/// Reads the header from a file's first bytes (`prefix`, as many as the caller has).
pub fn read_prefix(prefix: &[u8], file: &str) -> Result<Prefix, WeightsError> {
    let Some(first) = prefix.first_chunk::<8>() else {
        return Ok(Prefix::Needs(8));
    };
    let n = header_len(*first, file)?;
    let Some(json) = prefix.get(8..8 + n as usize) else {
        return Ok(Prefix::Needs(8 + n));
    };
    let tensors = parse_header(json, file)?;
    let data = tensors.iter().map(|t| t.end).max().unwrap_or(0);
    let file_size = (8 + n)
        .checked_add(data)
        .ok_or_else(|| WeightsError::corrupt(file, "the tensors end past 2⁶⁴ bytes"))?;
    Ok(Prefix::Header(Header { tensors, file_size }))
}

enum State {
    /// Reading the 8-byte length, then the JSON.
    Header { buf: Vec<u8>, len: Option<u64> },
    /// Reading data: `pos` is the offset within the data section of the next byte fed.
    Data {
        tensors: Vec<TensorInfo>,
        next: usize,
        pos: u64,
        current: Vec<u8>,
    },
}

/// The streaming reader. Feed it bytes with [`SafetensorsStream::feed`]; call
/// [`SafetensorsStream::finish`] at the end of the input to learn whether it was complete.
pub struct SafetensorsStream {
    file: String,
    state: State,
    header: Option<Vec<TensorInfo>>,
}

impl SafetensorsStream {
    /// `file` names the source in errors.
    pub fn new(file: impl Into<String>) -> Self {
        SafetensorsStream {
            file: file.into(),
            state: State::Header {
                buf: Vec::new(),
                len: None,
            },
            header: None,
        }
    }

    /// The tensors the header lists (once it has been read), in data order.
    pub fn tensors(&self) -> Option<&[TensorInfo]> {
        self.header.as_deref()
    }

    /// Consumes `chunk`, calling `on_tensor` with each tensor it completes, in data order, before
    /// reading on: the callback converts and uploads it, and its bytes are freed before the next
    /// tensor is assembled.
    pub fn feed<E: From<WeightsError>>(
        &mut self,
        mut chunk: &[u8],
        on_tensor: &mut dyn FnMut(TensorBytes) -> Result<(), E>,
    ) -> Result<(), E> {
        while !chunk.is_empty() {
            match &mut self.state {
                State::Header { buf, len } => {
                    let want = match len {
                        None => 8,
                        Some(n) => *n as usize,
                    };
                    let take = (want - buf.len()).min(chunk.len());
                    buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if buf.len() < want {
                        continue;
                    }
                    match len {
                        None => {
                            let first = buf.first_chunk::<8>().copied().unwrap_or_default();
                            let n = header_len(first, &self.file)?;
                            *len = Some(n);
                            buf.clear();
                            buf.reserve_exact(n as usize);
                        }
                        Some(_) => {
                            let tensors = parse_header(buf, &self.file)?;
                            self.header = Some(tensors.clone());
                            self.state = State::Data {
                                tensors,
                                next: 0,
                                pos: 0,
                                current: Vec::new(),
                            };
                            // A file with no tensors is complete after its header.
                            self.emit_ready(on_tensor)?;
                        }
                    }
                }
                State::Data {
                    tensors,
                    next,
                    pos,
                    current,
                } => {
                    let Some(t) = tensors.get(*next) else {
                        // Trailing bytes after the last tensor are ignored.
                        return Ok(());
                    };
                    if *pos < t.begin {
                        // Padding before this tensor.
                        let skip = ((t.begin - *pos) as usize).min(chunk.len());
                        chunk = &chunk[skip..];
                        *pos += skip as u64;
                        continue;
                    }
                    let size = (t.end - t.begin) as usize;
                    if current.capacity() < size {
                        current.reserve_exact(size - current.len());
                    }
                    let take = (size - current.len()).min(chunk.len());
                    current.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    *pos += take as u64;
                    self.emit_ready(on_tensor)?;
                }
            }
        }
        Ok(())
    }

    /// Hands over every tensor that is complete (zero-sized ones complete at once).
    fn emit_ready<E: From<WeightsError>>(
        &mut self,
        on_tensor: &mut dyn FnMut(TensorBytes) -> Result<(), E>,
    ) -> Result<(), E> {
        let State::Data {
            tensors,
            next,
            current,
            ..
        } = &mut self.state
        else {
            return Ok(());
        };
        while let Some(t) = tensors.get(*next) {
            if current.len() as u64 != t.end - t.begin {
                break;
            }
            let bytes = std::mem::take(current);
            *next += 1;
            on_tensor(TensorBytes {
                info: t.clone(),
                bytes,
            })?;
        }
        Ok(())
    }

    /// Ends the input: an error names the first tensor that did not arrive whole.
    pub fn finish(self) -> Result<(), WeightsError> {
        match self.state {
            State::Header { .. } => Err(WeightsError::corrupt(
                &self.file,
                "the file ends inside its header (truncated?)",
            )),
            State::Data {
                tensors,
                next,
                current,
                ..
            } => match tensors.get(next) {
                None => Ok(()),
                Some(t) => Err(WeightsError::corrupt(
                    &self.file,
                    format!(
                        "the file ends inside tensor {:?} ({} of {} bytes; truncated?)",
                        t.name,
                        current.len(),
                        t.end - t.begin
                    ),
                )),
            },
        }
    }
}

/// Serialises tensors as a safetensors file (used by tests and benchmarks to make checkpoints).
pub fn write(
    tensors: &[(&str, Dtype, &[usize], &[u8])],
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, dtype, shape, bytes) in tensors {
        let end = offset + bytes.len() as u64;
        let dtype = match dtype {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
        };
        header.insert(
            (*name).to_owned(),
            serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    // Pad the header to 8 bytes, as the reference writer does.
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(&json)?;
    for (_, _, _, bytes) in tensors {
        out.write_all(bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn sample() -> Vec<u8> {
        let a = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b: Vec<u8> = [half::f16::from_f32(0.5), half::f16::from_f32(-2.0)]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        write(
            &[
                ("b.weight", Dtype::F16, &[2], &b),
                ("a.weight", Dtype::F32, &[2, 3], &a),
                ("empty", Dtype::F32, &[0, 4], &[]),
            ],
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn the_header_is_read_from_the_first_bytes_alone() {
        let file = sample();
        let n = u64::from_le_bytes(file[..8].try_into().unwrap());
        assert_eq!(read_prefix(&file[..5], "f").unwrap(), Prefix::Needs(8));
        assert_eq!(read_prefix(&file[..8], "f").unwrap(), Prefix::Needs(8 + n));
        let end = 8 + n as usize;
        assert_eq!(
            read_prefix(&file[..end - 1], "f").unwrap(),
            Prefix::Needs(8 + n)
        );
        // The header alone is enough; the data need not be there.
        let Prefix::Header(header) = read_prefix(&file[..end], "f").unwrap() else {
            panic!("the header is complete");
        };
        assert_eq!(header.file_size, file.len() as u64);
        let names: Vec<_> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b.weight", "a.weight", "empty"]);
        assert_eq!(header.largest().unwrap().name, "a.weight");
        let mut garbage = file.clone();
        garbage[..8].fill(0xff);
        assert!(
            read_prefix(&garbage, "f")
                .unwrap_err()
                .to_string()
                .contains("implausible")
        );
    }

    fn read_all(bytes: &[u8], chunk: usize) -> Result<Vec<TensorBytes>, WeightsError> {
        let mut s = SafetensorsStream::new("test.safetensors");
        let mut got = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            s.feed(c, &mut |t| {
                got.push(t);
                Ok::<_, WeightsError>(())
            })?;
        }
        s.finish()?;
        Ok(got)
    }

    #[test]
    fn tensors_come_out_whole_in_data_order_whatever_the_chunking() {
        let bytes = sample();
        for chunk in [1, 3, 7, 64, bytes.len()] {
            let got = read_all(&bytes, chunk).unwrap();
            let names: Vec<&str> = got.iter().map(|t| t.info.name.as_str()).collect();
            assert_eq!(names, ["b.weight", "a.weight", "empty"], "chunk {chunk}");
            assert_eq!(got[1].info.shape, [2, 3]);
            assert_eq!(got[1].bytes, f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
            assert_eq!(got[0].info.dtype, Dtype::F16);
            assert!(got[2].bytes.is_empty());
        }
    }

    #[test]
    fn truncation_names_the_tensor_that_is_cut() {
        let bytes = sample();
        let err = read_all(&bytes[..bytes.len() - 3], 5)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.weight")
                && err.contains("test.safetensors")
                && err.contains("truncated"),
            "{err}"
        );
        let err = read_all(&bytes[..20], 5).unwrap_err().to_string();
        assert!(err.contains("header"), "{err}");
    }

    #[test]
    fn corrupt_headers_are_refused_clearly() {
        let mut bad_len = sample();
        bad_len[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            read_all(&bad_len, 64)
                .unwrap_err()
                .to_string()
                .contains("implausible")
        );

        let header = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(&[0; 16]);
        let err = read_all(&file, 64).unwrap_err().to_string();
        assert!(
            err.contains("\"w\"") && err.contains("16 expected"),
            "{err}"
        );

        // A shape whose size wraps past 2⁶⁴ to 0 bytes (2⁶³ × 4 × 4): refused, not taken for an
        // empty tensor whose shape would later size an allocation.
        let header =
            br#"{"w":{"dtype":"F32","shape":[9223372036854775808,4],"data_offsets":[0,0]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        let err = read_prefix(&file, "f").unwrap_err().to_string();
        assert!(err.contains("more than 2⁶⁴"), "{err}");

        let header = br#"{"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        let err = read_all(&file, 64).unwrap_err().to_string();
        assert!(err.contains("I8") && err.contains("\"w\""), "{err}");

        let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        assert!(
            read_all(&file, 64)
                .unwrap_err()
                .to_string()
                .contains("overlap")
        );
    }

    #[test]
    fn a_callback_error_stops_the_stream() {
        let bytes = sample();
        let mut s = SafetensorsStream::new("x");
        let mut seen = 0;
        let r: Result<(), WeightsError> = s.feed(&bytes, &mut |_| {
            seen += 1;
            Err(WeightsError::corrupt("x", "stop"))
        });
        assert!(r.is_err());
        assert_eq!(seen, 1);
    }
}
