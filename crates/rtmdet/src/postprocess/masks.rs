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

use super::{DetectParams, drop_empty, level_candidates, rescale, sigmoid};
use crate::coders::distance_point;
use crate::model::HeadOutputs;
use crate::preprocess::Letterbox;
use crate::structures::mask::{Bitmap, encode};
use crate::structures::{Detection, Instances};

/// Prototype channels and dynamic-conv widths (`num_prototypes`, `dyconv_channels`).
const PROTOS: usize = 8;
const DYCONV: usize = 8;
/// Stride of the prototype map.
const MASK_STRIDE: usize = 8;

/// One candidate's source: level, prior index in the level, and its kernel vector.
#[derive(Clone, Debug)]
struct Source {
    /// Prior `(x, y)` and its level's stride.
    prior: [f32; 3],
    kernel: Vec<f32>,
}

/// The mask-carrying candidates of image `b`, as [`super::select_candidates`] gives boxes.
fn select(outputs: &HeadOutputs, b: usize, params: &DetectParams, clip: (usize, usize)) -> (Instances, Vec<Source>) {
    let (mut set, mut sources) = (Instances::default(), Vec::new());
    let clip = Some((clip.0 as f32, clip.1 as f32));
    for lv in &outputs.levels {
        let (reg, kernels, hw, width) = (lv.reg_of(b), lv.kernel_of(b), lv.height() * lv.width(), lv.width());
        let stride = lv.stride as f32;
        for (s, p, c) in level_candidates(lv.cls_of(b), lv.dims[1], params) {
            let point = [(p % width) as f32 * stride, (p / width) as f32 * stride];
            let d = [reg[p], reg[hw + p], reg[2 * hw + p], reg[3 * hw + p]];
            set.push(Detection { bbox: distance_point::decode(point, d, clip), score: s, label: c });
            let kernel = (0..kernels.len() / hw.max(1)).map(|k| kernels[k * hw + p]).collect();
            sources.push(Source { prior: [point[0], point[1], stride], kernel });
        }
    }
    (set, sources)
}

/// Mask logits `[h, w]` at stride 8 of one instance (spec §10.2): relative coordinates
/// `(prior − location) / (8·stride)` (x, y) and the prototypes through
/// `w0 (8×10) → ReLU → w1 (8×8) → ReLU → w2 (1×8)`; the kernel splits as w0, w1, w2, b0, b1, b2.
pub fn mask_logits(proto: &[f32], (h, w): (usize, usize), prior: [f32; 3], kernel: &[f32]) -> Vec<f32> {
    let n_in = PROTOS + 2;
    let (w0, rest) = kernel.split_at(DYCONV * n_in);
    let (w1, rest) = rest.split_at(DYCONV * DYCONV);
    let (w2, rest) = rest.split_at(DYCONV);
    let (b0, rest) = rest.split_at(DYCONV);
    let (b1, b2) = rest.split_at(DYCONV);
    let norm = prior[2] * MASK_STRIDE as f32;
    let mut out = vec![0f32; h * w];
    let mut x = [0f32; PROTOS + 2];
    for i in 0..h {
        for j in 0..w {
            let q = i * w + j;
            x[0] = (prior[0] - (j * MASK_STRIDE) as f32) / norm;
            x[1] = (prior[1] - (i * MASK_STRIDE) as f32) / norm;
            for c in 0..PROTOS {
                x[2 + c] = proto[c * h * w + q];
            }
            let layer = |wt: &[f32], bias: &[f32], inp: &[f32], o: usize| {
                let row = &wt[o * inp.len()..(o + 1) * inp.len()];
                row.iter().zip(inp).fold(0f32, |acc, (a, b)| acc + a * b) + bias[o]
            };
            let h1: [f32; DYCONV] = std::array::from_fn(|o| layer(w0, b0, &x, o).max(0.0));
            let h2: [f32; DYCONV] = std::array::from_fn(|o| layer(w1, b1, &h1, o).max(0.0));
            out[q] = layer(w2, b2, &h2, 0);
        }
    }
    out
}

/// PyTorch's source index and weights of a linear resize from `input` to `output` samples at
/// `scale` input samples per output sample (align_corners False): `(i0, i1, λ0, λ1)` each.
fn linear_taps(input: usize, output: usize, scale: f32) -> Vec<(usize, usize, f32, f32)> {
    (0..output)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of `src` (`h`×`w`, row-major) to `out_h`×`out_w` at the given scales
/// (input per output pixel), keeping only the first `keep_h` rows and `keep_w` columns.
fn resize(
    src: &[f32],
    (h, w): (usize, usize),
    (out_h, out_w): (usize, usize),
    scale: (f32, f32),
    keep: (usize, usize),
) -> Vec<f32> {
    let (keep_h, keep_w) = (keep.0.min(out_h), keep.1.min(out_w));
    let ys = linear_taps(h, out_h, scale.0);
    let xs = &linear_taps(w, out_w, scale.1)[..keep_w];
    // The rows the kept output rows read, interpolated along x once each.
    let rows_needed = ys[..keep_h].iter().map(|t| t.1).max().map_or(0, |m| m + 1);
    let rows: Vec<Vec<f32>> = (0..rows_needed)
        .map(|r| {
            let row = &src[r * w..(r + 1) * w];
            xs.iter().map(|&(x0, x1, l0, l1)| l0 * row[x0] + l1 * row[x1]).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(keep_h * keep_w);
    for &(y0, y1, l0, l1) in &ys[..keep_h] {
        out.extend(rows[y0].iter().zip(&rows[y1]).map(|(a, b)| l0 * a + l1 * b));
    }
    out
}

/// The mask of one instance: logits at stride 8 → ×8 to the padded input → with a letterbox,
/// to `ceil(H·1/sf_w)`×`ceil(W·1/sf_h)` (mmdet pairs the factors this way) cropped to the
/// original image; foreground where `sigmoid > mask_thr`.
fn instance_mask(logits: &[f32], (h, w): (usize, usize), letterbox: Option<&Letterbox>, mask_thr: f32) -> Bitmap {
    let (ph, pw) = (h * MASK_STRIDE, w * MASK_STRIDE);
    let up_scale = 1.0 / MASK_STRIDE as f32;
    let (values, out_h, out_w) = match letterbox {
        None => (resize(logits, (h, w), (ph, pw), (up_scale, up_scale), (ph, pw)), ph, pw),
        Some(lb) => {
            let (ori_h, ori_w) = (lb.ori_h, lb.ori_w);
            // mmdet's `[1 / s for s in scale_factor]` is (w, h)-ordered but sizes (h, w).
            let (fh, fw) = (1.0 / lb.scale_factor.0, 1.0 / lb.scale_factor.1);
            let (rh, rw) = ((ph as f64 * fh).ceil() as usize, (pw as f64 * fw).ceil() as usize);
            // Only the rows/columns of the padded map the cropped result reads are computed.
            let padded = resize(logits, (h, w), (ph, pw), (up_scale, up_scale), (ph, pw));
            let scale = (ph as f32 / rh as f32, pw as f32 / rw as f32);
            (resize(&padded, (ph, pw), (rh, rw), scale, (ori_h, ori_w)), ori_h.min(rh), ori_w.min(rw))
        }
    };
    let data = values.iter().map(|&v| u8::from(sigmoid(v) > mask_thr)).collect();
    let mut bitmap = Bitmap { height: out_h, width: out_w, data };
    if let Some(lb) = letterbox
        && (out_h, out_w) != (lb.ori_h, lb.ori_w)
    {
        // A resize smaller than the image (never with mmdet's ceil) leaves the rest empty.
        let mut full = Bitmap::zeros(lb.ori_h, lb.ori_w);
        for y in 0..out_h {
            full.data[y * lb.ori_w..y * lb.ori_w + out_w].copy_from_slice(&bitmap.data[y * out_w..(y + 1) * out_w]);
        }
        bitmap = full;
    }
    bitmap
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
            encode(&instance_mask(&mask_logits(proto, (h, w), s.prior, &s.kernel), (h, w), letterbox, mask_thr))
        })
        .collect();
    out
}
