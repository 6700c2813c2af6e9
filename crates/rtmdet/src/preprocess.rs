//! The test pipeline of mmdetection (spec §8.1): keep-ratio resize with OpenCV's fixed-point
//! `INTER_LINEAR`, reproduced bit-exactly, pad 114 at the bottom/right, then BGR
//! `(x - mean) / std`.

use crate::image_io::BgrImage;

pub const MEAN_BGR: [f32; 3] = [103.53, 116.28, 123.675];
pub const STD_BGR: [f32; 3] = [57.375, 57.12, 58.395];
pub const PAD_VALUE: u8 = 114;

/// Where an image went inside the network input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    pub ori_w: usize,
    pub ori_h: usize,
    pub resized_w: usize,
    pub resized_h: usize,
    /// Padded (network input) side.
    pub size: usize,
    /// `(resized_w / ori_w, resized_h / ori_h)` in float64, as mmdet stores it.
    pub scale_factor: (f64, f64),
}

impl Letterbox {
    /// mmcv's `imrescale` to fit `size`×`size`: `s = size / max(h, w)`,
    /// new size `int(w*s + 0.5) x int(h*s + 0.5)`.
    pub fn fit(ori_w: usize, ori_h: usize, size: usize) -> Self {
        let s = (size as f64 / ori_h as f64).min(size as f64 / ori_w as f64);
        let resized_w = ((ori_w as f64 * s + 0.5) as usize).clamp(1, size);
        let resized_h = ((ori_h as f64 * s + 0.5) as usize).clamp(1, size);
        Letterbox {
            ori_w,
            ori_h,
            resized_w,
            resized_h,
            size,
            scale_factor: (resized_w as f64 / ori_w as f64, resized_h as f64 / ori_h as f64),
        }
    }
}

/// Source index and the two 11-bit weights of each destination pixel along one axis.
fn linear_coeffs(dst: usize, src: usize, clamp_border: bool) -> Vec<(isize, [i32; 2])> {
    // OpenCV computes scale = 1 / (dst / src) in double, then each position in float.
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as isize;
            f -= s as f32;
            // Only the horizontal pass snaps out-of-range positions to the border.
            if clamp_border {
                if s < 0 {
                    f = 0.0;
                    s = 0;
                }
                if s >= src as isize - 1 {
                    f = 0.0;
                    s = src as isize - 1;
                }
            }
            let a0 = ((1.0f32 - f) * 2048.0).round_ties_even() as i32;
            let a1 = (f * 2048.0).round_ties_even() as i32;
            (s, [a0, a1])
        })
        .collect()
}

/// `cv2.resize(src, (dst_w, dst_h), interpolation=INTER_LINEAR)` for 3-channel uint8,
/// bit-exact with OpenCV's fixed-point path (11-bit weights, and the vectorised vertical
/// pass that truncates `(row >> 4) * beta >> 16` before rounding by 2 bits).
pub fn resize_linear(img: &BgrImage, dst_w: usize, dst_h: usize) -> BgrImage {
    const C: usize = 3;
    if dst_w == img.width && dst_h == img.height {
        return img.clone();
    }
    let xs = linear_coeffs(dst_w, img.width, true);
    let ys = linear_coeffs(dst_h, img.height, false);
    let last_x = img.width - 1;
    let hrow = |y: usize, out: &mut [i32]| {
        let row = &img.data[y * img.width * C..(y + 1) * img.width * C];
        for (dx, &(sx, [a0, a1])) in xs.iter().enumerate() {
            let x0 = sx as usize;
            let x1 = (x0 + 1).min(last_x);
            for k in 0..C {
                out[dx * C + k] = row[x0 * C + k] as i32 * a0 + row[x1 * C + k] as i32 * a1;
            }
        }
    };
    let mut s0 = vec![0i32; dst_w * C];
    let mut s1 = vec![0i32; dst_w * C];
    let mut data = vec![0u8; dst_w * dst_h * C];
    let clamp_y = |y: isize| y.clamp(0, img.height as isize - 1) as usize;
    for (dy, &(sy, [b0, b1])) in ys.iter().enumerate() {
        hrow(clamp_y(sy), &mut s0);
        hrow(clamp_y(sy + 1), &mut s1);
        let out = &mut data[dy * dst_w * C..(dy + 1) * dst_w * C];
        for ((o, &v0), &v1) in out.iter_mut().zip(&s0).zip(&s1) {
            let v = (((v0 >> 4) * b0) >> 16) + (((v1 >> 4) * b1) >> 16);
            *o = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    BgrImage { width: dst_w, height: dst_h, data }
}

/// Resizes (keep ratio) and pads an image to `size`×`size`; returns the padded BGR image.
pub fn letterbox(img: &BgrImage, size: usize) -> (BgrImage, Letterbox) {
    let lb = Letterbox::fit(img.width, img.height, size);
    let resized = resize_linear(img, lb.resized_w, lb.resized_h);
    let mut data = vec![PAD_VALUE; size * size * 3];
    for y in 0..lb.resized_h {
        let src = &resized.data[y * lb.resized_w * 3..(y + 1) * lb.resized_w * 3];
        data[y * size * 3..y * size * 3 + src.len()].copy_from_slice(src);
    }
    (BgrImage { width: size, height: size, data }, lb)
}

/// HWC BGR uint8 → CHW float32 `(x - mean) / std`, appended to `out`.
pub fn normalize_into(img: &BgrImage, out: &mut Vec<f32>) {
    let plane = img.width * img.height;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let dst = &mut out[start..];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            dst[c * plane + i] = (px[c] as f32 - MEAN_BGR[c]) / STD_BGR[c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize, f: impl Fn(usize) -> u8) -> BgrImage {
        BgrImage::new(w, h, (0..w * h * 3).map(f).collect()).unwrap()
    }

    #[test]
    fn known_opencv_outputs() {
        // cv2.resize of a 1x4 ramp to 7 columns: [0, 36, 93, 150, 204, 235, 255]
        let src = [0u8, 100, 200, 255];
        let im = img(4, 1, |i| src[i / 3]);
        let out = resize_linear(&im, 7, 1);
        let got: Vec<u8> = out.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(got, vec![0, 36, 93, 150, 204, 235, 255]);
        // A single bright pixel at column 10 of 20, to 13 columns: 128 at column 6.
        let im = img(20, 1, |i| if i / 3 == 10 { 255 } else { 0 });
        let got: Vec<u8> = resize_linear(&im, 13, 1).data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(got, vec![0, 0, 0, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn vertical_pass_uses_the_truncating_vector_formula() {
        // cv2.resize of [[0,0,0,0],[0,255,0,0]] to 7x3 (checked against OpenCV).
        let rows = [[0u8, 0, 0, 0], [0, 255, 0, 0]];
        let im = img(4, 2, |i| rows[i / 12][(i / 3) % 4]);
        let got: Vec<Vec<u8>> =
            resize_linear(&im, 7, 3).data.chunks(21).map(|r| r.chunks(3).map(|p| p[0]).collect()).collect();
        assert_eq!(got, vec![vec![0, 0, 0, 0, 0, 0, 0], vec![0, 46, 118, 64, 0, 0, 0], vec![0, 91, 237, 127, 0, 0, 0]]);
    }

    #[test]
    fn letterbox_geometry() {
        let lb = Letterbox::fit(1024, 707, 640);
        assert_eq!((lb.resized_w, lb.resized_h), (640, 442));
        assert_eq!(lb.scale_factor, (0.625, 442.0 / 707.0));
        let lb = Letterbox::fit(381, 500, 640);
        assert_eq!((lb.resized_w, lb.resized_h), (488, 640));
        let lb = Letterbox::fit(1, 5000, 640);
        assert_eq!((lb.resized_w, lb.resized_h), (1, 640));
    }
}
