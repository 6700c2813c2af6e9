//! From raw head outputs to detections, in mmdetection's order (reference quirk 6):
//! per-level multi-label candidates → decode and clamp to the padded input → rescale to
//! the original image → strict zero-size drop → class-aware NMS → top `max_det`.

pub mod nms;

use serde::{Deserialize, Serialize};

use crate::preprocess::Letterbox;

/// Thresholds of the post-processing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectParams {
    /// Candidates need a score strictly above this.
    pub score_thr: f32,
    /// Candidates kept per level before NMS.
    pub nms_pre: usize,
    pub iou_thr: f32,
    pub max_det: usize,
}

impl DetectParams {
    /// The deployment settings of the RTMDet README: what a user wants to see.
    pub const DEPLOY: DetectParams = DetectParams { score_thr: 0.3, nms_pre: 1000, iou_thr: 0.65, max_det: 100 };
    /// The config `test_cfg`, used for COCO evaluation.
    pub const EVAL: DetectParams = DetectParams { score_thr: 0.001, nms_pre: 30000, iou_thr: 0.65, max_det: 300 };
}

impl Default for DetectParams {
    fn default() -> Self {
        Self::DEPLOY
    }
}

/// One detected object.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `x1, y1, x2, y2` in pixels of the original image (or the network input when
    /// not rescaled).
    pub bbox: [f32; 4],
    pub score: f32,
    pub label: usize,
}

/// Head outputs of one level for one image, on the host.
#[derive(Clone, Debug)]
pub struct LevelMaps<'a> {
    /// Logits `[C, H, W]`.
    pub cls: &'a [f32],
    /// Distances in pixels `[4, H, W]`.
    pub reg: &'a [f32],
    pub height: usize,
    pub width: usize,
    pub stride: usize,
}

/// Candidates after the per-level selection (input space, clamped), level by level and
/// score-descending within a level.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidates {
    pub bboxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    pub labels: Vec<usize>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f32) -> f32 {
    if p <= 0.0 {
        f32::NEG_INFINITY
    } else if p >= 1.0 {
        f32::INFINITY
    } else {
        (p as f64 / (1.0 - p as f64)).ln() as f32
    }
}

/// The first `n` of a stable sort by descending score, without sorting what the cut drops:
/// everything above the `n`-th best score, then its ties in their original order.
fn keep_best_stable(cands: &mut Vec<(f32, usize, usize)>, n: usize) {
    if cands.len() > n && n > 0 {
        let mut scores: Vec<f32> = cands.iter().map(|c| c.0).collect();
        let (_, &mut nth, _) = scores.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
        let above = cands.iter().filter(|c| c.0.total_cmp(&nth).is_gt()).count();
        let mut ties = n - above;
        cands.retain(|c| match c.0.total_cmp(&nth) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal if ties > 0 => {
                ties -= 1;
                true
            }
            _ => false,
        });
    }
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    cands.truncate(n);
}

/// Per level: every (prior, class) with `sigmoid(logit) > score_thr`, best `nms_pre` kept,
/// decoded from prior `(j*s, i*s)` and, with `clip_hw`, clamped to `[0, w] x [0, h]` (mmdet
/// clamps to the padded input; mmdeploy graphs do not clamp).
pub fn select_candidates(levels: &[LevelMaps], params: &DetectParams, clip_hw: Option<(usize, usize)>) -> Candidates {
    let mut out = Candidates::default();
    let (max_y, max_x) = clip_hw.map_or((f32::INFINITY, f32::INFINITY), |(h, w)| (h as f32, w as f32));
    let lo = if clip_hw.is_some() { 0.0 } else { f32::NEG_INFINITY };
    for lv in levels {
        let hw = lv.height * lv.width;
        let num_classes = lv.cls.len() / hw;
        // (score, prior, class) in (prior, class) row-major order, as torch.nonzero lists them.
        // Logits clearly below the threshold's logit skip the exp; the test itself is exact.
        let floor = logit(params.score_thr) - 1e-3;
        let mut cands: Vec<(f32, usize, usize)> = Vec::new();
        for p in 0..hw {
            for c in 0..num_classes {
                let x = lv.cls[c * hw + p];
                if x > floor || floor.is_nan() {
                    let s = sigmoid(x);
                    if s > params.score_thr {
                        cands.push((s, p, c));
                    }
                }
            }
        }
        keep_best_stable(&mut cands, params.nms_pre);
        let stride = lv.stride as f32;
        for (s, p, c) in cands {
            let (px, py) = ((p % lv.width) as f32 * stride, (p / lv.width) as f32 * stride);
            let d = |k: usize| lv.reg[k * hw + p];
            out.bboxes.push([
                (px - d(0)).clamp(lo, max_x),
                (py - d(1)).clamp(lo, max_y),
                (px + d(2)).clamp(lo, max_x),
                (py + d(3)).clamp(lo, max_y),
            ]);
            out.scores.push(s);
            out.labels.push(c);
        }
    }
    out
}

/// Maps input-space boxes to the original image: multiply by float32(1 / scale_factor).
pub fn rescale(bboxes: &mut [[f32; 4]], lb: &Letterbox) {
    let (sx, sy) = ((1.0 / lb.scale_factor.0) as f32, (1.0 / lb.scale_factor.1) as f32);
    for b in bboxes {
        b[0] *= sx;
        b[1] *= sy;
        b[2] *= sx;
        b[3] *= sy;
    }
}

/// Removes boxes whose width or height is not strictly positive, keeping order.
pub fn drop_empty(c: &mut Candidates) {
    let keep: Vec<bool> = c.bboxes.iter().map(|b| b[2] - b[0] > 0.0 && b[3] - b[1] > 0.0).collect();
    let mut k = keep.iter();
    c.bboxes.retain(|_| *k.next().unwrap());
    let mut k = keep.iter();
    c.scores.retain(|_| *k.next().unwrap());
    let mut k = keep.iter();
    c.labels.retain(|_| *k.next().unwrap());
}

/// NMS then the `max_det` cut; detections in descending score order.
pub fn nms_and_limit(c: &Candidates, params: &DetectParams) -> Vec<Detection> {
    nms::batched_nms_top(&c.bboxes, &c.scores, &c.labels, params.iou_thr, params.max_det)
        .into_iter()
        .map(|i| Detection { bbox: c.bboxes[i], score: c.scores[i], label: c.labels[i] })
        .collect()
}

/// The whole post-processing of one image. With `letterbox`, boxes are rescaled to the
/// original image before NMS (as mmdet does); without, they stay in input pixels.
pub fn postprocess(
    levels: &[LevelMaps],
    params: &DetectParams,
    clip_hw: Option<(usize, usize)>,
    letterbox: Option<&Letterbox>,
) -> Vec<Detection> {
    let mut c = select_candidates(levels, params, clip_hw);
    if let Some(lb) = letterbox {
        rescale(&mut c.bboxes, lb);
    }
    drop_empty(&mut c);
    nms_and_limit(&c, params)
}
