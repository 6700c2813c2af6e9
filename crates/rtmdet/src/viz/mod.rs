//! Drawing: [`plots`] for metrics; here, class-coloured boxes with a filled label tag whose text colour is
//! chosen for contrast, so labels stay readable on any background.

pub mod plots;

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_line_segment_mut};
use imageproc::rect::Rect;

use crate::structures::Instances;
use crate::structures::rotated::corners;

/// Ultralytics' palette (hex), cycled by class index.
const PALETTE: [u32; 20] = [
    0xFF3838, 0xFF9D97, 0xFF701F, 0xFFB21D, 0xCFD231, 0x48F90A, 0x92CC17, 0x3DDB86, 0x1A9334, 0x00D4BB, 0x2C99A8,
    0x00C2FF, 0x344593, 0x6473FF, 0x0018EC, 0x8438FF, 0x520085, 0xCB38FF, 0xFF95C8, 0xFF37C7,
];

pub fn class_color(label: usize) -> Rgb<u8> {
    let c = PALETTE[label % PALETTE.len()];
    Rgb([(c >> 16) as u8, (c >> 8) as u8, c as u8])
}

fn text_color(bg: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = bg.0;
    let luma = 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
    if luma > 150.0 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) }
}

/// Draws `text` with the 8×8 bitmap font scaled by `scale`, top-left at (x, y).
fn draw_text(img: &mut RgbImage, x: i32, y: i32, scale: u32, color: Rgb<u8>, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')) else {
            continue;
        };
        let gx = x + (i as u32 * 8 * scale) as i32;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let rect =
                        Rect::at(gx + (col * scale) as i32, y + (row as u32 * scale) as i32).of_size(scale, scale);
                    draw_filled_rect_mut(img, rect, color);
                }
            }
        }
    }
}

/// A closed polygon `thickness` pixels wide (the outline drawn at offsets around each edge).
fn draw_outline(img: &mut RgbImage, corners: &[[f32; 2]; 4], thickness: u32, color: Rgb<u8>) {
    let r = thickness as f32 / 2.0;
    for k in 0..4 {
        let (a, b) = (corners[k], corners[(k + 1) % 4]);
        for t in 0..thickness {
            let o = t as f32 - r + 0.5;
            for (dx, dy) in [(o, 0.0), (0.0, o)] {
                draw_line_segment_mut(img, (a[0] + dx, a[1] + dy), (b[0] + dx, b[1] + dy), color);
            }
        }
    }
}

/// Blends every instance mask of the image's size into `img` (half opacity, class colour),
/// lowest score first so the best instance ends on top. Runs are walked directly: a COCO RLE
/// is column-major, pixel `k` is `(y, x) = (k mod h, k div h)`.
fn fill_masks(img: &mut RgbImage, set: &Instances) {
    let (w, h) = img.dimensions();
    for i in (0..set.masks.len()).rev() {
        let rle = &set.masks[i];
        if (rle.width, rle.height) != (w as usize, h as usize) {
            continue;
        }
        let color = class_color(set.labels[i]).0;
        let mut k = 0usize;
        for (r, &run) in rle.counts.iter().enumerate() {
            if r % 2 == 1 {
                for p in k..k + run as usize {
                    let (y, x) = ((p % rle.height) as u32, (p / rle.height) as u32);
                    let px = img.get_pixel_mut(x, y);
                    for (v, c) in px.0.iter_mut().zip(color) {
                        *v = ((*v as u16 + c as u16) / 2) as u8;
                    }
                }
            }
            k += run as usize;
        }
    }
}

/// Draws each track's recent centres as a polyline in its colour (`rtmdet track`): `trails`
/// are `(track id, centres oldest first)`.
pub fn draw_trails(img: &mut RgbImage, trails: &[(usize, Vec<[f32; 2]>)]) {
    for (id, points) in trails {
        let color = class_color(*id);
        for pair in points.windows(2) {
            imageproc::drawing::draw_line_segment_mut(img, (pair[0][0], pair[0][1]), (pair[1][0], pair[1][1]), color);
        }
    }
}

/// Draws every instance onto `img`; `name` gives the text for a label. Instances without
/// scores (ground truth) are labelled with the name alone.
pub fn draw_instances(img: &mut RgbImage, set: &Instances, name: impl Fn(usize) -> String) {
    fill_masks(img, set);
    let (w, h) = img.dimensions();
    let thickness = (w.min(h) / 320).clamp(1, 6);
    let scale = if w.min(h) >= 600 { 2 } else { 1 };
    // Draw low scores first so the best boxes end on top.
    for i in (0..set.len()).rev() {
        let d = set.get(i);
        let color = class_color(d.label);
        let [x1, y1, x2, y2] = d.bbox;
        let (x1, y1) = (x1.round().max(0.0) as i32, y1.round().max(0.0) as i32);
        let (x2, y2) = ((x2.round() as i32).min(w as i32 - 1), (y2.round() as i32).min(h as i32 - 1));
        if x2 <= x1 || y2 <= y1 {
            continue;
        }
        match set.rboxes.get(i) {
            // Rotated boxes: the oriented outline, its label at the enclosing box.
            Some(r) => draw_outline(img, &corners(r), thickness, color),
            None => {
                for t in 0..thickness as i32 {
                    let (bw, bh) = ((x2 - x1 - 2 * t).max(1) as u32, (y2 - y1 - 2 * t).max(1) as u32);
                    draw_hollow_rect_mut(img, Rect::at(x1 + t, y1 + t).of_size(bw, bh), color);
                }
            }
        }
        let label = if d.score.is_nan() { name(d.label) } else { format!("{} {:.2}", name(d.label), d.score) };
        let (tw, th) = (label.chars().count() as u32 * 8 * scale + 4, 8 * scale + 4);
        // Above the box when there is room, inside it otherwise.
        let ty = if y1 >= th as i32 { y1 - th as i32 } else { y1 };
        let tx = x1.min(w as i32 - tw as i32).max(0);
        draw_filled_rect_mut(img, Rect::at(tx, ty).of_size(tw, th), color);
        draw_text(img, tx + 2, ty + 2, scale, text_color(color), &label);
    }
}
