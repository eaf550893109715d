//! Convolutions: 3×3 with stride 1 and padding 1 by Winograd's minimal filtering (`winograd/`), all
//! others as im2col + sgemm.

use burn::tensor::{Tensor, TensorData};

use super::gemm::{PackedB, gemm};
use super::winograd::Winograd;
use super::{Operand, SharedMut, activations, floats, parallel_chunks};

/// A convolution's parameters on the CPU.
#[derive(Debug)]
pub struct CpuConv2d {
    method: Method,
    pub bias: Option<Vec<f32>>,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// How a layer's weight is held, by the way the layer is computed.
#[derive(Debug)]
enum Method {
    /// 3×3, stride 1, padding 1: the filters as Winograd's tilings take them.
    Winograd(Winograd),
    /// The others: PyTorch's `[out, in, k, k]` weight packed as the `(in·k·k) × out` right-hand
    /// side of the im2col product.
    Im2col(PackedB),
}

/// The most floats one im2col tile holds (32 MiB): the columns of a whole 512×512 VAE layer would
/// take over a gigabyte, so output rows are done a band at a time.
const COLUMN_TILE_FLOATS: usize = 8 << 20;

impl CpuConv2d {
    pub fn from_tensors(
        weight: Tensor<4>,
        bias: Option<Tensor<1>>,
        stride: usize,
        padding: usize,
    ) -> Result<Self, String> {
        let [c_out, c_in, kernel, _] = weight.dims();
        let weight = floats(weight)?;
        let method = if kernel == 3 && stride == 1 && padding == 1 {
            Method::Winograd(Winograd::new(weight, c_out, c_in))
        } else {
            let depth = c_in * kernel * kernel;
            Method::Im2col(PackedB::from_transposed_vec(weight, depth, c_out))
        };
        Ok(CpuConv2d {
            method,
            bias: bias.map(floats).transpose()?,
            c_in,
            c_out,
            kernel,
            stride,
            padding,
        })
    }

    /// `torch.nn.functional.conv2d` on `[batch, in, h, w]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let [batch, c, h, w] = x.dims();
        assert_eq!(
            c, self.c_in,
            "convolution: input has {c} channels, the layer takes {}",
            self.c_in
        );
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let ho = (h + 2 * p).saturating_sub(k) / s + 1;
        let wo = (w + 2 * p).saturating_sub(k) / s + 1;
        let input = activations(x);
        let plane = ho * wo;
        let mut out = Vec::with_capacity(batch * self.c_out * plane);
        match &self.bias {
            Some(b) => {
                (0..batch).for_each(|_| b.iter().for_each(|v| out.resize(out.len() + plane, *v)))
            }
            None => out.resize(batch * self.c_out * plane, 0.0),
        }
        let weight = match &self.method {
            Method::Winograd(winograd) => {
                // An empty image leaves the bias (the filters see only zero padding).
                if c * h * w > 0 && plane > 0 {
                    winograd.forward(&input, h, w, &mut out);
                }
                return Tensor::from_data(
                    TensorData::new(out, [batch, self.c_out, ho, wo]),
                    &device,
                );
            }
            Method::Im2col(weight) => weight,
        };
        let depth = c * k * k;
        // A 1×1 convolution with stride 1 multiplies by the image itself: no columns to build.
        let pointwise = k == 1 && s == 1 && p == 0;
        let band = if pointwise {
            ho.max(1)
        } else {
            (COLUMN_TILE_FLOATS / (depth * wo).max(1)).clamp(1, ho.max(1))
        };
        let mut columns = if pointwise {
            Vec::new()
        } else {
            vec![0.0f32; depth * band * wo]
        };
        for n in 0..batch {
            let image = &input[n * c * h * w..(n + 1) * c * h * w];
            for y0 in (0..ho).step_by(band) {
                let rows = band.min(ho - y0);
                let width = rows * wo;
                let b_matrix = if pointwise {
                    image
                } else {
                    im2col(image, [c, h, w], [k, s, p], y0, rows, wo, &mut columns);
                    &columns[..]
                };
                let out_tile = &mut out[n * self.c_out * plane + y0 * wo..];
                // Computed transposed, outᵀ = columnsᵀ · weightᵀ (pixels × c_out), so that the
                // large operand is the left-hand side, whose rows (pixels) the cores split.
                // SAFETY: A = columnsᵀ is width×depth, element (x, d) at d·width + x (`columns`,
                // or for a pointwise convolution the image, c×h·w); B is packed depth×c_out; C =
                // out_tileᵀ is width×c_out, element (x, o) at o·plane + x, the last at
                // (c_out-1)·plane + width - 1 < out_tile's length, and holds the bias or zeros.
                // All outlive the call and C is exclusively ours.
                unsafe {
                    gemm(
                        width,
                        Operand::new(b_matrix, 1, width),
                        weight,
                        None,
                        true,
                        SharedMut(out_tile.as_mut_ptr()),
                        1,
                        plane as isize,
                        true,
                    );
                }
            }
        }
        Tensor::from_data(TensorData::new(out, [batch, self.c_out, ho, wo]), &device)
    }
}

/// The columns of output rows `y0..y0 + rows` of one image `[c, h, w]`: row `(ci·k + ky)·k + kx`
/// holds, for each output pixel of the band, the input value under kernel tap `(ky, kx)` (0 in
/// the padding); rows are `rows · wo` long.
fn im2col(
    image: &[f32],
    [c, h, w]: [usize; 3],
    [k, s, p]: [usize; 3],
    y0: usize,
    rows: usize,
    wo: usize,
    columns: &mut [f32],
) {
    let width = rows * wo;
    // Input channel `ci` fills the k·k column rows from (ci·k·k) on: a block per channel, the
    // blocks filled in parallel.
    parallel_chunks(
        &mut columns[..c * k * k * width],
        k * k * width,
        |ci, block| {
            let channel = &image[ci * h * w..(ci + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (ky * k + kx) * width;
                    let dst = &mut block[row..row + width];
                    for (r, dst_row) in dst.chunks_exact_mut(wo).enumerate() {
                        let iy = ((y0 + r) * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= h as isize {
                            dst_row.fill(0.0);
                            continue;
                        }
                        let src = &channel[iy as usize * w..(iy as usize + 1) * w];
                        if s == 1 {
                            // Output x reads input x + kx - p: one contiguous run between zeros.
                            let shift = kx as isize - p as isize;
                            let first = (-shift).clamp(0, wo as isize) as usize;
                            let last =
                                (w as isize - shift).clamp(first as isize, wo as isize) as usize;
                            dst_row[..first].fill(0.0);
                            dst_row[first..last].copy_from_slice(
                                &src[(first as isize + shift) as usize
                                    ..(last as isize + shift) as usize],
                            );
                            dst_row[last..].fill(0.0);
                        } else {
                            for (x, d) in dst_row.iter_mut().enumerate() {
                                let ix = (x * s + kx) as isize - p as isize;
                                *d = if ix < 0 || ix >= w as isize {
                                    0.0
                                } else {
                                    src[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::values;
    use burn::tensor::Device;

    /// im2col + sgemm against Burn's `conv2d`: the kernel sizes, strides and paddings the models
    /// use, with a band smaller than the image (a small tile budget is not configurable, so the
    /// image is made wide enough that whole-image tiles are not the only case: `rows` varies).
    #[test]
    fn sgemm_conv_matches_burn_conv2d() {
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        let device = Device::flex();
        for (k, stride, padding, h, w) in [
            (3, 1, 1, 9, 11),
            (3, 2, 1, 9, 11),
            (3, 2, 0, 10, 8),
            (1, 1, 0, 5, 7),
            (3, 1, 1, 1, 1),
            // Columns large enough to be filled on the thread pool.
            (3, 1, 1, 64, 64),
        ] {
            let (c_in, c_out) = (5, 6);
            let weight = Tensor::<4>::from_data(
                TensorData::new(values(c_out * c_in * k * k, 7), [c_out, c_in, k, k]),
                &device,
            );
            let bias = Tensor::<1>::from_data(TensorData::new(values(c_out, 8), [c_out]), &device);
            let x = Tensor::<4>::from_data(
                TensorData::new(values(2 * c_in * h * w, 9), [2, c_in, h, w]),
                &device,
            );
            for b in [Some(bias.clone()), None] {
                let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
                let want = conv2d(x.clone(), weight.clone(), b.clone(), options).into_data();
                let cpu = CpuConv2d::from_tensors(weight.clone(), b, stride, padding).unwrap();
                let got = cpu.forward(x.clone()).into_data();
                assert_eq!(got.shape(), want.shape(), "k{k} s{stride} p{padding}");
                // Winograd's path (3×3, stride 1, padding 1) is held to its own bound relative
                // to the largest output (winograd/: F(4×4, 3×3) on the 64×64 image).
                let tolerance = if k == 3 && stride == 1 && padding == 1 {
                    let scale = want.iter::<f32>().fold(0f32, |m, v| m.max(v.abs()));
                    burn::tensor::Tolerance::absolute(2e-5 * scale)
                } else {
                    burn::tensor::Tolerance::rel_abs(1e-5, 1e-5)
                };
                got.assert_approx_eq::<f32>(&want, tolerance);
            }
        }
    }
}
