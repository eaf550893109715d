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
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
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
}
