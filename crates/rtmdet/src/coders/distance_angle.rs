//! mmrotate's `DistanceAnglePointCoder` with angle version `le90` (RTMDet-R): distances
//! `(l, t, r, b)` measured in the frame rotated by the predicted angle `a` give the rotated
//! box `(cx, cy, w, h, θ)`.
//!
//! Decoding: `w = l + r`, `h = t + b`; the centre is the prior plus the rotated offset
//! `R(a)·((r − l)/2, (b − t)/2)` with `cos a` and `sin a` of the **unwrapped** angle; then
//! `θ = norm_angle(a)`. No clamping to the image and no w/h swap (reference quirk 1).

use burn::tensor::{Tensor, TensorData};

/// `(cx, cy, w, h, θ)`; becomes `structures::rotated::RBox`.
type RBox = [f32; 5];

/// π and π/2 as float32 (torch's constants in float32 ops).
const PI: f32 = std::f32::consts::PI;
const HALF_PI: f32 = std::f32::consts::FRAC_PI_2;

/// Python's float `%` as torch computes it: `fmod`, moved into `[0, m)` when negative.
#[inline]
fn torch_remainder(x: f32, m: f32) -> f32 {
    let r = x % m; // fmod
    if r != 0.0 && r < 0.0 { r + m } else { r }
}

/// `norm_angle(a, 'le90')` = `(a + π/2) % π − π/2`, into `[−π/2, π/2)` (quirk 2: the fmod
/// form; `a − π·floor(a/π)` differs in the last bits).
#[inline]
pub fn norm_angle(a: f32) -> f32 {
    torch_remainder(a + HALF_PI, PI) - HALF_PI
}

/// The rotated box of prior point `p`, distances `d = (l, t, r, b)` and raw angle `a`.
#[inline]
pub fn decode(p: [f32; 2], d: [f32; 4], a: f32) -> RBox {
    let (s, c) = a.sin_cos();
    let (w, h) = (d[0] + d[2], d[1] + d[3]);
    let (ox, oy) = ((d[2] - d[0]) / 2.0, (d[3] - d[1]) / 2.0);
    // [[c, −s], [s, c]] @ (ox, oy), as torch.matmul sums the two products.
    let cx = p[0] + (c * ox + -s * oy);
    let cy = p[1] + (s * ox + c * oy);
    [cx, cy, w, h, norm_angle(a)]
}

/// [`decode`] of many priors on burn tensors, differentiable in the distances and the angle:
/// `points` `[P, 2]`, distances `[N, P, 4]` and raw angles `[N, P, 1]` → boxes `[N, P, 5]`.
/// The same float operations in the same order as [`decode`] (torch's `%` is burn's
/// `remainder` on the CPU backend), so only `sin`/`cos` may differ from it, by an ulp. The
/// wrap of θ has gradient 1, as torch's `%`: the loss sees the angle mmrotate decodes.
pub fn decode_tensor(points: &[[f32; 2]], distances: Tensor<3>, angles: Tensor<3>) -> Tensor<3> {
    let device = distances.device();
    let [n, p, _] = distances.dims();
    let col = |i: usize| distances.clone().narrow(2, i, 1);
    let (l, t, r, b) = (col(0), col(1), col(2), col(3));
    let (w, h) = (l.clone() + r.clone(), t.clone() + b.clone());
    let (ox, oy) = ((r - l).div_scalar(2.0), (b - t).div_scalar(2.0));
    let (cos, sin) = (angles.clone().cos(), angles.clone().sin());
    let prior = |k: usize| {
        let v: Vec<f32> = points.iter().map(|q| q[k]).collect();
        Tensor::<3>::from_data(TensorData::new(v, [1, p, 1]), &device).expand([n, p, 1])
    };
    let cx = prior(0) + (cos.clone() * ox.clone() + sin.clone().neg() * oy.clone());
    let cy = prior(1) + (sin * ox + cos * oy);
    let theta = (angles + HALF_PI).remainder_scalar(PI) - HALF_PI;
    Tensor::cat(vec![cx, cy, w, h, theta], 2)
}

/// The distances and angle of rotated box `b` seen from point `p` (the inverse of
/// [`decode`] for a box whose angle is already in le90 range).
pub fn encode(p: [f32; 2], b: &RBox) -> ([f32; 4], f32) {
    let (s, c) = b[4].sin_cos();
    // Offset of the centre from the point, in the box frame: R(−θ)·(cx − px, cy − py).
    let (dx, dy) = (b[0] - p[0], b[1] - p[1]);
    let (ox, oy) = (c * dx + s * dy, -s * dx + c * dy);
    let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
    ([hw - ox, hh - oy, hw + ox, hh + oy], b[4])
}

/// mmrotate `regularize_boxes(pattern='le90')` for training targets: `w ≥ h` (swap and add
/// π/2 to θ when `w ≤ h`), then θ wrapped into `[−π/2, π/2)` (quirk 5).
pub fn regularize_le90(b: &RBox) -> RBox {
    let [cx, cy, w, h, t] = *b;
    let (w, h, t) = if w > h { (w, h, t) } else { (h, w, t + HALF_PI) };
    [cx, cy, w, h, norm_angle(t)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_angle_wraps_into_le90_range() {
        for a in [-10.0f32, -HALF_PI, -1.0, 0.0, 1.0, HALF_PI, 3.0, 9.5] {
            let t = norm_angle(a);
            assert!((-HALF_PI..HALF_PI).contains(&t), "{a} → {t}");
            // The same direction modulo π.
            assert!(((a - t) / PI - ((a - t) / PI).round()).abs() < 1e-5, "{a} → {t}");
        }
        assert_eq!(norm_angle(HALF_PI), -HALF_PI);
    }

    #[test]
    fn decode_inverts_encode() {
        let p = [100.0, 50.0];
        let b: RBox = [110.0, 40.0, 30.0, 12.0, 0.4];
        let (d, a) = encode(p, &b);
        let back = decode(p, d, a);
        for (x, y) in back.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "{back:?} vs {b:?}");
        }
        // Axis-aligned: the detection decoder's box.
        let r = decode([8.0, 8.0], [2.0, 3.0, 4.0, 5.0], 0.0);
        assert_eq!(r, [9.0, 9.0, 6.0, 8.0, 0.0]);
    }

    #[test]
    fn tensor_decode_matches_the_host_decode() {
        let device = burn::tensor::Device::flex();
        let points = [[0.0f32, 8.0], [16.0, 24.0], [512.0, 1000.0]];
        let d = [0.1f32, 0.7, 3.3, 1e-3, 5.5, 0.25, 7.125, 1.0 / 3.0, -12.0, 40.5, 300.25, 7.0];
        let a = [0.3f32, -2.9, 8.7];
        let dt = Tensor::<3>::from_data(TensorData::new(d.to_vec(), [1, 3, 4]), &device);
        let at = Tensor::<3>::from_data(TensorData::new(a.to_vec(), [1, 3, 1]), &device);
        let got = crate::model::params::to_vec(&decode_tensor(&points, dt, at));
        for (i, p) in points.iter().enumerate() {
            let want = decode(*p, d[i * 4..i * 4 + 4].try_into().unwrap(), a[i]);
            // w, h and the wrapped angle are bit-equal; the centre may move by sin/cos ulps.
            assert_eq!(got[i * 5 + 2..i * 5 + 5], want[2..], "prior {i}");
            for c in 0..2 {
                assert!((got[i * 5 + c] - want[c]).abs() <= 1e-4, "prior {i}: {:?} vs {want:?}", &got[i * 5..]);
            }
        }
    }

    #[test]
    fn regularize_makes_w_the_long_side() {
        let r = regularize_le90(&[0.0, 0.0, 2.0, 5.0, 0.3]);
        assert_eq!((r[2], r[3]), (5.0, 2.0));
        assert!((r[4] - norm_angle(0.3 + HALF_PI)).abs() == 0.0);
        // Already w > h: only the angle is wrapped (which may move it by an ulp).
        assert_eq!(regularize_le90(&[0.0, 0.0, 5.0, 2.0, 0.3]), [0.0, 0.0, 5.0, 2.0, norm_angle(0.3)]);
    }
}
