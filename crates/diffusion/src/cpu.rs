//! The CPU device's hot kernels: `Linear` layers (and GEGLU) as one `sgemm` of `matrixmultiply`,
//! and convolutions as im2col + sgemm.
//!
//! Most of a UNet's time on the CPU is its linear layers (the transformer blocks' projections and
//! feed-forwards). Burn's CPU backend (burn-flex) multiplies with the `gemm` crate, which on this
//! project's 2-core AVX2 machine runs those shapes (512–2048 tokens × 128–2048 features) at
//! 30–44 GFLOP/s, where `matrixmultiply`'s sgemm runs them at 74–79 — as fast as PyTorch's MKL
//! there (`engine_bench gemm` prints both). So on the CPU device, in f32, `Linear` and `Conv2d` keep
//! their weights as plain row-major floats (not Burn tensors, so the weights are held once) and
//! multiply with sgemm; the input and output cross into Burn without copies (burn-flex hands over
//! a uniquely owned contiguous buffer and adopts a `Vec`).

use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::weights::store::Weights;

/// Whether `device` is the CPU device (burn-flex).
pub fn is_cpu(device: &Device) -> bool {
    *device == Device::flex()
}

/// Whether layers built from `w` with parameters of `dtype` take the sgemm path: real values (not
/// a shapes-only store, whose broadcast tensors must never be materialised), f32, on the CPU.
pub fn takes_sgemm(w: &Weights, dtype: DType) -> bool {
    w.holds_values() && dtype == DType::F32 && is_cpu(w.device())
}

/// A linear layer's parameters on the CPU: `weight_t` is `[in, out]` row-major (the transpose of
/// PyTorch's `[out, in]`: sgemm packs a row-major right-hand side fastest).
#[derive(Debug)]
pub struct CpuLinear {
    pub weight_t: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub d_in: usize,
    pub d_out: usize,
}

impl CpuLinear {
    /// From Burn tensors `weight` `[out, in]` and `bias` `[out]` (consumed; their buffers are
    /// taken over without a copy where Burn allows).
    pub fn from_tensors(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Result<Self, String> {
        let [d_out, d_in] = weight.dims();
        let w = floats(weight)?;
        let mut weight_t = vec![0.0; w.len()];
        for (o, row) in w.chunks_exact(d_in.max(1)).enumerate() {
            for (i, v) in row.iter().enumerate() {
                weight_t[i * d_out + o] = *v;
            }
        }
        Ok(CpuLinear {
            weight_t,
            bias: bias.map(floats).transpose()?,
            d_in,
            d_out,
        })
    }

    /// `x · weightᵀ + bias` over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let (out, mut dims) = self.product(x);
        dims[D - 1] = self.d_out;
        Tensor::from_data(TensorData::new(out, dims), &device)
    }

    /// diffusers' GEGLU on this layer's output: `hidden, gate = proj(x).chunk(2, dim=-1)`, then
    /// `hidden · gelu(gate)` — in one pass over the product, on every core, with the erf PyTorch's
    /// vectorised CPU kernels use (see [`gelu`]).
    pub fn geglu<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let (product, mut dims) = self.product(x);
        let half = self.d_out / 2;
        let mut out = vec![0.0; product.len() / 2];
        parallel_rows(&product, &mut out, self.d_out, half, |src, dst| {
            let (hidden, gate) = src.split_at(half);
            for ((d, h), g) in dst.iter_mut().zip(hidden).zip(gate) {
                *d = h * gelu(*g);
            }
        });
        dims[D - 1] = half;
        Tensor::from_data(TensorData::new(out, dims), &device)
    }

    /// The product as row-major floats, and the input's dims.
    fn product<const D: usize>(&self, x: Tensor<D>) -> (Vec<f32>, [usize; D]) {
        let dims = x.dims();
        assert_eq!(
            dims[D - 1],
            self.d_in,
            "linear layer: input has {} features, the layer takes {}",
            dims[D - 1],
            self.d_in
        );
        let rows = dims[..D - 1].iter().product::<usize>();
        let input = x.into_data();
        let a = input
            .as_slice::<f32>()
            .expect("the sgemm path is taken only for f32 tensors");
        let (k, n) = (self.d_in, self.d_out);
        let mut out = match &self.bias {
            Some(b) => b.repeat(rows),
            None => vec![0.0; rows * n],
        };
        let beta = if self.bias.is_some() { 1.0 } else { 0.0 };
        if rows > 0 && n > 0 {
            // SAFETY: A is rows×k row-major (`a.len() == rows * k`, checked by the shape), B is
            // k×n row-major, C is rows×n row-major and exclusively ours; all three outlive the
            // call.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    self.weight_t.as_ptr(),
                    n as isize,
                    1,
                    beta,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
        (out, dims)
    }
}

/// A convolution's parameters on the CPU: `weight` is `[out, in, k, k]` row-major (PyTorch's), that
/// is the `out × (in·k·k)` left-hand side of the im2col product.
#[derive(Debug)]
pub struct CpuConv2d {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
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
        Ok(CpuConv2d {
            weight: floats(weight)?,
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
        let input = x.into_data();
        let input = input
            .as_slice::<f32>()
            .expect("the sgemm path is taken only for f32 tensors");
        let plane = ho * wo;
        let mut out = match &self.bias {
            Some(b) => b
                .iter()
                .flat_map(|v| std::iter::repeat_n(*v, plane))
                .collect::<Vec<f32>>()
                .repeat(batch),
            None => vec![0.0; batch * self.c_out * plane],
        };
        let beta = if self.bias.is_some() { 1.0 } else { 0.0 };
        let depth = c * k * k;
        let band = (COLUMN_TILE_FLOATS / (depth * wo).max(1)).clamp(1, ho.max(1));
        let mut columns = vec![0.0f32; depth * band * wo];
        for n in 0..batch {
            let image = &input[n * c * h * w..(n + 1) * c * h * w];
            for y0 in (0..ho).step_by(band) {
                let rows = band.min(ho - y0);
                let width = rows * wo;
                im2col(image, [c, h, w], [k, s, p], y0, rows, wo, &mut columns);
                let out_tile = &mut out[n * self.c_out * plane + y0 * wo..];
                // SAFETY: A is c_out×depth row-major (the weight), B is depth×width row-major
                // (`columns`, row stride `width`), C is c_out×width with row stride `plane`
                // inside `out_tile` (its last row ends at (c_out-1)·plane + width ≤ its length);
                // all outlive the call and C is exclusively ours.
                unsafe {
                    matrixmultiply::sgemm(
                        self.c_out,
                        depth,
                        width,
                        1.0,
                        self.weight.as_ptr(),
                        depth as isize,
                        1,
                        columns.as_ptr(),
                        width as isize,
                        1,
                        beta,
                        out_tile.as_mut_ptr(),
                        plane as isize,
                        1,
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
    for ci in 0..c {
        let channel = &image[ci * h * w..(ci + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = ((ci * k + ky) * k + kx) * width;
                let dst = &mut columns[row..row + width];
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
                        let last = (w as isize - shift).clamp(first as isize, wo as isize) as usize;
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
    }
}

/// `f(source row, destination row)` for every row, split across the cores when there is enough
/// work to pay for the threads.
fn parallel_rows(
    src: &[f32],
    dst: &mut [f32],
    src_width: usize,
    dst_width: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let rows = dst.len() / dst_width.max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = rows.div_ceil(threads).max(1);
    let run = |src: &[f32], dst: &mut [f32]| {
        for (s, d) in src
            .chunks_exact(src_width)
            .zip(dst.chunks_exact_mut(dst_width))
        {
            f(s, d);
        }
    };
    if threads == 1 || dst.len() < 1 << 16 {
        run(src, dst);
        return;
    }
    std::thread::scope(|scope| {
        for (s, d) in src
            .chunks(per_thread * src_width)
            .zip(dst.chunks_mut(per_thread * dst_width))
        {
            scope.spawn(|| run(s, d));
        }
    });
}

/// `torch.nn.functional.gelu` (exact form): `x/2 · (1 + erf(x/√2))`.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), the formula PyTorch's vectorised
/// CPU `erf` evaluates (ATen's `Vectorized<float>::erf`).
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    let y = 1.0 - poly * (-ax * ax).exp();
    y.copysign(x)
}

fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| format!("expected f32 weights: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::linear;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// The sgemm path against Burn's own `linear` on the same device, with and without bias, for
    /// a batch of 3-d inputs.
    #[test]
    fn sgemm_linear_matches_burn_linear() {
        let device = Device::flex();
        let (d_in, d_out) = (37, 29);
        let w = Tensor::<2>::from_data(
            TensorData::new(values(d_out * d_in, 1), [d_out, d_in]),
            &device,
        );
        let b = Tensor::<1>::from_data(TensorData::new(values(d_out, 2), [d_out]), &device);
        let x = Tensor::<3>::from_data(
            TensorData::new(values(2 * 5 * d_in, 3), [2, 5, d_in]),
            &device,
        );
        for bias in [Some(b.clone()), None] {
            let want = linear(x.clone(), w.clone().transpose(), bias.clone()).into_data();
            let cpu = CpuLinear::from_tensors(w.clone(), bias).unwrap();
            let got = cpu.forward(x.clone()).into_data();
            assert_eq!(got.shape(), want.shape());
            got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-5));
        }
    }

    /// The fused GEGLU against Burn's chunk + exact `gelu` on the same device.
    #[test]
    fn geglu_matches_burn() {
        let device = Device::flex();
        let (d_in, d_out) = (19, 2 * 300);
        let w = Tensor::<2>::from_data(
            TensorData::new(values(d_out * d_in, 4), [d_out, d_in]),
            &device,
        );
        let b = Tensor::<1>::from_data(TensorData::new(values(d_out, 5), [d_out]), &device);
        // Enough rows to take the threaded path.
        let x = Tensor::<3>::from_data(
            TensorData::new(values(2 * 120 * d_in, 6), [2, 120, d_in]),
            &device,
        );
        let h = linear(x.clone(), w.clone().transpose(), Some(b.clone()));
        let half = d_out / 2;
        let want = (h.clone().narrow(2, 0, half)
            * burn::tensor::activation::gelu(h.narrow(2, half, half)))
        .into_data();
        let got = CpuLinear::from_tensors(w, Some(b))
            .unwrap()
            .geglu(x)
            .into_data();
        assert_eq!(got.shape(), want.shape());
        // Burn evaluates erf differently: the two differ by the approximation's 1.5e-7, scaled by
        // |hidden · gate| / 2 (≤ 200 here).
        got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::rel_abs(1e-6, 3e-5));
    }

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
                got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::rel_abs(1e-5, 1e-5));
            }
        }
    }

    #[test]
    fn erf_is_within_its_bound() {
        for i in -400..=400 {
            let x = i as f64 / 100.0;
            let want = erf_f64(x);
            assert!(
                (erf(x as f32) as f64 - want).abs() < 3e-7,
                "erf({x}) = {} vs {want}",
                erf(x as f32)
            );
        }
        assert_eq!(gelu(0.0), 0.0);
        assert!(gelu(-10.0).abs() < 1e-6 && (gelu(10.0) - 10.0).abs() < 1e-5);
    }

    /// erf in f64 from its series (|x| < 3) and its asymptotic complement (|x| ≥ 3).
    fn erf_f64(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            // 1 - erfc, erfc(x) ~ e^{-x²}/(x√π) (1 - 1/(2x²) + 3/(4x⁴)): below 1e-5, far under f32.
            let a = x.abs();
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)));
            return (1.0 - erfc).copysign(x);
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }
}
