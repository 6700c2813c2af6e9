//! From raw head outputs to detections, in mmdetection's order (reference quirk 6):
//! per-level multi-label candidates → decode and clamp to the padded input → rescale to
//! the original image → strict zero-size drop → class-aware NMS → top `max_det`.

pub mod masks;
pub mod merge;
pub mod nms;
pub mod rotated;

use serde::{Deserialize, Serialize};

use crate::coders::distance_point;
use crate::model::HeadOutputs;
use crate::preprocess::Letterbox;
use crate::structures::{Detection, Instances, boxes};

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
    /// RTMDet-Ins deployment settings (NMS IoU 0.6, 100 masks).
    pub const INS_DEPLOY: DetectParams = DetectParams { score_thr: 0.3, nms_pre: 1000, iou_thr: 0.6, max_det: 100 };
    /// RTMDet-Ins `test_cfg`, used for COCO evaluation.
    pub const INS_EVAL: DetectParams = DetectParams { score_thr: 0.05, nms_pre: 1000, iou_thr: 0.6, max_det: 100 };
    /// RTMDet-R's `test_cfg` (mmrotate DOTA configs): rotated NMS at IoU 0.1, 2000 boxes.
    pub const ROTATED: DetectParams = DetectParams { score_thr: 0.05, nms_pre: 2000, iou_thr: 0.1, max_det: 2000 };

    /// The default thresholds of a task: [`DetectParams::DEPLOY`], [`DetectParams::INS_DEPLOY`]
    /// or [`DetectParams::ROTATED`].
    pub fn for_task(task: crate::config::Task) -> DetectParams {
        match task {
            crate::config::Task::Rotated => Self::ROTATED,
            crate::config::Task::Segment => Self::INS_DEPLOY,
            crate::config::Task::Detect => Self::DEPLOY,
        }
    }

    /// The evaluation thresholds of a task (the config `test_cfg`).
    pub fn eval_for_task(task: crate::config::Task) -> DetectParams {
        match task {
            crate::config::Task::Rotated => Self::ROTATED,
            crate::config::Task::Segment => Self::INS_EVAL,
            crate::config::Task::Detect => Self::EVAL,
        }
    }
}

impl Default for DetectParams {
    fn default() -> Self {
        Self::DEPLOY
    }
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub(crate) fn logit(p: f32) -> f32 {
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

/// Per level of image `b`: every (prior, class) with `sigmoid(logit) > score_thr`, best
/// `nms_pre` kept, decoded from prior `(j*s, i*s)` and, with `clip_hw`, clamped to
/// `[0, w] x [0, h]` (mmdet clamps to the padded input; mmdeploy graphs do not clamp).
/// Candidates come level by level, score-descending within a level, in input pixels.
pub fn select_candidates(
    outputs: &HeadOutputs,
    b: usize,
    params: &DetectParams,
    clip_hw: Option<(usize, usize)>,
) -> Instances {
    let mut out = Instances::default();
    visit_candidates(outputs, b, params, clip_hw, |_, _, _, d| out.push(d));
    out
}

/// The candidates of [`select_candidates`] one by one, in its order, with their source:
/// `f(level, prior index in the level, prior (x, y, stride), detection)`.
pub(crate) fn visit_candidates(
    outputs: &HeadOutputs,
    b: usize,
    params: &DetectParams,
    clip_hw: Option<(usize, usize)>,
    mut f: impl FnMut(usize, usize, [f32; 3], Detection),
) {
    let clip = clip_hw.map(|(h, w)| (h as f32, w as f32));
    for (level, lv) in outputs.levels.iter().enumerate() {
        let (reg, hw, width) = (lv.reg_of(b), lv.height() * lv.width(), lv.width());
        let stride = lv.stride as f32;
        for (s, p, c) in level_candidates(lv.cls_of(b), lv.dims[1], params) {
            let point = [(p % width) as f32 * stride, (p / width) as f32 * stride];
            let d = [reg[p], reg[hw + p], reg[2 * hw + p], reg[3 * hw + p]];
            let det = Detection { bbox: distance_point::decode(point, d, clip), score: s, label: c };
            f(level, p, [point[0], point[1], stride], det);
        }
    }
}

/// The candidates of one level: every (prior, class) of `cls` (`[C, H, W]` logits) with
/// `sigmoid(logit) > score_thr`, the best `nms_pre` of them, as `(score, prior, class)`
/// score-descending (ties in (prior, class) order).
pub(crate) fn level_candidates(cls: &[f32], num_classes: usize, params: &DetectParams) -> Vec<(f32, usize, usize)> {
    let hw = cls.len() / num_classes.max(1);
    // (score, prior, class) in (prior, class) row-major order, as torch.nonzero lists them.
    // Logits clearly below the threshold's logit skip the exp; the test itself is exact.
    let floor = logit(params.score_thr) - 1e-3;
    let mut cands: Vec<(f32, usize, usize)> = Vec::new();
    for p in 0..hw {
        for c in 0..num_classes {
            let x = cls[c * hw + p];
            if x > floor || floor.is_nan() {
                let s = sigmoid(x);
                if s > params.score_thr {
                    cands.push((s, p, c));
                }
            }
        }
    }
    keep_best_stable(&mut cands, params.nms_pre);
    cands
}

/// Maps input-space boxes to the original image: multiply by float32(1 / scale_factor).
pub fn rescale(set: &mut Instances, lb: &Letterbox) {
    let (sx, sy) = ((1.0 / lb.scale_factor.0) as f32, (1.0 / lb.scale_factor.1) as f32);
    for b in &mut set.boxes {
        boxes::scale(b, sx, sy);
    }
}

/// Removes boxes whose width or height is not strictly positive, keeping order.
pub fn drop_empty(set: &mut Instances) {
    let keep: Vec<bool> = set.boxes.iter().map(boxes::is_non_empty).collect();
    set.retain(&keep);
}

/// NMS then the `max_det` cut; detections in descending score order.
pub fn nms_and_limit(set: &Instances, params: &DetectParams) -> Instances {
    set.select(&nms::batched_nms_top(&set.boxes, &set.scores, &set.labels, params.iou_thr, params.max_det))
}

/// The whole post-processing of image `b` of a batch. With `letterbox`, boxes are rescaled to
/// the original image before NMS (as mmdet does); without, they stay in input pixels.
pub fn postprocess(
    outputs: &HeadOutputs,
    b: usize,
    params: &DetectParams,
    clip_hw: Option<(usize, usize)>,
    letterbox: Option<&Letterbox>,
) -> Instances {
    let mut set = select_candidates(outputs, b, params, clip_hw);
    if let Some(lb) = letterbox {
        rescale(&mut set, lb);
    }
    drop_empty(&mut set);
    nms_and_limit(&set, params)
}
