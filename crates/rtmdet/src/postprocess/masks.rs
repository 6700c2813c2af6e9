//! RTMDet-Ins post-processing (spec §10.2–10.3, mmdet `RTMDetInsHead._bbox_mask_post_process`):
//! the box pipeline of detection carrying each candidate's prior and dynamic-conv kernel, then
//! masks for the survivors only: three per-instance 1×1 convs over `[relative coords,
//! prototypes]` at stride 8, bilinear ×8 to the padded input, bilinear to the original
//! resolution (mmdet's `ceil` sizes, then a crop), `sigmoid > mask_thr`.
//!
//! Both resizes are PyTorch's `interpolate(mode='bilinear', align_corners=False)` done
//! separably with the same arithmetic (`h0·(w0·a + w1·b) + h1·(w0·c + w1·d)`), so values equal
//! the original's to float rounding of the convolutions.

use rayon::prelude::*;

use super::{DetectParams, drop_empty, rescale, sigmoid, visit_candidates};
use crate::model::HeadOutputs;
use crate::preprocess::Letterbox;
use crate::structures::Instances;
use crate::structures::mask::{Rle, RunBuilder};

use crate::model::head::{DYCONV_CHANNELS as DYCONV, MASK_FEAT_STRIDE as MASK_STRIDE, NUM_PROTOTYPES as PROTOS};
use crate::priors::mask_relative_coords;
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
/// Computed a layer at a time over all locations (vectorisable), each output summed over its
/// inputs in order, then its bias added.
pub fn mask_logits(proto: &[f32], (h, w): (usize, usize), prior: [f32; 3], kernel: &[f32]) -> Vec<f32> {
    let (hw, n_in) = (h * w, PROTOS + 2);
    let (w0, rest) = kernel.split_at(DYCONV * n_in);
    let (w1, rest) = rest.split_at(DYCONV * DYCONV);
    let (w2, rest) = rest.split_at(DYCONV);
    let (b0, rest) = rest.split_at(DYCONV);
    let (b1, b2) = rest.split_at(DYCONV);
    let mut x = vec![0f32; n_in * hw];
    let (rel, protos) = x.split_at_mut(2 * hw);
    rel.copy_from_slice(&mask_relative_coords(prior, (h, w), MASK_STRIDE));
    protos.copy_from_slice(&proto[..PROTOS * hw]);
    let h1 = dyconv(&x, n_in, w0, b0, hw, true);
    let h2 = dyconv(&h1, DYCONV, w1, b1, hw, true);
    dyconv(&h2, DYCONV, w2, b2, hw, false)
}

/// A 1×1 convolution of `n_in` planes of `hw` values with weights `[out][n_in]` and a bias.
fn dyconv(x: &[f32], n_in: usize, weight: &[f32], bias: &[f32], hw: usize, relu: bool) -> Vec<f32> {
    let mut out = vec![0f32; bias.len() * hw];
    for (o, acc) in out.chunks_exact_mut(hw).enumerate() {
        for (i, plane) in x.chunks_exact(hw).take(n_in).enumerate() {
            let wv = weight[o * n_in + i];
            for (a, v) in acc.iter_mut().zip(plane) {
                *a += wv * v;
            }
        }
        for a in acc.iter_mut() {
            *a += bias[o];
            if relu {
                *a = a.max(0.0);
            }
        }
    }
    out
}

/// One output sample of a linear resize: input indices `i0`, `i1` and their weights.
type Tap = (usize, usize, f32, f32);

/// The input indices `lo..hi` that taps read.
fn span(taps: &[Tap]) -> (usize, usize) {
    let lo = taps.iter().map(|t| t.0).min().unwrap_or(0);
    (lo, taps.iter().map(|t| t.1 + 1).max().unwrap_or(lo))
}

/// Bilinear resampling of `src` — input rows and columns from `origin` on, row-major, `src_w`
/// wide — at the output samples `ys` × `xs`: along x first, then the rows blended, the same
/// products and sums as PyTorch's `λy0·(λx0·a + λx1·b) + λy1·(λx0·c + λx1·d)`. The result is
/// row-major, or column-major (COCO's run order) with `columns`.
fn resample(src: &[f32], src_w: usize, origin: (usize, usize), ys: &[Tap], xs: &[Tap], columns: bool) -> Vec<f32> {
    let ((r_lo, r_hi), w) = (span(ys), xs.len());
    let n_rows = r_hi - r_lo;
    let mut rows = vec![0f32; n_rows * w];
    for (k, out) in rows.chunks_exact_mut(w.max(1)).enumerate().take(n_rows) {
        let row = &src[(r_lo + k - origin.0) * src_w..];
        for (o, &(x0, x1, l0, l1)) in out.iter_mut().zip(xs) {
            *o = l0 * row[x0 - origin.1] + l1 * row[x1 - origin.1];
        }
    }
    let mut out = Vec::with_capacity(ys.len() * w);
    if !columns {
        for &(y0, y1, l0, l1) in ys {
            let (a, b) = (&rows[(y0 - r_lo) * w..(y0 - r_lo + 1) * w], &rows[(y1 - r_lo) * w..(y1 - r_lo + 1) * w]);
            out.extend(a.iter().zip(b).map(|(a, b)| l0 * a + l1 * b));
        }
        return out;
    }
    let mut cols = vec![0f32; rows.len()];
    for (k, row) in rows.chunks_exact(w.max(1)).enumerate() {
        for (x, v) in row.iter().enumerate() {
            cols[x * n_rows + k] = *v;
        }
    }
    for col in cols.chunks_exact(n_rows.max(1)).take(w) {
        out.extend(ys.iter().map(|&(y0, y1, l0, l1)| l0 * col[y0 - r_lo] + l1 * col[y1 - r_lo]));
    }
    out
}

/// Taps of outputs `start..` that copy their own index's input sample (`λ0 = 1`).
fn is_identity(taps: &[Tap], start: usize) -> bool {
    taps.iter().enumerate().all(|(k, &(i0, _, l0, l1))| i0 == start + k && l0 == 1.0 && l1 == 0.0)
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

/// Margin under the threshold's logit below which a logit cannot turn into foreground:
/// bilinear values are convex combinations of their sources, exceeding their maximum by a
/// few ulps at most.
const CERTAINLY_BELOW: f32 = 1e-3;

/// The range of outputs whose sources, through the chain `taps_to_source`, touch the source
/// indices `lo..=hi` (contiguous: taps are monotone).
fn touching(n: usize, sources: impl Fn(usize) -> (usize, usize), (lo, hi): (usize, usize)) -> (usize, usize) {
    let hits = |i: usize| {
        let (a, b) = sources(i);
        a <= hi && b >= lo
    };
    let first = (0..n).find(|&i| hits(i)).unwrap_or(n);
    let last = (first..n).rev().find(|&i| hits(i)).map_or(first, |i| i + 1);
    (first, last)
}

/// The mask of one instance as a COCO RLE: logits at stride 8 → ×8 to the padded input →
/// with a letterbox, to `ceil(H·1/sf_w)`×`ceil(W·1/sf_h)` (mmdet pairs the factors this way)
/// cropped to the original image; foreground where `sigmoid > mask_thr`.
///
/// Exact and cheap: only the window of output pixels whose source logits include one within
/// [`CERTAINLY_BELOW`] of the threshold or above is computed (everything else is background
/// whatever the interpolation does), and the last resize runs column by column so the runs
/// come out in COCO's order.
fn instance_mask(logits: &[f32], (h, w): (usize, usize), letterbox: Option<&Letterbox>, mask_thr: f32) -> Rle {
    let (ph, pw) = (h * MASK_STRIDE, w * MASK_STRIDE);
    let (first_ys, first_xs) = (linear_taps(h, ph), linear_taps(w, pw));
    // The final resize (identity when there is no letterbox) and the image it makes.
    let (second_ys, second_xs, height, width) = match letterbox {
        None => ((0..ph).map(|i| (i, i, 1.0, 0.0)).collect(), (0..pw).map(|i| (i, i, 1.0, 0.0)).collect(), ph, pw),
        Some(lb) => {
            // mmdet's `[1 / s for s in scale_factor]` is (w, h)-ordered but sizes (h, w).
            let (fh, fw) = (1.0 / lb.scale_factor.0, 1.0 / lb.scale_factor.1);
            let (rh, rw) = ((ph as f64 * fh).ceil() as usize, (pw as f64 * fw).ceil() as usize);
            let mut ys = linear_taps(ph, rh);
            let mut xs = linear_taps(pw, rw);
            ys.truncate(lb.ori_h);
            xs.truncate(lb.ori_w);
            (ys, xs, lb.ori_h, lb.ori_w)
        }
    };
    let thr_logit = super::logit(mask_thr);
    // Logit cells that may end up foreground, as a bounding box.
    let hot: Vec<usize> = (0..h * w).filter(|&q| logits[q] >= thr_logit - CERTAINLY_BELOW).collect();
    let mut runs = RunBuilder::new();
    if let (Some(i_lo), Some(i_hi)) = (hot.iter().map(|q| q / w).min(), hot.iter().map(|q| q / w).max()) {
        let (j_lo, j_hi) = (hot.iter().map(|q| q % w).min().unwrap_or(0), hot.iter().map(|q| q % w).max().unwrap_or(0));
        let rows_of = |t: &Tap, taps: &[Tap]| (taps[t.0].0, taps[t.1].1);
        let (y_lo, y_hi) = touching(second_ys.len(), |y| rows_of(&second_ys[y], &first_ys), (i_lo, i_hi));
        let (x_lo, x_hi) = touching(second_xs.len(), |x| rows_of(&second_xs[x], &first_xs), (j_lo, j_hi));
        let (ys2, xs2) = (&second_ys[y_lo..y_hi], &second_xs[x_lo..x_hi]);
        // The padded-input window the final window reads, from the logits.
        let ((py_lo, py_hi), (px_lo, px_hi)) = (span(ys2), span(xs2));
        let window = if is_identity(ys2, y_lo) && is_identity(xs2, x_lo) {
            // An image the letterbox did not scale: the final resize copies (1·a + 0·b = a), so
            // the final window is the padded input's window itself.
            resample(logits, w, (0, 0), &first_ys[y_lo..y_hi], &first_xs[x_lo..x_hi], true)
        } else {
            let (fy, fx) = (&first_ys[py_lo..py_hi], &first_xs[px_lo..px_hi]);
            resample(&resample(logits, w, (0, 0), fy, fx, false), px_hi - px_lo, (py_lo, px_lo), ys2, xs2, true)
        };
        // Column by column (COCO's order); outside the window everything is background.
        let wh = y_hi - y_lo;
        runs.push(false, x_lo * height);
        for k in 0..x_hi - x_lo {
            // (A window without rows still has its columns, all background.)
            runs.push(false, y_lo);
            for &v in &window[k * wh..(k + 1) * wh] {
                runs.push(above(v, mask_thr, thr_logit), 1);
            }
            runs.push(false, height - y_hi);
        }
        runs.push(false, (width - x_hi) * height);
    } else {
        runs.push(false, height * width);
    }
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
    let proto = feat.proto_of(b);
    out.masks = kept
        .par_iter()
        .map(|&i| {
            let s = &sources[i];
            let logits = mask_logits(proto, (h, w), s.prior, &s.kernel(outputs, b));
            instance_mask(&logits, (h, w), letterbox, mask_thr)
        })
        .collect();
    out
}
