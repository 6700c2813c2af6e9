//! RTMDet-R post-processing in mmrotate's order (reference README, quirks 3, 7, 8): per level
//! the best `nms_pre` (prior, class) pairs above the score → distance-angle decode (no
//! clamping) → rescale to the original image (`RotatedBoxes.rescale_`) → keep `w > 0` and
//! `h > 0` → class-aware rotated NMS (`IoU ≥ thr` suppresses) → top `max_det`.

use super::{DetectParams, level_candidates};
use crate::coders::distance_angle;
use crate::model::HeadOutputs;
use crate::preprocess::Letterbox;
use crate::structures::Instances;
use crate::structures::rotated::{self, RBox, batched_nms_rotated, enclosing_box};

/// Candidates of image `b` in input pixels: rotated boxes (`rboxes`) with their enclosing
/// axis-aligned boxes (`boxes`), level by level, score-descending within a level.
pub fn select_candidates(outputs: &HeadOutputs, b: usize, params: &DetectParams) -> Instances {
    let mut out = Instances::default();
    for lv in &outputs.levels {
        let (reg, angle) = (lv.reg_of(b), lv.angle_of(b));
        let (hw, width, stride) = (lv.height() * lv.width(), lv.width(), lv.stride as f32);
        for (s, p, c) in level_candidates(lv.cls_of(b), lv.dims[1], params) {
            let point = [(p % width) as f32 * stride, (p / width) as f32 * stride];
            let d = [reg[p], reg[hw + p], reg[2 * hw + p], reg[3 * hw + p]];
            let rbox = distance_angle::decode(point, d, angle.get(p).copied().unwrap_or(0.0));
            out.rboxes.push(rbox);
            out.scores.push(s);
            out.labels.push(c);
        }
    }
    out.boxes = out.rboxes.iter().map(enclosing_box).collect();
    out
}

/// Back to the original image: `RotatedBoxes.rescale_` with `(1/sx, 1/sy)` computed in f64
/// and applied in f32 (quirk 7).
pub fn rescale_rbox(r: &RBox, lb: &Letterbox) -> RBox {
    rotated::rescale(r, (1.0 / lb.scale_factor.0) as f32, (1.0 / lb.scale_factor.1) as f32)
}

/// Rescales every rotated box (and its enclosing box) to the original image.
pub fn rescale(set: &mut Instances, lb: &Letterbox) {
    for r in &mut set.rboxes {
        *r = rescale_rbox(r, lb);
    }
    set.boxes = set.rboxes.iter().map(enclosing_box).collect();
}

/// Removes rotated boxes whose width or height is not strictly positive, keeping order.
pub fn drop_empty(set: &mut Instances) {
    let keep: Vec<bool> = set.rboxes.iter().map(|r| r[2] > 0.0 && r[3] > 0.0).collect();
    set.retain(&keep);
}

/// Class-aware rotated NMS, then the `max_det` cut; score-descending.
pub fn nms_and_limit(set: &Instances, params: &DetectParams) -> Instances {
    let mut keep = batched_nms_rotated(&set.rboxes, &set.scores, &set.labels, params.iou_thr);
    keep.truncate(params.max_det);
    set.select(&keep)
}

/// The whole post-processing of image `b` of a batch. With `letterbox`, boxes are rescaled to
/// the original image before NMS (as mmrotate does); without, they stay in input pixels.
pub fn postprocess(outputs: &HeadOutputs, b: usize, params: &DetectParams, letterbox: Option<&Letterbox>) -> Instances {
    let mut set = select_candidates(outputs, b, params);
    if let Some(lb) = letterbox {
        rescale(&mut set, lb);
    }
    drop_empty(&mut set);
    nms_and_limit(&set, params)
}
