//! 4:2:0 YUV ↔ BGR, BT.601 limited range, as OpenCV's `VideoCapture` (FFmpeg's swscale)
//! converts H.264 frames: a model sees from our decoder the pixels it would see from
//! `cv2.VideoCapture`. Chroma is replicated over its 2×2 block on the way in and averaged over
//! it on the way out.

use crate::image_io::BgrImage;

/// A planar I420 picture: `width × height` luma, then the two `⌈w/2⌉ × ⌈h/2⌉` chroma planes.
#[derive(Clone, Debug, PartialEq)]
pub struct Yuv420 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Fixed-point BT.601 limited-range coefficients, scaled by 2^16 (swscale's values).
const SHIFT: i32 = 16;
const Y_GAIN: i32 = 76309; // 255/219
const V_TO_R: i32 = 104597; // 1.402 · 255/224
const U_TO_G: i32 = 25675; // 0.344 · 255/224
const V_TO_G: i32 = 53279; // 0.714 · 255/224
const U_TO_B: i32 = 132201; // 1.772 · 255/224

fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

impl Yuv420 {
    fn chroma_size(&self) -> (usize, usize) {
        (self.width.div_ceil(2), self.height.div_ceil(2))
    }

    /// Copies the three planes of a decoded picture (rows `stride` bytes apart).
    pub fn from_planes(
        (width, height): (usize, usize),
        (y, u, v): (&[u8], &[u8], &[u8]),
        (y_stride, u_stride, v_stride): (usize, usize, usize),
    ) -> Self {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        let mut data = Vec::with_capacity(width * height + 2 * cw * ch);
        for r in 0..height {
            data.extend_from_slice(&y[r * y_stride..r * y_stride + width]);
        }
        for (plane, stride) in [(u, u_stride), (v, v_stride)] {
            for r in 0..ch {
                data.extend_from_slice(&plane[r * stride..r * stride + cw]);
            }
        }
        Yuv420 { width, height, data }
    }

    /// The three planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (cw, ch) = self.chroma_size();
        let (y, uv) = self.data.split_at(self.width * self.height);
        let (u, v) = uv.split_at(cw * ch);
        (y, u, v)
    }

    /// To BGR, each chroma sample covering its 2×2 luma block.
    pub fn to_bgr(&self) -> BgrImage {
        let (w, h) = (self.width, self.height);
        let cw = self.chroma_size().0;
        let (yp, up, vp) = self.planes();
        let mut out = vec![0u8; w * h * 3];
        for (r, row) in out.chunks_exact_mut(w * 3).enumerate() {
            let (ys, cs) = (&yp[r * w..(r + 1) * w], (r / 2) * cw);
            for (c, px) in row.chunks_exact_mut(3).enumerate() {
                let y = (i32::from(ys[c]) - 16) * Y_GAIN + (1 << (SHIFT - 1));
                let u = i32::from(up[cs + c / 2]) - 128;
                let v = i32::from(vp[cs + c / 2]) - 128;
                px[0] = clamp_u8((y + U_TO_B * u) >> SHIFT);
                px[1] = clamp_u8((y - U_TO_G * u - V_TO_G * v) >> SHIFT);
                px[2] = clamp_u8((y + V_TO_R * v) >> SHIFT);
            }
        }
        BgrImage { width: w, height: h, data: out }
    }

    /// From BGR, padded to even sides by repeating the last column and row (H.264 4:2:0
    /// pictures have even sides); chroma is the mean of each 2×2 block.
    pub fn from_bgr(img: &BgrImage) -> Self {
        Self::from_interleaved(img.width, img.height, &img.data, [2, 1, 0])
    }

    /// [`Yuv420::from_bgr`] for an RGB image (what the drawing functions produce).
    pub fn from_rgb(img: &image::RgbImage) -> Self {
        Self::from_interleaved(img.width() as usize, img.height() as usize, img.as_raw(), [0, 1, 2])
    }

    /// From 3-byte pixels whose red, green and blue bytes are at `order`.
    fn from_interleaved(width: usize, height: usize, pixels: &[u8], [ri, gi, bi]: [usize; 3]) -> Self {
        let (w, h) = (width + width % 2, height + height % 2);
        let (cw, ch) = (w / 2, h / 2);
        let px = |r: usize, c: usize| {
            let i = (r.min(height - 1) * width + c.min(width - 1)) * 3;
            let p = &pixels[i..i + 3];
            (i32::from(p[ri]), i32::from(p[gi]), i32::from(p[bi]))
        };
        let mut data = vec![0u8; w * h + 2 * cw * ch];
        let (yp, uv) = data.split_at_mut(w * h);
        let (up, vp) = uv.split_at_mut(cw * ch);
        // BT.601 limited range, scaled by 2^16.
        for r in 0..h {
            for c in 0..w {
                let (red, green, blue) = px(r, c);
                yp[r * w + c] = clamp_u8(((16829 * red + 33039 * green + 6416 * blue + (1 << 15)) >> SHIFT) + 16);
            }
        }
        for r in 0..ch {
            for c in 0..cw {
                let (mut red, mut green, mut blue) = (0, 0, 0);
                for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (r1, g1, b1) = px(2 * r + dr, 2 * c + dc);
                    (red, green, blue) = (red + r1, green + g1, blue + b1);
                }
                // Sums of four pixels: the shift divides by 4 too.
                let u = -9714 * red - 19070 * green + 28784 * blue;
                let v = 28784 * red - 24103 * green - 4681 * blue;
                up[r * cw + c] = clamp_u8(((u + (1 << 17)) >> (SHIFT + 2)) + 128);
                vp[r * cw + c] = clamp_u8(((v + (1 << 17)) >> (SHIFT + 2)) + 128);
            }
        }
        Yuv420 { width: w, height: h, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grey levels and the primaries survive a round trip within the 4:2:0 rounding (flat
    /// colour, so chroma averaging loses nothing).
    #[test]
    fn flat_colours_round_trip() {
        for bgr in [[0u8, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0], [0, 255, 0], [0, 0, 255], [30, 200, 90]]
        {
            let img = BgrImage { width: 3, height: 3, data: bgr.repeat(9) };
            let yuv = Yuv420::from_bgr(&img);
            assert_eq!((yuv.width, yuv.height), (4, 4));
            let back = yuv.to_bgr();
            for (a, b) in back.data.iter().zip(bgr.iter().cycle()) {
                assert!((i32::from(*a) - i32::from(*b)).abs() <= 2, "{bgr:?} came back as {:?}", &back.data[..3]);
            }
        }
    }

    /// The limited range: black is Y 16 and white Y 235, neutral chroma 128.
    #[test]
    fn limited_range_levels() {
        let black = Yuv420::from_bgr(&BgrImage { width: 2, height: 2, data: vec![0; 12] });
        assert_eq!(black.data, [16, 16, 16, 16, 128, 128]);
        let white = Yuv420::from_bgr(&BgrImage { width: 2, height: 2, data: vec![255; 12] });
        assert_eq!(white.data, [235, 235, 235, 235, 128, 128]);
    }
}
