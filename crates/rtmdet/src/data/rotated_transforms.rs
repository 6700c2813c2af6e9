//! Training augmentations of RTMDet-R (spec §11.5, mmrotate's `dota_rr` pipeline) on BGR
//! images with rotated boxes: keep-ratio resize, flip (horizontal, vertical or diagonal),
//! rotation about the image centre, pad. The box geometry follows mmrotate's `RotatedBoxes`
//! (`rescale_`, `flip_`, `rotate_`), so every transform moves a box's corners exactly where
//! it moves the image content.

use rand::RngExt;

use super::transforms::{Rng, Sample, pad_image};
use crate::preprocess::{Letterbox, resize_linear};
use crate::structures::rotated::{self, RBox};

/// An image with its rotated objects, `(cx, cy, w, h, θ)` in image pixels and radians.
pub type RotatedSample = Sample<RBox>;

/// mmcv's keep-ratio `Resize` to fit `size`×`size` (the test pipeline's geometry), with the
/// boxes rescaled as `RotatedBoxes.rescale_` does (which moves them by an ulp even at scale 1).
pub fn resize_keep_ratio(s: &RotatedSample, size: usize) -> RotatedSample {
    let lb = Letterbox::fit(s.image.width, s.image.height, size);
    let (sx, sy) = (lb.scale_factor.0 as f32, lb.scale_factor.1 as f32);
    let image = if (lb.resized_w, lb.resized_h) == (s.image.width, s.image.height) {
        s.image.clone()
    } else {
        resize_linear(&s.image, lb.resized_w, lb.resized_h)
    };
    RotatedSample {
        image,
        boxes: s.boxes.iter().map(|r| rotated::rescale(r, sx, sy)).collect(),
        labels: s.labels.clone(),
    }
}

/// mmcv `RandomFlip` directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flip {
    Horizontal,
    Vertical,
    /// Both axes (a rotation by 180°).
    Diagonal,
}

/// Flips image and boxes (`RotatedBoxes.flip_`: a mirrored axis maps `c → size − c` and
/// negates the angle; the diagonal flip keeps it).
pub fn flip(s: &mut RotatedSample, dir: Flip) {
    let (w, h) = (s.image.width, s.image.height);
    let (fx, fy) = (dir != Flip::Vertical, dir != Flip::Horizontal);
    let src = s.image.data.clone();
    for y in 0..h {
        let sy = if fy { h - 1 - y } else { y };
        for x in 0..w {
            let sx = if fx { w - 1 - x } else { x };
            s.image.data[(y * w + x) * 3..(y * w + x) * 3 + 3]
                .copy_from_slice(&src[(sy * w + sx) * 3..(sy * w + sx) * 3 + 3]);
        }
    }
    for r in &mut s.boxes {
        if fx {
            r[0] = w as f32 - r[0];
        }
        if fy {
            r[1] = h as f32 - r[1];
        }
        if dir != Flip::Diagonal {
            r[4] = -r[4];
        }
    }
}

/// Rotates image and boxes by `degrees` clockwise on screen about `((w−1)/2, (h−1)/2)`, as
/// mmrotate's `Rotate` (mmcv `imrotate`, bilinear, border 0, same size; the boxes through
/// `RotatedBoxes.rotate_`: centres by the same affine map, `θ += degrees`). Objects whose
/// centre leaves the image are dropped: no prior could be assigned to them.
pub fn rotate(s: &mut RotatedSample, degrees: f64) {
    let (w, h) = (s.image.width, s.image.height);
    let (cx, cy) = ((w as f64 - 1.0) * 0.5, (h as f64 - 1.0) * 0.5);
    let (sin, cos) = degrees.to_radians().sin_cos();
    // Output pixel p comes from R(−θ)(p − c) + c.
    let src = &s.image.data;
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let (u, v) = (cos * dx + sin * dy + cx, -sin * dx + cos * dy + cy);
            let (u0, v0) = (u.floor(), v.floor());
            let (fu, fv) = (u - u0, v - v0);
            let px = |xx: f64, yy: f64, c: usize| -> f64 {
                if xx < 0.0 || yy < 0.0 || xx >= w as f64 || yy >= h as f64 {
                    0.0
                } else {
                    src[((yy as usize) * w + xx as usize) * 3 + c] as f64
                }
            };
            for c in 0..3 {
                let top = px(u0, v0, c) * (1.0 - fu) + px(u0 + 1.0, v0, c) * fu;
                let bottom = px(u0, v0 + 1.0, c) * (1.0 - fu) + px(u0 + 1.0, v0 + 1.0, c) * fu;
                out[(y * w + x) * 3 + c] = (top * (1.0 - fv) + bottom * fv).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    s.image.data = out;
    let t = degrees.to_radians() as f32;
    for r in &mut s.boxes {
        let (dx, dy) = (r[0] as f64 - cx, r[1] as f64 - cy);
        r[0] = (cos * dx - sin * dy + cx) as f32;
        r[1] = (sin * dx + cos * dy + cy) as f32;
        r[4] += t;
    }
    let keep: Vec<bool> =
        s.boxes.iter().map(|r| r[0] >= 0.0 && r[1] >= 0.0 && r[0] < w as f32 && r[1] < h as f32).collect();
    let mut k = keep.iter();
    s.boxes.retain(|_| *k.next().expect("one flag per box"));
    let mut k = keep.iter();
    s.labels.retain(|_| *k.next().expect("one flag per box"));
}

/// mmrotate's `RandomRotate(prob, angle_range, rect_obj_labels)`: with probability `prob`
/// rotate by U(−range, range) degrees, or by one of ±90°, ±180° when an object of a
/// `rect_classes` class (storage tanks and roundabouts in DOTA, whose boxes are not
/// orientation-defined) is present. Returns the angle used, if any.
pub fn random_rotate(
    s: &mut RotatedSample,
    prob: f64,
    range: f64,
    rect_classes: &[usize],
    rng: &mut Rng,
) -> Option<f64> {
    if rng.random::<f64>() >= prob {
        return None;
    }
    let mut angle = range * (2.0 * rng.random::<f64>() - 1.0);
    if s.labels.iter().any(|l| rect_classes.contains(l)) {
        angle = [90.0, 180.0, -90.0, -180.0][rng.random_range(0..4)];
    }
    rotate(s, angle);
    Some(angle)
}

/// mmcv `RandomFlip(prob, direction=[h, v, d])`: flips with probability `prob`, the
/// direction chosen uniformly.
pub fn random_flip(s: &mut RotatedSample, prob: f64, rng: &mut Rng) -> Option<Flip> {
    if rng.random::<f64>() >= prob {
        return None;
    }
    let dir = [Flip::Horizontal, Flip::Vertical, Flip::Diagonal][rng.random_range(0..3)];
    flip(s, dir);
    Some(dir)
}

/// Pads bottom/right with 114 up to `size`×`size`.
pub fn pad(s: &mut RotatedSample, size: usize) {
    s.image = pad_image(&s.image, size);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::BgrImage;
    use crate::structures::rotated::corners;

    fn sample(w: usize, h: usize, rboxes: Vec<RBox>) -> RotatedSample {
        let data = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let labels = vec![0; rboxes.len()];
        RotatedSample { image: BgrImage { width: w, height: h, data }, boxes: rboxes, labels }
    }

    /// The corners of the transformed box are the transformed corners (as a set: a transform
    /// may start the corner list elsewhere).
    fn assert_corners(after: &RBox, expected: &[[f32; 2]; 4], tol: f32) {
        let got = corners(after);
        for e in expected {
            let best = got.iter().map(|g| (g[0] - e[0]).abs().max((g[1] - e[1]).abs())).fold(f32::INFINITY, f32::min);
            assert!(best <= tol, "corner {e:?} not among {got:?}");
        }
    }

    #[test]
    fn flips_map_corners_exactly() {
        let r = [30.0, 20.0, 24.0, 10.0, 0.4];
        for dir in [Flip::Horizontal, Flip::Vertical, Flip::Diagonal] {
            let mut s = sample(100, 60, vec![r]);
            flip(&mut s, dir);
            let map = |p: [f32; 2]| match dir {
                Flip::Horizontal => [100.0 - p[0], p[1]],
                Flip::Vertical => [p[0], 60.0 - p[1]],
                Flip::Diagonal => [100.0 - p[0], 60.0 - p[1]],
            };
            assert_corners(&s.boxes[0], &corners(&r).map(map), 1e-4);
        }
        // A flipped image is the mirror of the original pixel for pixel.
        let s0 = sample(5, 3, vec![]);
        let mut s = s0.clone();
        flip(&mut s, Flip::Horizontal);
        assert_eq!(s.image.data[..3], s0.image.data[4 * 3..5 * 3]);
    }

    #[test]
    fn rotation_maps_corners_and_content() {
        let r = [40.0, 30.0, 20.0, 8.0, -0.3];
        let mut s = sample(101, 81, vec![r]);
        let (cx, cy) = (50.0f64, 40.0f64);
        rotate(&mut s, 30.0);
        let (sin, cos) = 30f64.to_radians().sin_cos();
        let map = |p: [f32; 2]| {
            let (dx, dy) = (p[0] as f64 - cx, p[1] as f64 - cy);
            [(cos * dx - sin * dy + cx) as f32, (sin * dx + cos * dy + cy) as f32]
        };
        assert_corners(&s.boxes[0], &corners(&r).map(map), 1e-3);
        // 90° on a square image moves pixel (x, y) to (c − (y − c), c + (x − c)) exactly.
        let s0 = sample(9, 9, vec![]);
        let mut s = s0.clone();
        rotate(&mut s, 90.0);
        let at = |img: &BgrImage, x: usize, y: usize| img.data[(y * 9 + x) * 3];
        assert_eq!(at(&s.image, 8 - 2, 1), at(&s0.image, 1, 2));
    }

    #[test]
    fn objects_rotated_out_of_the_image_are_dropped() {
        let mut s = sample(100, 20, vec![[95.0, 10.0, 4.0, 4.0, 0.0], [50.0, 10.0, 4.0, 4.0, 0.0]]);
        rotate(&mut s, 90.0);
        assert_eq!(s.boxes.len(), 1);
        assert_eq!(s.labels.len(), 1);
    }

    #[test]
    fn resize_rescales_boxes_as_mmrotate() {
        let s = sample(2048, 1024, vec![[100.0, 50.0, 40.0, 20.0, 0.5]]);
        let r = resize_keep_ratio(&s, 1024);
        assert_eq!((r.image.width, r.image.height), (1024, 512));
        assert_eq!(r.boxes[0], rotated::rescale(&s.boxes[0], 0.5, 0.5));
        assert!((r.boxes[0][0] - 50.0).abs() < 1e-5 && (r.boxes[0][2] - 20.0).abs() < 1e-4);
    }
}
