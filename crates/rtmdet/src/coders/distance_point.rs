//! mmdet's `DistancePointBBoxCoder` (RTMDet, RTMDet-Ins): a box is the prior point `(px, py)`
//! and its distances `(l, t, r, b)` to the four sides: `(px − l, py − t, px + r, py + b)`.
//! The head predicts distances in units of the level's stride, optionally through `exp`.

use burn::tensor::{Tensor, TensorData};

use crate::structures::Bbox;

/// Raw `rtm_reg` output → distance in input pixels: `raw·stride`, or `exp(raw)·stride` for
/// the sizes trained with `exp_on_reg` (m, l, x).
#[inline]
pub fn distance_from_raw(raw: f32, stride: f32, exp_on_reg: bool) -> f32 {
    if exp_on_reg { raw.exp() * stride } else { raw * stride }
}

/// [`distance_from_raw`] on a burn tensor (training keeps the gradient).
pub fn distance_from_raw_tensor(raw: Tensor<4>, stride: usize, exp_on_reg: bool) -> Tensor<4> {
    let scaled = if exp_on_reg { raw.exp() } else { raw };
    scaled.mul_scalar(stride as f32)
}

/// The box of prior point `p` and distances `d = (l, t, r, b)`. With `clip = (h, w)` each
/// coordinate is clamped to `[0, w] × [0, h]` (mmdet clamps to the padded input; mmdeploy
/// graphs do not).
#[inline]
pub fn decode(p: [f32; 2], d: [f32; 4], clip: Option<(f32, f32)>) -> Bbox {
    let b = [p[0] - d[0], p[1] - d[1], p[0] + d[2], p[1] + d[3]];
    match clip {
        Some((h, w)) => [b[0].clamp(0.0, w), b[1].clamp(0.0, h), b[2].clamp(0.0, w), b[3].clamp(0.0, h)],
        None => b,
    }
}

/// The distances of `bbox` from point `p` (mmdet `bbox2distance`), each clamped to
/// `[0, max_dis − eps]` when `max_dis` is given.
pub fn encode(p: [f32; 2], bbox: &Bbox, max_dis: Option<f32>, eps: f32) -> [f32; 4] {
    let d = [p[0] - bbox[0], p[1] - bbox[1], bbox[2] - p[0], bbox[3] - p[1]];
    match max_dis {
        Some(m) => d.map(|v| v.clamp(0.0, m - eps)),
        None => d,
    }
}

/// Unclamped boxes of many priors on burn tensors: `points` `[P, 2]` (x, y) and distances
/// `[N, P, 4]` → boxes `[N, P, 4]`, computed as `d·(−1, −1, 1, 1) + (px, py, px, py)`, which is
/// bit-identical to [`decode`] and differentiable in `d`.
pub fn decode_tensor(points: &[[f32; 2]], distances: Tensor<3>) -> Tensor<3> {
    let device = distances.device();
    let p = points.len();
    let base: Vec<f32> = points.iter().flat_map(|q| [q[0], q[1], q[0], q[1]]).collect();
    let sign = Tensor::<1>::from_data(TensorData::new(vec![-1f32, -1.0, 1.0, 1.0], [4]), &device).reshape([1, 1, 4]);
    let base = Tensor::<2>::from_data(TensorData::new(base, [p, 4]), &device).reshape([1, p, 4]);
    distances * sign + base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_inverts_encode_and_clamps() {
        let p = [16.0, 8.0];
        let b = [10.0, 2.0, 30.0, 20.0];
        let d = encode(p, &b, None, 0.0);
        assert_eq!(d, [6.0, 6.0, 14.0, 12.0]);
        assert_eq!(decode(p, d, None), b);
        assert_eq!(decode(p, d, Some((15.0, 25.0))), [10.0, 2.0, 25.0, 15.0]);
        assert_eq!(encode(p, &[20.0, 2.0, 30.0, 20.0], Some(10.0), 0.01), [0.0, 6.0, 9.99, 9.99]);
        assert_eq!(distance_from_raw(2.0, 8.0, false), 16.0);
        assert_eq!(distance_from_raw(0.0, 8.0, true), 8.0);
    }

    #[test]
    fn tensor_decode_is_bit_identical() {
        let device = burn::tensor::Device::flex();
        let points = [[0.0f32, 8.0], [16.0, 24.0]];
        let d = [0.1f32, 0.7, 3.3, 1e-3, 5.5, 0.25, 7.125, 1.0 / 3.0];
        let t = Tensor::<3>::from_data(TensorData::new(d.to_vec(), [1, 2, 4]), &device);
        let got = crate::model::params::to_vec(&decode_tensor(&points, t));
        for (i, p) in points.iter().enumerate() {
            let want = decode(*p, d[i * 4..i * 4 + 4].try_into().unwrap(), None);
            assert_eq!(&got[i * 4..i * 4 + 4], &want);
        }
    }
}
