//! RTMDet-Ins post-processing (spec §10.2–10.3, mmdet `RTMDetInsHead._bbox_mask_post_process`):
//! the box pipeline of detection carrying each candidate's prior and dynamic-conv kernel, then
//! masks for the survivors only: three per-instance 1×1 convs over `[relative coords,
//! prototypes]` at stride 8, bilinear ×8 to the padded input, bilinear to the original
//! resolution (mmdet's `ceil` sizes, then a crop), `sigmoid > mask_thr`.
//!
//! Both resizes are PyTorch's `interpolate(mode='bilinear', align_corners=False)` with the same
//! arithmetic (`h0·(w0·a + w1·b) + h1·(w0·c + w1·d)`), evaluated only where the result is not
//! already decided by the logits around (see [`instance_mask`]), so values equal the
//! original's to float rounding of the convolutions.

use rayon::prelude::*;

use super::{DetectParams, drop_empty, rescale, sigmoid, visit_candidates};
use crate::model::HeadOutputs;
use crate::preprocess::Letterbox;
use crate::structures::Instances;
use crate::structures::mask::{Rle, RunBuilder};

use crate::model::head::{DYCONV_CHANNELS as DYCONV, MASK_FEAT_STRIDE as MASK_STRIDE, NUM_PROTOTYPES as PROTOS};
use crate::priors::mask_relative_coords;
use rtmdet_kernels::Isa;
use rtmdet_kernels::dynamic::{DynamicConvs, dynamic_mask_logits};
use rtmdet_kernels::layout::linear_taps;

/// One candidate's source: its level, its prior's index in the level, and the prior
/// `(x, y, stride)`. The kernel is gathered for the survivors only.
#[derive(Clone, Copy, Debug)]
struct Source {
    level: usize,
    index: usize,
    prior: [f32; 3],
}

impl Source {
    /// The candidate's 169 dynamic-conv parameters (image `b`).
    fn kernel(&self, outputs: &HeadOutputs, b: usize) -> Vec<f32> {
        let lv = &outputs.levels[self.level];
        let (kernels, hw) = (lv.kernel_of(b), lv.height() * lv.width());
        (0..kernels.len() / hw.max(1)).map(|k| kernels[k * hw + self.index]).collect()
    }
}

/// The mask-carrying candidates of image `b`, as [`super::select_candidates`] gives boxes.
fn select(outputs: &HeadOutputs, b: usize, params: &DetectParams, clip: (usize, usize)) -> (Instances, Vec<Source>) {
    let (mut set, mut sources) = (Instances::default(), Vec::new());
    visit_candidates(outputs, b, params, Some(clip), |level, index, prior, d| {
        set.push(d);
        sources.push(Source { level, index, prior });
    });
    (set, sources)
}

/// Mask logits `[h, w]` at stride 8 of one instance (spec §10.2): relative coordinates
/// `(prior − location) / (8·stride)` (x, y) and the prototypes through
/// `w0 (8×10) → ReLU → w1 (8×8) → ReLU → w2 (1×8)`; the kernel splits as w0, w1, w2, b0, b1, b2.
/// Each output is summed over its inputs in order, then its bias added (the SIMD kernel of
/// `rtmdet_kernels::dynamic`, the same bits on every instruction set).
pub fn mask_logits(proto: &[f32], (h, w): (usize, usize), prior: [f32; 3], kernel: &[f32]) -> Vec<f32> {
    let hw = h * w;
    let (w0, rest) = kernel.split_at(DYCONV * (PROTOS + 2));
    let (w1, rest) = rest.split_at(DYCONV * DYCONV);
    let (w2, rest) = rest.split_at(DYCONV);
    let (b0, rest) = rest.split_at(DYCONV);
    let (b1, b2) = rest.split_at(DYCONV);
    let rel = mask_relative_coords(prior, (h, w), MASK_STRIDE);
    let planes: Vec<&[f32]> = rel.chunks_exact(hw).chain(proto.chunks_exact(hw).take(PROTOS)).collect();
    let convs = DynamicConvs { w0, b0, w1, b1, w2, b2: b2[0] };
    let mut out = vec![0f32; hw];
    dynamic_mask_logits(Isa::detect(), &planes, &convs, &mut out);
    out
}

/// One output sample of a linear resize: input indices `i0`, `i1` and their weights.
type Tap = (usize, usize, f32, f32);

/// How one index of the final mask reads the stride-8 logits along an axis: stage 1 (×8 to
/// the padded input) at the two padded samples that stage 2 (the letterbox resize) blends
/// with the weights `second`. Without a stage 2 only `first[0]` is read.
#[derive(Clone, Copy, Debug)]
struct Path {
    first: [Tap; 2],
    second: (f32, f32),
}

/// The paths of the final mask's indices along one axis of `n` logits: stage 1 to `padded`,
/// then with `resized = Some((size, kept))` stage 2 to `size`, of which the first `kept` stay
/// (mmdet's crop to the original image).
fn paths(n: usize, padded: usize, resized: Option<(usize, usize)>) -> Vec<Path> {
    let first = linear_taps(n, padded);
    match resized {
        None => first.iter().map(|&t| Path { first: [t, t], second: (1.0, 0.0) }).collect(),
        Some((size, kept)) => linear_taps(padded, size)
            .into_iter()
            .take(kept)
            .map(|(p0, p1, l0, l1)| Path { first: [first[p0], first[p1]], second: (l0, l1) })
            .collect(),
    }
}

/// Output indices `start..end` that all read the logit indices `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Band {
    start: usize,
    end: usize,
    lo: usize,
    hi: usize,
}

/// One final column's stage-1 horizontal blends `λx0·a + λx1·b` of the logit rows
/// `lo..lo + 3` (a band reads at most three: taps join neighbours), for the column's one or
/// two padded samples; each final pixel of the column in that band is then a few multiplies.
struct Across {
    lo: usize,
    blend: [[f32; 3]; 2],
    /// The smallest and largest blend read.
    range: (f32, f32),
}

impl Across {
    fn new(logits: &[f32], w: usize, px: &Path, (lo, hi): (usize, usize), staged: bool) -> Across {
        let mut blend = [[0f32; 3]; 2];
        let mut range = (f32::INFINITY, f32::NEG_INFINITY);
        for (c, &(x0, x1, lx0, lx1)) in px.first.iter().enumerate().take(if staged { 2 } else { 1 }) {
            for (k, i) in (lo..=hi).take(3).enumerate() {
                let row = &logits[i * w..];
                let v = lx0 * row[x0] + lx1 * row[x1];
                (blend[c][k], range) = (v, (range.0.min(v), range.1.max(v)));
            }
        }
        Across { lo, blend, range }
    }

    /// Whether every pixel of the column in this band is foreground (`Some(true)`) or
    /// background (`Some(false)`) whatever the remaining blends do, as [`Fill::of`] decides
    /// for whole blocks; `None` when the column crosses the threshold here.
    fn uniform(&self, thr_logit: f32, margin: f32) -> Option<bool> {
        if self.range.0 >= thr_logit + margin {
            Some(true)
        } else if self.range.1 < thr_logit - margin {
            Some(false)
        } else {
            None
        }
    }

    /// The final value at row path `py` with the products and sums of PyTorch's
    /// `λy0·(λx0·a + λx1·b) + λy1·(λx0·c + λx1·d)` in each stage, so bit-equal to resizing the
    /// whole map twice. `staged` false: stage 2 is the identity and is skipped (`1·v + 0·w = v`).
    fn value(&self, py: &Path, px: &Path, staged: bool) -> f32 {
        let stage1 =
            |(y0, y1, ly0, ly1): Tap, c: usize| ly0 * self.blend[c][y0 - self.lo] + ly1 * self.blend[c][y1 - self.lo];
        if !staged {
            return stage1(py.first[0], 0);
        }
        let ((m0, m1), (n0, n1)) = (py.second, px.second);
        let row = |ty: Tap| n0 * stage1(ty, 0) + n1 * stage1(ty, 1);
        m0 * row(py.first[0]) + m1 * row(py.first[1])
    }
}

/// `sigmoid(v) > thr` exactly, without an `exp` for the values far from the threshold.
fn above(v: f32, thr: f32, thr_logit: f32) -> bool {
    if v > thr_logit + 1e-3 {
        true
    } else if v < thr_logit - 1e-3 {
        false
    } else {
        sigmoid(v) > thr
    }
}

/// What every final pixel of a block of bands is: background, foreground, or to be computed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fill {
    Background,
    Foreground,
    Mixed,
}

/// Flags of a logit for [`Fill`]: certainly under the threshold, certainly over it, near it.
const UNDER: u8 = 1;
const OVER: u8 = 2;
const NEAR: u8 = 4;

impl Fill {
    /// The fill of a block whose source logits have the flags `or` together.
    fn of(or: u8) -> Fill {
        match or {
            UNDER => Fill::Background,
            OVER => Fill::Foreground,
            _ => Fill::Mixed,
        }
    }
}

/// How far from the threshold's logit a source must be for every bilinear blend of such
/// sources to land on its side, whatever the rounding: blends are convex combinations, off
/// by a few ulps of the largest magnitude (two stages of three roundings, weights summing to
/// 1 within an ulp); 2e-3 keeps the blend beyond [`above`]'s exact-sigmoid band of ±1e-3.
fn certain_margin(logits: &[f32]) -> f32 {
    let largest = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    2e-3 + 64.0 * f32::EPSILON * largest
}

/// The rows `i_lo..=i_hi` and columns `j_lo..=j_hi` holding every logit not certainly under
/// the threshold, or `None` when there is none.
fn live_box(flags: &[u8], w: usize) -> Option<((usize, usize), (usize, usize))> {
    let mut found: Option<((usize, usize), (usize, usize))> = None;
    for (i, row) in flags.chunks_exact(w).enumerate() {
        let (Some(a), Some(b)) = (row.iter().position(|&f| f != UNDER), row.iter().rposition(|&f| f != UNDER)) else {
            continue;
        };
        found = Some(match found {
            None => ((i, i), (a, b)),
            Some(((i0, _), (a0, b0))) => ((i0, i), (a0.min(a), b0.max(b))),
        });
    }
    found
}

/// Where the final mask's pixels read the stride-8 logits: the same for every instance of an
/// image, so built once.
struct Geometry {
    /// `[h, w]` of the logits.
    logits: (usize, usize),
    /// Per final row and column.
    rows: Vec<Path>,
    cols: Vec<Path>,
    /// Whether stage 2 resamples (false: it is the identity and is skipped).
    staged: bool,
    height: usize,
    width: usize,
}

impl Geometry {
    /// Logits `[h, w]` at stride 8 → ×8 to the padded input → with a letterbox, to
    /// `ceil(H·1/sf_w)`×`ceil(W·1/sf_h)` (mmdet pairs the factors this way) cropped to the
    /// original image.
    fn new((h, w): (usize, usize), letterbox: Option<&Letterbox>) -> Geometry {
        let (ph, pw) = (h * MASK_STRIDE, w * MASK_STRIDE);
        let Some(lb) = letterbox else {
            let (rows, cols) = (paths(h, ph, None), paths(w, pw, None));
            return Geometry { logits: (h, w), rows, cols, staged: false, height: ph, width: pw };
        };
        // mmdet's `[1 / s for s in scale_factor]` is (w, h)-ordered but sizes (h, w).
        let (fh, fw) = (1.0 / lb.scale_factor.0, 1.0 / lb.scale_factor.1);
        let (rh, rw) = ((ph as f64 * fh).ceil() as usize, (pw as f64 * fw).ceil() as usize);
        let (rows, cols) = (paths(h, ph, Some((rh, lb.ori_h))), paths(w, pw, Some((rw, lb.ori_w))));
        // A stage 2 to the padded size itself is the identity (taps `(i, i, 1, 0)`).
        let staged = (rh, rw) != (ph, pw);
        Geometry { logits: (h, w), rows, cols, staged, height: lb.ori_h, width: lb.ori_w }
    }

    /// The logit indices `lo..=hi` a path reads.
    fn sources(&self, p: &Path) -> (usize, usize) {
        (p.first[0].0, if self.staged { p.first[1].1 } else { p.first[0].1 })
    }

    /// The final indices `first..last` along `paths` that read a logit index in `lo..=hi`.
    fn reading(&self, paths: &[Path], (lo, hi): (usize, usize)) -> (usize, usize) {
        let touches = |p: &Path| {
            let (a, b) = self.sources(p);
            a <= hi && b >= lo
        };
        let first = paths.iter().position(touches).unwrap_or(paths.len());
        (first, paths.iter().rposition(touches).map_or(first, |i| i + 1))
    }

    /// `paths[from..to]` grouped into bands of equal sources (contiguous: taps are monotone).
    fn bands(&self, paths: &[Path], (from, to): (usize, usize)) -> Vec<Band> {
        let mut out: Vec<Band> = Vec::new();
        for (i, p) in paths.iter().enumerate().take(to).skip(from) {
            let (lo, hi) = self.sources(p);
            match out.last_mut() {
                Some(b) if (b.lo, b.hi) == (lo, hi) => b.end = i + 1,
                _ => out.push(Band { start: i, end: i + 1, lo, hi }),
            }
        }
        out
    }
}

/// The [`UNDER`] / [`OVER`] / [`NEAR`] flag of every logit.
fn flag_logits(logits: &[f32], thr_logit: f32, margin: f32) -> Vec<u8> {
    logits
        .iter()
        .map(|&v| match v {
            v if v >= thr_logit + margin => OVER,
            v if v < thr_logit - margin => UNDER,
            _ => NEAR,
        })
        .collect()
}

/// One column band's rows as runs of one fill (mixed bands stay separate), from the flags of
/// each logit column over each row band's logit rows (`band_flags`, `[row band][w]`).
fn segments(row_bands: &[Band], band_flags: &[u8], w: usize, cb: &Band) -> Vec<(Fill, Band)> {
    let mut out: Vec<(Fill, Band)> = Vec::with_capacity(row_bands.len());
    for (r, rb) in row_bands.iter().enumerate() {
        let fill = Fill::of(band_flags[r * w + cb.lo..=r * w + cb.hi].iter().fold(0, |f, &g| f | g));
        match out.last_mut() {
            Some((f, s)) if *f == fill && fill != Fill::Mixed => s.end = rb.end,
            _ => out.push((fill, *rb)),
        }
    }
    out
}

/// The mask of one instance as a COCO RLE: its logits resampled as `geo` says, foreground
/// where `sigmoid > mask_thr`.
///
/// Exact and cheap: output pixels are grouped into blocks of rows and columns that read the
/// same logits (8×8 pixels at scale 1). A block whose logits are all clearly on one side of
/// the threshold is that side whatever the interpolation does and becomes one run per
/// column; so does a column of a straddling block whose horizontal blends are all on one side.
/// Only the rest is computed pixel by pixel, with the original's arithmetic.
fn instance_mask(logits: &[f32], geo: &Geometry, mask_thr: f32) -> Rle {
    let (w, (height, width)) = (geo.logits.1, (geo.height, geo.width));
    let (thr_logit, margin) = (super::logit(mask_thr), certain_margin(logits));
    let flags = flag_logits(logits, thr_logit, margin);
    let mut runs = RunBuilder::new();
    // The window of outputs that read a logit not certainly under: the rest is background.
    let Some((live_rows, live_cols)) = live_box(&flags, w) else {
        runs.push(false, height * width);
        return runs.finish(height, width);
    };
    let ((y_lo, y_hi), (x_lo, x_hi)) = (geo.reading(&geo.rows, live_rows), geo.reading(&geo.cols, live_cols));
    let (row_bands, col_bands) = (geo.bands(&geo.rows, (y_lo, y_hi)), geo.bands(&geo.cols, (x_lo, x_hi)));
    let mut band_flags = vec![0u8; row_bands.len() * w];
    for (acc, rb) in band_flags.chunks_exact_mut(w).zip(&row_bands) {
        for row in flags[rb.lo * w..(rb.hi + 1) * w].chunks_exact(w) {
            acc.iter_mut().zip(row).for_each(|(a, f)| *a |= f);
        }
    }
    runs.push(false, x_lo * height);
    for cb in &col_bands {
        let segments = segments(&row_bands, &band_flags, w, cb);
        for px in &geo.cols[cb.start..cb.end] {
            // (A window without rows still has its columns, all background.)
            runs.push(false, y_lo);
            for (fill, band) in &segments {
                match fill {
                    Fill::Background => runs.push(false, band.end - band.start),
                    Fill::Foreground => runs.push(true, band.end - band.start),
                    Fill::Mixed => {
                        let across = Across::new(logits, w, px, (band.lo, band.hi), geo.staged);
                        if let Some(fg) = across.uniform(thr_logit, margin) {
                            runs.push(fg, band.end - band.start);
                            continue;
                        }
                        for py in &geo.rows[band.start..band.end] {
                            runs.push(above(across.value(py, px, geo.staged), mask_thr, thr_logit), 1);
                        }
                    }
                }
            }
            runs.push(false, height - y_hi);
        }
    }
    runs.push(false, (width - x_hi) * height);
    runs.finish(height, width)
}

/// The whole RTMDet-Ins post-processing of image `b`: boxes as detection does (clamped to the
/// padded input `clip`, rescaled with `letterbox`, zero-size drop, NMS, top `max_det`), then a
/// mask per survivor (original resolution with `letterbox`, padded input without) as a
/// COCO RLE in `masks`.
pub fn postprocess(
    outputs: &HeadOutputs,
    b: usize,
    params: &DetectParams,
    clip: (usize, usize),
    letterbox: Option<&Letterbox>,
    mask_thr: f32,
) -> Instances {
    let (mut set, mut sources) = select(outputs, b, params, clip);
    if let Some(lb) = letterbox {
        rescale(&mut set, lb);
    }
    let keep: Vec<bool> = set.boxes.iter().map(crate::structures::boxes::is_non_empty).collect();
    let mut it = keep.iter();
    sources.retain(|_| *it.next().expect("one flag per candidate"));
    drop_empty(&mut set);
    let kept = super::nms::batched_nms_top(&set.boxes, &set.scores, &set.labels, params.iou_thr, params.max_det);
    let mut out = set.select(&kept);
    let Some(feat) = &outputs.mask_feat else { return out };
    let (h, w) = (feat.dims[2], feat.dims[3]);
    let (proto, geo) = (feat.proto_of(b), Geometry::new((h, w), letterbox));
    out.masks = kept
        .par_iter()
        .map(|&i| {
            let s = &sources[i];
            let logits = mask_logits(proto, (h, w), s.prior, &s.kernel(outputs, b));
            instance_mask(&logits, &geo, mask_thr)
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structures::mask::{Bitmap, encode};

    /// The definition the banded computation must equal bit for bit: both bilinear resizes
    /// over the whole map with PyTorch's arithmetic, the crop, then `sigmoid > thr` per pixel.
    fn brute_force(logits: &[f32], (h, w): (usize, usize), letterbox: Option<&Letterbox>, thr: f32) -> Rle {
        let resize = |src: &[f32], (sh, sw): (usize, usize), (dh, dw): (usize, usize)| -> Vec<f32> {
            let (ys, xs) = (linear_taps(sh, dh), linear_taps(sw, dw));
            let mut out = Vec::with_capacity(dh * dw);
            for &(y0, y1, ly0, ly1) in &ys {
                for &(x0, x1, lx0, lx1) in &xs {
                    let at = |y: usize, x: usize| src[y * sw + x];
                    out.push(ly0 * (lx0 * at(y0, x0) + lx1 * at(y0, x1)) + ly1 * (lx0 * at(y1, x0) + lx1 * at(y1, x1)));
                }
            }
            out
        };
        let (ph, pw) = (h * MASK_STRIDE, w * MASK_STRIDE);
        let padded = resize(logits, (h, w), (ph, pw));
        let (values, (rh, rw), (height, width)) = match letterbox {
            None => (padded, (ph, pw), (ph, pw)),
            Some(lb) => {
                let (fh, fw) = (1.0 / lb.scale_factor.0, 1.0 / lb.scale_factor.1);
                let size = ((ph as f64 * fh).ceil() as usize, (pw as f64 * fw).ceil() as usize);
                (resize(&padded, (ph, pw), size), size, (lb.ori_h, lb.ori_w))
            }
        };
        assert!(rh >= height && rw >= width);
        let data = (0..height * width).map(|q| u8::from(sigmoid(values[(q / width) * rw + q % width]) > thr)).collect();
        encode(&Bitmap { height, width, data })
    }

    /// Smooth blobs crossing the threshold everywhere, with values exactly at it, an ulp off
    /// it and far from it, so bands of every fill and pixels at the boundary all occur.
    fn field((h, w): (usize, usize), seed: u32, scale: f32) -> Vec<f32> {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32
        };
        (0..h * w)
            .map(|q| {
                let (y, x) = ((q / w) as f32, (q % w) as f32);
                let v = scale * ((0.7 * x).sin() + (0.45 * y).cos() - 0.3) + 0.2 * (next() - 0.5);
                match (next() * 20.0) as u32 {
                    0 => 0.0,
                    1 => f32::from_bits(1),
                    2 => -1e-7,
                    _ => v,
                }
            })
            .collect()
    }

    #[test]
    fn banded_masks_equal_resizing_every_pixel() {
        let (h, w) = (16, 16);
        // Letterboxes of the 128-pixel input: none, scale 1 (stage 2 skipped), downscaled
        // (stage 2 enlarges), upscaled (stage 2 shrinks), and one axis cropped hard.
        let boxes = [
            None,
            Some(Letterbox::fit(128, 85, 128)),
            Some(Letterbox::fit(333, 250, 128)),
            Some(Letterbox::fit(61, 40, 128)),
            Some(Letterbox::fit(500, 90, 128)),
        ];
        for (k, lb) in boxes.iter().enumerate() {
            let geo = Geometry::new((h, w), lb.as_ref());
            for (seed, scale) in [(1, 1.0), (2, 3.0), (3, 0.05), (4, 300.0)] {
                let logits = field((h, w), seed + 10 * k as u32, scale);
                for thr in [0.5, 0.3, 0.9] {
                    let want = brute_force(&logits, (h, w), lb.as_ref(), thr);
                    assert_eq!(instance_mask(&logits, &geo, thr), want, "letterbox {k}, seed {seed}, thr {thr}");
                }
            }
        }
    }
}
