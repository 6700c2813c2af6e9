//! Training augmentations of RTMDet (spec §9.5–9.7) and RTMDet-R's "aug" recipe (§11.5), on
//! BGR images with their objects: cached Mosaic, random keep-ratio resize, random crop, YOLOX
//! HSV jitter, horizontal flip, pad, cached MixUp. Geometry follows mmdetection's
//! implementations, which act on any box type through its `rescale_`/`translate_`/`flip_`/
//! `clip_`/`is_inside` methods; [`BoxGeometry`] is that interface, for axis-aligned boxes
//! and (mmrotate's `RotatedBoxes`) rotated boxes.

use rand::RngExt;
use rand_pcg::Pcg64Mcg;

use crate::image_io::BgrImage;
use crate::preprocess::{PAD_VALUE, resize_linear};
use crate::structures::boxes::Bbox;
use crate::structures::rotated::{self, RBox};

/// What the augmentations do to an object's box: mmdet's box-type methods.
pub trait BoxGeometry: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// `rescale_`: image coordinates scaled by `(sx, sy)`.
    fn rescale(&self, sx: f32, sy: f32) -> Self;
    /// `translate_`.
    fn translate(&self, dx: f32, dy: f32) -> Self;
    /// `flip_(horizontal)` in an image `width` wide.
    fn hflip(&self, width: f32) -> Self;
    /// `clip_` to a `w`×`h` image.
    fn clip(&self, w: f32, h: f32) -> Self;
    /// What `RandomCrop` makes of an object translated into a `w`×`h` crop: clipped, except
    /// for instance masks, which are intersected with the crop.
    fn crop(&self, w: f32, h: f32) -> Self {
        self.clip(w, h)
    }
    /// `is_inside` a `w`×`h` image: the object still has something there to learn from.
    fn is_inside(&self, w: f32, h: f32) -> bool;
}

/// `HorizontalBoxes`: `[x1, y1, x2, y2]`, clipped to the image, inside when it overlaps it.
impl BoxGeometry for Bbox {
    fn rescale(&self, sx: f32, sy: f32) -> Self {
        [self[0] * sx, self[1] * sy, self[2] * sx, self[3] * sy]
    }

    fn translate(&self, dx: f32, dy: f32) -> Self {
        [self[0] + dx, self[1] + dy, self[2] + dx, self[3] + dy]
    }

    fn hflip(&self, width: f32) -> Self {
        [width - self[2], self[1], width - self[0], self[3]]
    }

    fn clip(&self, w: f32, h: f32) -> Self {
        [self[0].clamp(0.0, w), self[1].clamp(0.0, h), self[2].clamp(0.0, w), self[3].clamp(0.0, h)]
    }

    fn is_inside(&self, w: f32, h: f32) -> bool {
        self[0] < w && self[1] < h && self[2] > 0.0 && self[3] > 0.0
    }
}

/// mmrotate's `RotatedBoxes`: `(cx, cy, w, h, θ)`. A rotated box is never clipped (its
/// shape would change); it stays while its centre is in the image (closed interval).
impl BoxGeometry for RBox {
    fn rescale(&self, sx: f32, sy: f32) -> Self {
        rotated::rescale(self, sx, sy)
    }

    fn translate(&self, dx: f32, dy: f32) -> Self {
        [self[0] + dx, self[1] + dy, self[2], self[3], self[4]]
    }

    fn hflip(&self, width: f32) -> Self {
        [width - self[0], self[1], self[2], self[3], -self[4]]
    }

    fn clip(&self, _w: f32, _h: f32) -> Self {
        *self
    }

    fn is_inside(&self, w: f32, h: f32) -> bool {
        self[0] >= 0.0 && self[0] <= w && self[1] >= 0.0 && self[1] <= h
    }
}

/// An object with its instance mask as polygons (RTMDet-Ins): mmdet's `PolygonMasks` beside
/// the box, `[x1, y1, x2, y2, ...]` per polygon, in image pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Segmented {
    pub bbox: Bbox,
    pub polygons: Vec<Vec<f32>>,
}

impl Segmented {
    fn map_points(&self, f: impl Fn(f32, f32) -> (f32, f32)) -> Vec<Vec<f32>> {
        let point = |p: &[f32]| {
            let (x, y) = f(p[0], p[1]);
            [x, y]
        };
        self.polygons.iter().map(|poly| poly.chunks_exact(2).flat_map(point).collect()).collect()
    }
}

impl BoxGeometry for Segmented {
    fn rescale(&self, sx: f32, sy: f32) -> Self {
        Segmented { bbox: self.bbox.rescale(sx, sy), polygons: self.map_points(|x, y| (x * sx, y * sy)) }
    }

    fn translate(&self, dx: f32, dy: f32) -> Self {
        Segmented { bbox: self.bbox.translate(dx, dy), polygons: self.map_points(|x, y| (x + dx, y + dy)) }
    }

    fn hflip(&self, width: f32) -> Self {
        Segmented { bbox: self.bbox.hflip(width), polygons: self.map_points(|x, y| (width - x, y)) }
    }

    /// `PolygonMasks.translate` clamps every coordinate to the canvas (Mosaic, MixUp).
    fn clip(&self, w: f32, h: f32) -> Self {
        Segmented { bbox: self.bbox.clip(w, h), polygons: self.map_points(|x, y| (x.clamp(0.0, w), y.clamp(0.0, h))) }
    }

    /// `PolygonMasks.crop`: each polygon intersected with the crop (pieces of fewer than three
    /// points dropped), and the box recomputed from what is left (`recompute_bbox=True`); an
    /// object with nothing left gets an empty box.
    fn crop(&self, w: f32, h: f32) -> Self {
        let window = [0.0, 0.0, w as f64, h as f64];
        let polygons: Vec<Vec<f32>> = self
            .polygons
            .iter()
            .map(|p| {
                let pts: Vec<[f64; 2]> = p.chunks_exact(2).map(|c| [c[0] as f64, c[1] as f64]).collect();
                crate::structures::quad::clip_to_window(&pts, window)
            })
            .filter(|c| c.len() >= 3)
            .map(|c| c.iter().flat_map(|q| [q[0] as f32, q[1] as f32]).collect())
            .collect();
        let mut bbox = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
        for p in polygons.iter().flat_map(|p| p.chunks_exact(2)) {
            bbox = [bbox[0].min(p[0]), bbox[1].min(p[1]), bbox[2].max(p[0]), bbox[3].max(p[1])];
        }
        if polygons.is_empty() {
            bbox = [0.0; 4];
        }
        Segmented { bbox, polygons }
    }

    fn is_inside(&self, w: f32, h: f32) -> bool {
        self.bbox.is_inside(w, h)
    }
}

/// The instance masks of objects as COCO RLE on a `height`×`width` image, as mmdet's
/// `PolygonMasks.to_ndarray` rasterises them (pycocotools' polygon rules); an object without a
/// polygon gets an empty mask.
pub fn rasterise(objects: &[Segmented], height: usize, width: usize) -> Vec<crate::structures::mask::Rle> {
    use crate::structures::mask::{Bitmap, encode, from_polygons};
    objects
        .iter()
        .map(|o| {
            let polys: Vec<Vec<f64>> = o.polygons.iter().map(|p| p.iter().map(|&v| v as f64).collect()).collect();
            from_polygons(&polys, height, width).unwrap_or_else(|_| encode(&Bitmap::zeros(height, width)))
        })
        .collect()
}

/// An image with its objects (axis-aligned boxes unless said otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<B = Bbox> {
    pub image: BgrImage,
    /// Boxes in image pixels.
    pub boxes: Vec<B>,
    pub labels: Vec<usize>,
}

pub type Rng = Pcg64Mcg;

fn filled(w: usize, h: usize) -> BgrImage {
    BgrImage { width: w, height: h, data: vec![PAD_VALUE; w * h * 3] }
}

/// Copies `src[sy.., sx..]` (size `w`×`h`) into `dst` at `(dx, dy)`.
fn blit(
    dst: &mut BgrImage,
    src: &BgrImage,
    (sx, sy): (usize, usize),
    (dx, dy): (usize, usize),
    (w, h): (usize, usize),
) {
    for row in 0..h {
        let s = ((sy + row) * src.width + sx) * 3;
        let d = ((dy + row) * dst.width + dx) * 3;
        dst.data[d..d + w * 3].copy_from_slice(&src.data[s..s + w * 3]);
    }
}

fn clip_boxes<B: BoxGeometry>(boxes: &mut [B], w: f32, h: f32) {
    for b in boxes {
        *b = b.clip(w, h);
    }
}

/// Keeps the objects for which `keep(box)` holds.
fn retain<B: BoxGeometry>(s: &mut Sample<B>, keep: impl Fn(&B) -> bool) {
    let flags: Vec<bool> = s.boxes.iter().map(&keep).collect();
    let mut it = flags.iter();
    s.boxes.retain(|_| *it.next().expect("one flag per box"));
    let mut it = flags.iter();
    s.labels.retain(|_| *it.next().expect("one flag per box"));
}

/// Resizes the image to `new_w`×`new_h` and rescales the boxes by `(sx, sy)` (mmdet's
/// transforms pass the ratio they computed, not the one the rounded size implies), then
/// clips them.
fn resize_with<B: BoxGeometry>(s: &Sample<B>, (new_w, new_h): (usize, usize), (sx, sy): (f32, f32)) -> Sample<B> {
    let mut boxes: Vec<B> = s.boxes.iter().map(|b| b.rescale(sx, sy)).collect();
    clip_boxes(&mut boxes, new_w as f32, new_h as f32);
    Sample { image: resize_linear(&s.image, new_w.max(1), new_h.max(1)), boxes, labels: s.labels.clone() }
}

/// Resizes to exactly `new_w`×`new_h` and scales the boxes (mmcv `Resize`).
pub fn resize<B: BoxGeometry>(s: &Sample<B>, new_w: usize, new_h: usize) -> Sample<B> {
    let scale = (new_w as f32 / s.image.width as f32, new_h as f32 / s.image.height as f32);
    resize_with(s, (new_w, new_h), scale)
}

/// Keep-ratio resize to fit `size`×`size` as the cached transforms do it: size
/// `int(w·r)`×`int(h·r)`, boxes rescaled by `r`.
fn fit<B: BoxGeometry>(s: &Sample<B>, size: usize) -> Sample<B> {
    let (h0, w0) = (s.image.height as f64, s.image.width as f64);
    let r = (size as f64 / h0).min(size as f64 / w0);
    resize_with(s, (((w0 * r) as usize).max(1), ((h0 * r) as usize).max(1)), (r as f32, r as f32))
}

/// A FIFO (or random-pop) cache of recent samples, as in mmdet's cached transforms.
#[derive(Clone, Debug)]
pub struct SampleCache<B = Bbox> {
    pub items: Vec<Sample<B>>,
    pub max: usize,
    pub random_pop: bool,
}

impl<B: BoxGeometry> SampleCache<B> {
    pub fn new(max: usize, random_pop: bool) -> Self {
        SampleCache { items: Vec::new(), max, random_pop }
    }

    fn push(&mut self, s: &Sample<B>, rng: &mut Rng) {
        self.items.push(s.clone());
        if self.items.len() > self.max {
            let i = if self.random_pop { rng.random_range(0..self.items.len()) } else { 0 };
            self.items.remove(i);
        }
    }
}

/// CachedMosaic: the sample top-left and three cached samples around a random centre on a
/// 2·size canvas.
pub fn cached_mosaic<B: BoxGeometry>(
    s: Sample<B>,
    cache: &mut SampleCache<B>,
    size: usize,
    prob: f64,
    rng: &mut Rng,
) -> Sample<B> {
    cache.push(&s, rng);
    if cache.items.len() <= 4 || rng.random::<f64>() > prob {
        return s;
    }
    let parts: Vec<Sample<B>> =
        std::iter::once(s).chain((0..3).map(|_| cache.items[rng.random_range(0..cache.items.len())].clone())).collect();
    let canvas_side = 2 * size;
    let mut canvas = filled(canvas_side, canvas_side);
    let cx = (rng.random_range(0.5..1.5) * size as f64) as i64;
    let cy = (rng.random_range(0.5..1.5) * size as f64) as i64;
    let (mut boxes, mut labels) = (Vec::new(), Vec::new());
    let side = canvas_side as i64;
    for (loc, part) in parts.iter().enumerate() {
        let tile = fit(part, size);
        let (w, h) = (tile.image.width as i64, tile.image.height as i64);
        // Paste region on the canvas and crop region in the tile (YOLOX geometry).
        let ((x1, y1, x2, y2), (cx1, cy1)) = match loc {
            0 => {
                let (x1, y1) = ((cx - w).max(0), (cy - h).max(0));
                ((x1, y1, cx, cy), (w - (cx - x1), h - (cy - y1)))
            }
            1 => {
                let (y1, x2) = ((cy - h).max(0), (cx + w).min(side));
                ((cx, y1, x2, cy), (0, h - (cy - y1)))
            }
            2 => {
                let (x1, y2) = ((cx - w).max(0), (cy + h).min(side));
                ((x1, cy, cx, y2), (w - (cx - x1), 0))
            }
            _ => ((cx, cy, (cx + w).min(side), (cy + h).min(side)), (0, 0)),
        };
        let (pw, ph) = ((x2 - x1).min(w - cx1), (y2 - y1).min(h - cy1));
        if pw > 0 && ph > 0 {
            blit(
                &mut canvas,
                &tile.image,
                (cx1 as usize, cy1 as usize),
                (x1 as usize, y1 as usize),
                (pw as usize, ph as usize),
            );
        }
        let (dx, dy) = ((x1 - cx1) as f32, (y1 - cy1) as f32);
        boxes.extend(tile.boxes.iter().map(|b| b.translate(dx, dy)));
        labels.extend(&tile.labels);
    }
    let mut out = Sample { image: canvas, boxes, labels };
    let f = canvas_side as f32;
    clip_boxes(&mut out.boxes, f, f);
    retain(&mut out, |b| b.is_inside(f, f));
    out
}

/// RandomResize: keep-ratio resize to fit `(scale·ratio)²`, `ratio ~ U(lo, hi)`.
pub fn random_resize<B: BoxGeometry>(s: &Sample<B>, scale: usize, (lo, hi): (f64, f64), rng: &mut Rng) -> Sample<B> {
    let ratio = rng.random::<f64>() * (hi - lo) + lo;
    let target = (scale as f64 * ratio) as usize;
    let (w, h) = (s.image.width as f64, s.image.height as f64);
    let f = (target as f64 / w).min(target as f64 / h);
    resize(s, ((w * f + 0.5) as usize).max(1), ((h * f + 0.5) as usize).max(1))
}

/// RandomCrop (absolute size); the objects left inside (possibly none: the caller decides,
/// as mmdet's `allow_negative_crop` does).
pub fn random_crop<B: BoxGeometry>(s: &Sample<B>, size: usize, rng: &mut Rng) -> Sample<B> {
    let (ch, cw) = (size.min(s.image.height), size.min(s.image.width));
    let oy = rng.random_range(0..=s.image.height - ch);
    let ox = rng.random_range(0..=s.image.width - cw);
    let mut image = filled(cw, ch);
    blit(&mut image, &s.image, (ox, oy), (0, 0), (cw, ch));
    let mut out = Sample {
        image,
        boxes: s.boxes.iter().map(|b| b.translate(-(ox as f32), -(oy as f32)).crop(cw as f32, ch as f32)).collect(),
        labels: s.labels.clone(),
    };
    let (fw, fh) = (cw as f32, ch as f32);
    retain(&mut out, |b| b.is_inside(fw, fh));
    out
}

/// OpenCV's 8-bit BGR → HSV (H in [0, 180)).
fn bgr_to_hsv(b: u8, g: u8, r: u8) -> (i32, i32, i32) {
    let (bf, gf, rf) = (b as f32, g as f32, r as f32);
    let v = bf.max(gf).max(rf);
    let min = bf.min(gf).min(rf);
    let diff = v - min;
    let s = if v > 0.0 { diff * 255.0 / v } else { 0.0 };
    let mut h = if diff == 0.0 {
        0.0
    } else if v == rf {
        60.0 * (gf - bf) / diff
    } else if v == gf {
        120.0 + 60.0 * (bf - rf) / diff
    } else {
        240.0 + 60.0 * (rf - gf) / diff
    };
    if h < 0.0 {
        h += 360.0;
    }
    ((h / 2.0).round() as i32 % 180, s.round() as i32, v as i32)
}

/// OpenCV's 8-bit HSV → BGR.
fn hsv_to_bgr(h: i32, s: i32, v: i32) -> [u8; 3] {
    let (h, s, v) = (h as f32 * 2.0, s as f32 / 255.0, v as f32 / 255.0);
    let hh = (h / 60.0).rem_euclid(6.0);
    let i = hh.floor();
    let f = hh - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match i as i32 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [(b * 255.0).round() as u8, (g * 255.0).round() as u8, (r * 255.0).round() as u8]
}

/// YOLOX HSV jitter: gains `U(-1, 1)·(5, 30, 30)`, each kept with probability 0.5.
pub fn hsv_jitter<B>(s: &mut Sample<B>, deltas: (f64, f64, f64), rng: &mut Rng) {
    let mut gains = [deltas.0, deltas.1, deltas.2].map(|d| rng.random_range(-1.0..1.0) * d);
    for g in gains.iter_mut() {
        if rng.random_range(0..2) == 0 {
            *g = 0.0;
        }
    }
    let [gh, gs, gv] = gains.map(|g| g as i32);
    if gh == 0 && gs == 0 && gv == 0 {
        return;
    }
    for px in s.image.data.chunks_exact_mut(3) {
        let (h, sat, v) = bgr_to_hsv(px[0], px[1], px[2]);
        let out = hsv_to_bgr((h + gh).rem_euclid(180), (sat + gs).clamp(0, 255), (v + gv).clamp(0, 255));
        px.copy_from_slice(&out);
    }
}

/// Mirrors the image and boxes left-right.
pub fn hflip<B: BoxGeometry>(s: &mut Sample<B>) {
    mirror_rows(&mut s.image);
    let wf = s.image.width as f32;
    for b in &mut s.boxes {
        *b = b.hflip(wf);
    }
}

/// Mirrors every row of the image in place.
fn mirror_rows(img: &mut BgrImage) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

/// The image padded bottom/right with 114 up to `size`×`size` (unchanged when larger).
pub fn pad_image(img: &BgrImage, size: usize) -> BgrImage {
    let (w, h) = (img.width, img.height);
    if w >= size && h >= size {
        return img.clone();
    }
    let mut canvas = filled(w.max(size), h.max(size));
    blit(&mut canvas, img, (0, 0), (0, 0), (w, h));
    canvas
}

/// Pads bottom/right with 114 up to `size`×`size`.
pub fn pad<B>(s: &mut Sample<B>, size: usize) {
    if s.image.width < size || s.image.height < size {
        s.image = pad_image(&s.image, size);
    }
}

/// CachedMixUp: blends with a cached sample (resized to fit `size`, maybe flipped, randomly
/// placed), 0.5/0.5, and concatenates the objects.
pub fn cached_mixup<B: BoxGeometry>(
    s: Sample<B>,
    cache: &mut SampleCache<B>,
    size: usize,
    prob: f64,
    rng: &mut Rng,
) -> Sample<B> {
    cache.push(&s, rng);
    if cache.items.len() <= 1 || rng.random::<f64>() > prob {
        return s;
    }
    let mut pick = None;
    for _ in 0..15 {
        let i = rng.random_range(0..cache.items.len());
        if !cache.items[i].boxes.is_empty() {
            pick = Some(i);
            break;
        }
    }
    let Some(i) = pick else { return s };
    let other = cache.items[i].clone();
    let is_flip = rng.random::<f64>() > 0.5;
    let fitted = fit(&other, size);
    let mut placed = Sample { image: filled(size, size), boxes: fitted.boxes, labels: fitted.labels };
    blit(&mut placed.image, &fitted.image, (0, 0), (0, 0), (fitted.image.width, fitted.image.height));
    if is_flip {
        hflip(&mut placed);
    }
    // Random placement of the size×size canvas relative to the current image.
    let (tw, th) = (s.image.width, s.image.height);
    let (pw, ph) = (size.max(tw), size.max(th));
    let mut padded = filled(pw, ph);
    blit(&mut padded, &placed.image, (0, 0), (0, 0), (size, size));
    let oy = if ph > th { rng.random_range(0..ph - th) } else { 0 };
    let ox = if pw > tw { rng.random_range(0..pw - tw) } else { 0 };
    let mut out = s;
    for y in 0..th {
        for x in 0..tw {
            for c in 0..3 {
                let a = out.image.data[(y * tw + x) * 3 + c] as f32;
                let b = padded.data[((y + oy) * pw + x + ox) * 3 + c] as f32;
                out.image.data[(y * tw + x) * 3 + c] = (0.5 * a + 0.5 * b) as u8;
            }
        }
    }
    let mut moved: Vec<B> = placed.boxes.iter().map(|b| b.translate(-(ox as f32), -(oy as f32))).collect();
    clip_boxes(&mut moved, tw as f32, th as f32);
    out.boxes.extend(moved);
    out.labels.extend(placed.labels);
    let (fw, fh) = (tw as f32, th as f32);
    retain(&mut out, |b| b.is_inside(fw, fh));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sample(w: usize, h: usize, boxes: Vec<[f32; 4]>) -> Sample {
        let data = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let labels = (0..boxes.len()).collect();
        Sample { image: BgrImage::new(w, h, data).unwrap(), boxes, labels }
    }

    #[test]
    fn flip_and_resize_move_boxes_exactly() {
        let mut s = sample(100, 50, vec![[10.0, 5.0, 30.0, 25.0]]);
        hflip(&mut s);
        assert_eq!(s.boxes[0], [70.0, 5.0, 90.0, 25.0]);
        let r = resize(&s, 200, 25);
        assert_eq!(r.boxes[0], [140.0, 2.5, 180.0, 12.5]);
        assert_eq!((r.image.width, r.image.height), (200, 25));
    }

    #[test]
    fn crop_translates_clips_and_drops_what_left() {
        let s = sample(100, 100, vec![[10.0, 10.0, 30.0, 30.0], [80.0, 80.0, 95.0, 95.0]]);
        let mut rng = Rng::seed_from_u64(1);
        let mut empty = 0;
        for _ in 0..20 {
            let c = random_crop(&s, 50, &mut rng);
            assert_eq!((c.image.width, c.image.height), (50, 50));
            assert!(c.boxes.iter().all(|b| b[0] >= 0.0 && b[2] <= 50.0 && b[2] > b[0] && b[3] > b[1]));
            assert_eq!(c.boxes.len(), c.labels.len());
            empty += usize::from(c.boxes.is_empty());
        }
        assert!(empty > 0, "some crops hold no object");
        // A crop as large as the image keeps everything in place.
        let c = random_crop(&s, 100, &mut rng);
        assert_eq!(c.boxes, s.boxes);
        assert_eq!(c.image, s.image);
    }

    #[test]
    fn mosaic_places_the_current_sample_top_left_of_the_centre() {
        let mut rng = Rng::seed_from_u64(3);
        let mut cache = SampleCache::new(20, false);
        let s = sample(64, 64, vec![[0.0, 0.0, 64.0, 64.0]]);
        for _ in 0..4 {
            let out = cached_mosaic(s.clone(), &mut cache, 64, 1.0, &mut rng);
            assert_eq!(out, s); // fewer than 5 cached: unchanged
        }
        let out = cached_mosaic(s.clone(), &mut cache, 64, 1.0, &mut rng);
        assert_eq!((out.image.width, out.image.height), (128, 128));
        assert_eq!(out.boxes.len(), 4);
        // The first box ends at the centre, the last starts there.
        let (c0, c3) = (out.boxes[0], out.boxes[3]);
        assert_eq!((c0[2], c0[3]), (c3[0], c3[1]));
        assert_eq!([c0[2] - c0[0], c0[3] - c0[1]], [c0[2].min(64.0), c0[3].min(64.0)]);
    }

    #[test]
    fn hsv_round_trip_is_identity_without_gain() {
        for (b, g, r) in [(0u8, 0u8, 0u8), (255, 255, 255), (10, 200, 30), (250, 5, 128), (114, 114, 114)] {
            let (h, s, v) = bgr_to_hsv(b, g, r);
            let back = hsv_to_bgr(h, s, v);
            for (x, y) in back.iter().zip([b, g, r]) {
                assert!((*x as i32 - y as i32).abs() <= 3, "{:?} -> {:?}", (b, g, r), back);
            }
        }
    }

    #[test]
    fn mixup_keeps_size_and_adds_boxes() {
        let mut rng = Rng::seed_from_u64(5);
        let mut cache = SampleCache::new(10, false);
        let a = sample(64, 64, vec![[5.0, 5.0, 20.0, 20.0]]);
        let first = cached_mixup(a.clone(), &mut cache, 64, 1.0, &mut rng);
        assert_eq!(first, a);
        let out = cached_mixup(a.clone(), &mut cache, 64, 1.0, &mut rng);
        assert_eq!((out.image.width, out.image.height), (64, 64));
        assert_eq!(out.boxes.len(), 2);
        assert_eq!(out.boxes[0], a.boxes[0]);
    }

    /// `RandomCrop` on an instance mask: the polygon is intersected with the crop and the box
    /// recomputed from it (`recompute_bbox`); a polygon wholly outside leaves an empty object
    /// that the crop drops.
    #[test]
    fn crop_intersects_polygons_and_recomputes_boxes() {
        let tri = Segmented { bbox: [-10.0, 0.0, 10.0, 20.0], polygons: vec![vec![-10.0, 0.0, 10.0, 0.0, 10.0, 20.0]] };
        let c = tri.crop(50.0, 50.0);
        // The part with x ≥ 0: the quadrilateral (0,0) (10,0) (10,20) (0,10).
        assert_eq!(c.bbox, [0.0, 0.0, 10.0, 20.0]);
        let area = crate::structures::quad::polygon_area(
            &c.polygons[0].chunks_exact(2).map(|p| [p[0] as f64, p[1] as f64]).collect::<Vec<_>>(),
        );
        assert!((area - 150.0).abs() < 1e-9, "{area}");
        let outside =
            Segmented { bbox: [60.0, 60.0, 70.0, 70.0], polygons: vec![vec![60.0, 60.0, 70.0, 60.0, 70.0, 70.0]] };
        let o = outside.crop(50.0, 50.0);
        assert!(o.polygons.is_empty() && !o.is_inside(50.0, 50.0));
        let masks = rasterise(&[o, c], 50, 50);
        assert_eq!(crate::structures::mask::area(&masks[0]), 0);
        assert!(crate::structures::mask::area(&masks[1]) > 100);
    }
}
