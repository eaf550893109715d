//! Converting raw little-endian tensor bytes to the element type the engine computes in.

use half::{bf16, f16};

use super::safetensors::Dtype;

/// Elements as f32.
pub fn to_f32(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::I64 => to_i64(bytes).into_iter().map(|v| v as f32).collect(),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => f16_to_f32(bytes),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// Little-endian f16 bytes widened, a block at a time through `half`'s slice conversion (F16C's
/// eight lanes at once where the CPU has it; one value at a time it was a tenth of loading
/// SDXL). The output is written once, never zero-filled first, and has room for 15 more floats:
/// the CPU's packed weights move themselves to a cache line inside their own allocation
/// (`cpu::gemm::PackedB::from_transposed_vec`), where growing it would copy the whole weight.
fn f16_to_f32(bytes: &[u8]) -> Vec<f32> {
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 1024;
    let n = bytes.len() / 2;
    let mut out = Vec::with_capacity(n + 15);
    let mut halves = [f16::ZERO; BLOCK];
    let mut wide = [0.0f32; BLOCK];
    for chunk in bytes[..2 * n].chunks(2 * BLOCK) {
        let len = chunk.len() / 2;
        for (h, c) in halves.iter_mut().zip(chunk.chunks_exact(2)) {
            *h = f16::from_le_bytes([c[0], c[1]]);
        }
        halves[..len].convert_to_f32_slice(&mut wide[..len]);
        out.extend_from_slice(&wide[..len]);
    }
    out
}

/// Elements as f16 (f32 and bf16 values are rounded to nearest).
pub fn to_f16(bytes: &[u8], dtype: Dtype) -> Vec<f16> {
    match dtype {
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect(),
        _ => to_f32(bytes, dtype)
            .into_iter()
            .map(f16::from_f32)
            .collect(),
    }
}

/// Elements of an I64 tensor.
pub fn to_i64(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_converts_exactly_where_it_can() {
        let values = [0.0f32, 1.0, -2.5, 65504.0, 1.0e-3];
        let f32_bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(to_f32(&f32_bytes, Dtype::F32), values);
        let f16_bytes: Vec<u8> = values
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        let back = to_f32(&f16_bytes, Dtype::F16);
        assert_eq!(&back[..4], &values[..4]);
        assert!((back[4] - 1.0e-3).abs() < 1e-6);
        let bf16_bytes: Vec<u8> = values
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect();
        assert_eq!(to_f32(&bf16_bytes, Dtype::BF16)[2], -2.5);
        assert_eq!(to_f16(&f32_bytes, Dtype::F32)[3], f16::MAX);
        assert_eq!(to_f16(&f16_bytes, Dtype::F16)[2], f16::from_f32(-2.5));
    }

    /// The block-wise widening against one value at a time, for every f16 (zeros, subnormals,
    /// infinities, NaNs) and a length that ends inside a block.
    #[test]
    fn every_f16_widens_as_one_value_at_a_time() {
        let bytes: Vec<u8> = (0..=u16::MAX)
            .chain(0..1000)
            .flat_map(u16::to_le_bytes)
            .collect();
        let wide = to_f32(&bytes, Dtype::F16);
        assert_eq!(wide.len(), bytes.len() / 2);
        for (c, w) in bytes.chunks_exact(2).zip(&wide) {
            let one = f16::from_le_bytes([c[0], c[1]]).to_f32();
            assert!(
                one.to_bits() == w.to_bits() || (one.is_nan() && w.is_nan()),
                "{:#06x}: {one} one at a time, {w} by blocks",
                u16::from_le_bytes([c[0], c[1]])
            );
        }
    }
}
