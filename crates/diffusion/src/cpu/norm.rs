//! GroupNorm, and the SiLU that follows it in every ResNet block, in two passes over the data.
//!
//! Through Burn's ops a group norm is a reshape, a variance and mean, a subtraction, a division, a
//! square root, a scale and a shift — each a pass over tensors of 32 MiB at the VAE's 512×512
//! layers — and the SiLU two more. Here: one pass for each group's statistics, one that writes
//! `silu((x − mean)·scale + β)` in place, the groups spread over the cores.

use burn::tensor::{Tensor, TensorData};

use super::{activations, parallel_chunks, silu};

/// Floats summed in f32 (eight lanes, which vectorise) before they are added into the f64 total:
/// short enough that f32 loses nothing that matters, long enough to amortise the widening.
const BLOCK: usize = 1024;

/// `torch.nn.functional.group_norm(x, groups, gamma, beta, eps)` on `[batch, channels, h, w]`,
/// then SiLU when `silu` is set. Statistics as PyTorch takes them: biased variance, over each
/// group's `channels / groups · h · w` values, accumulated in double precision here.
pub fn group_norm(
    x: Tensor<4>,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    silu_after: bool,
) -> Tensor<4> {
    let device = x.device();
    let dims = x.dims();
    let [_, c, h, w] = dims;
    assert!(
        groups > 0 && c % groups == 0 && gamma.len() == c && beta.len() == c,
        "group norm: {c} channels, {groups} groups, {} scales, {} shifts",
        gamma.len(),
        beta.len()
    );
    let per_group = c / groups;
    let plane = h * w;
    let mut data = activations(x);
    if plane == 0 {
        return Tensor::from_data(TensorData::new(data, dims), &device);
    }
    parallel_chunks(&mut data, per_group * plane, |i, values| {
        let (mean, var) = moments(values);
        let rstd = 1.0 / (var + eps).sqrt();
        let first = (i % groups) * per_group;
        for (ch, values) in (first..).zip(values.chunks_exact_mut(plane)) {
            // (x - mean)·scale + beta rather than x·scale + (beta - mean·scale): the latter
            // cancels catastrophically when the spread is small against the mean.
            let (m, scale, shift) = (mean as f32, (rstd * gamma[ch] as f64) as f32, beta[ch]);
            if silu_after {
                values
                    .iter_mut()
                    .for_each(|v| *v = silu((*v - m) * scale + shift));
            } else {
                values
                    .iter_mut()
                    .for_each(|v| *v = (*v - m) * scale + shift);
            }
        }
    });
    Tensor::from_data(TensorData::new(data, dims), &device)
}

/// Mean and biased variance of `values`, in two passes (the second over deviations from the
/// mean, so no cancellation).
fn moments(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = blocked_sum(values, |v| v) / n;
    let m = mean as f32;
    let var = blocked_sum(values, |v| (v - m) * (v - m)) / n;
    (mean, var)
}

fn blocked_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in values.chunks(BLOCK) {
        let mut lanes = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        for eight in &mut it {
            for (l, v) in lanes.iter_mut().zip(eight) {
                *l += f(*v);
            }
        }
        let tail: f32 = it.remainder().iter().map(|v| f(*v)).sum();
        total += lanes.iter().map(|l| *l as f64).sum::<f64>() + tail as f64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tests::values;
    use burn::tensor::{Device, activation};

    /// Against the same formula in Burn's ops (the model's path on every other device), for small
    /// and threaded sizes, one and several channels per group, one value per group (variance 0:
    /// the output is beta), with and without the SiLU. The input is offset by 50 so that a
    /// variance taken as E[x²] - E[x]², or a shift folded into the scale, would lose digits.
    #[test]
    fn group_norm_matches_burn_ops() {
        let device = Device::flex();
        for (b, c, h, w, groups) in [(2, 6, 3, 5, 3), (1, 64, 40, 40, 32), (2, 8, 1, 1, 8)] {
            let x = Tensor::<4>::from_data(
                TensorData::new(values(b * c * h * w, 11), [b, c, h, w]),
                &device,
            ) + 50.0;
            let gamma = values(c, 12);
            let beta = values(c, 13);
            let g = Tensor::<1>::from_data(TensorData::new(gamma.clone(), [c]), &device);
            let bt = Tensor::<1>::from_data(TensorData::new(beta.clone(), [c]), &device);
            let grouped = x.clone().reshape([b, groups, (c / groups) * h * w]);
            let (var, mean) = grouped.clone().var_mean_bias(2);
            let want = ((grouped - mean) / (var + 1e-5).sqrt()).reshape([b, c, h, w])
                * g.reshape([1, c, 1, 1])
                + bt.reshape([1, c, 1, 1]);
            for silu_after in [false, true] {
                let want = if silu_after {
                    activation::silu(want.clone())
                } else {
                    want.clone()
                };
                let got = group_norm(x.clone(), groups, &gamma, &beta, 1e-5, silu_after);
                assert_eq!(got.dims(), [b, c, h, w]);
                got.into_data().assert_approx_eq::<f32>(
                    &want.into_data(),
                    burn::tensor::Tolerance::absolute(5e-5),
                );
            }
        }
    }
}
