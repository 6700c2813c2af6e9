//! mmrotate's `DistanceAnglePointCoder` with angle version `le90` (RTMDet-R): distances
//! `(l, t, r, b)` measured in the frame rotated by the predicted angle `a` give the rotated
//! box `(cx, cy, w, h, θ)`.
//!
//! Decoding: `w = l + r`, `h = t + b`; the centre is the prior plus the rotated offset
//! `R(a)·((r − l)/2, (b − t)/2)` with `cos a` and `sin a` of the **unwrapped** angle; then
//! `θ = norm_angle(a)`. No clamping to the image and no w/h swap (reference quirk 1).

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
    fn regularize_makes_w_the_long_side() {
        let r = regularize_le90(&[0.0, 0.0, 2.0, 5.0, 0.3]);
        assert_eq!((r[2], r[3]), (5.0, 2.0));
        assert!((r[4] - norm_angle(0.3 + HALF_PI)).abs() == 0.0);
        // Already w > h: only the angle is wrapped (which may move it by an ulp).
        assert_eq!(regularize_le90(&[0.0, 0.0, 5.0, 2.0, 0.3]), [0.0, 0.0, 5.0, 2.0, norm_angle(0.3)]);
    }
}
