//! DOTA mAP as mmrotate computes it (`eval_rbbox_map`, what `DOTAMetric` reports): per class,
//! detections of all images sorted by score are matched greedily to the ground truth of their
//! image by rotated IoU (mmcv's `box_iou_rotated`), difficult objects are ignored (a detection
//! on one counts neither way), and AP is the VOC07 11-point or the area under the envelope of
//! the precision/recall curve. The mean is over classes that have ground truth.
//!
//! The float types follow the original (numpy): tp/fp and precision in float32, recall in
//! float64, the 11-point sum and the AP in float32, the area sum in float64.

use crate::structures::rotated::{OverlapMode, RBox, rotated_overlaps};

/// The objects of one image: rotated boxes, labels, and which are ignored (difficult).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RotatedGroundTruth {
    pub boxes: Vec<RBox>,
    pub labels: Vec<usize>,
    pub ignored: Vec<bool>,
}

/// The detections of one image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RotatedDetections {
    pub boxes: Vec<RBox>,
    pub scores: Vec<f64>,
    pub labels: Vec<usize>,
}

impl From<&crate::structures::Instances> for RotatedDetections {
    fn from(s: &crate::structures::Instances) -> Self {
        RotatedDetections {
            boxes: s.rboxes.clone(),
            scores: s.scores.iter().map(|&v| v as f64).collect(),
            labels: s.labels.clone(),
        }
    }
}

/// How AP summarises a precision/recall curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApMode {
    /// VOC2007's mean of the best precision at recall ≥ 0, 0.1, ..., 1 (DOTAMetric's default).
    ElevenPoints,
    /// The area under the monotone precision envelope.
    Area,
}

/// One class's result.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassAp {
    pub num_gts: usize,
    pub num_dets: usize,
    /// Recall after each detection, score-descending.
    pub recall: Vec<f64>,
    pub precision: Vec<f32>,
    pub ap: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DotaEval {
    /// Mean AP over the classes with ground truth (0 when none has).
    pub map: f32,
    pub classes: Vec<ClassAp>,
}

/// Indices of `scores` from the highest down (ties keep their order).
fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// mmrotate's `tpfp_default` for one image and class: `(tp, fp)` per detection, in the given
/// detection order. Ground truth is `(box, ignored)`.
pub fn tpfp(dets: &[RBox], scores: &[f64], gts: &[(RBox, bool)], iou_thr: f32) -> (Vec<f32>, Vec<f32>) {
    let n = dets.len();
    let (mut tp, mut fp) = (vec![0f32; n], vec![0f32; n]);
    if gts.is_empty() {
        fp.fill(1.0);
        return (tp, fp);
    }
    let gt_boxes: Vec<RBox> = gts.iter().map(|g| g.0).collect();
    let ious = rotated_overlaps(dets, &gt_boxes, OverlapMode::Iou);
    let mut covered = vec![false; gts.len()];
    for i in descending(scores) {
        let row = &ious[i * gts.len()..(i + 1) * gts.len()];
        // numpy's max and argmax: the first of equal maxima.
        let (best, iou) =
            row.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (j, &v)| if v > m.1 { (j, v) } else { m });
        if iou >= iou_thr {
            if !gts[best].1 {
                if covered[best] {
                    fp[i] = 1.0;
                } else {
                    covered[best] = true;
                    tp[i] = 1.0;
                }
            }
        } else {
            fp[i] = 1.0;
        }
    }
    (tp, fp)
}

/// mmdet's `average_precision` of one curve.
pub fn average_precision(recall: &[f64], precision: &[f32], mode: ApMode) -> f32 {
    match mode {
        ApMode::ElevenPoints => {
            let mut ap = 0f32;
            for k in 0..11 {
                let thr = k as f64 * 0.1;
                let best = recall
                    .iter()
                    .zip(precision)
                    .filter(|(r, _)| **r >= thr)
                    .map(|(_, p)| *p)
                    .fold(None, |m: Option<f32>, p| Some(m.map_or(p, |m| m.max(p))));
                ap += best.unwrap_or(0.0);
            }
            ap / 11.0
        }
        ApMode::Area => {
            let mrec: Vec<f64> = [0.0].into_iter().chain(recall.iter().copied()).chain([1.0]).collect();
            let mut mpre: Vec<f64> =
                [0.0].into_iter().chain(precision.iter().map(|&p| p as f64)).chain([0.0]).collect();
            for i in (1..mpre.len()).rev() {
                mpre[i - 1] = mpre[i - 1].max(mpre[i]);
            }
            let sum: f64 = (0..mrec.len() - 1)
                .filter(|&i| mrec[i + 1] != mrec[i])
                .map(|i| (mrec[i + 1] - mrec[i]) * mpre[i + 1])
                .sum();
            sum as f32
        }
    }
}

/// DOTA mAP of `dets` against `gts` (one entry per image, in the same order).
pub fn evaluate(
    dets: &[RotatedDetections],
    gts: &[RotatedGroundTruth],
    num_classes: usize,
    iou_thr: f32,
    mode: ApMode,
) -> DotaEval {
    let classes: Vec<ClassAp> = (0..num_classes)
        .map(|c| {
            let (mut tp, mut fp, mut scores) = (Vec::new(), Vec::new(), Vec::new());
            let mut num_gts = 0;
            for (d, g) in dets.iter().zip(gts) {
                let pick = (0..d.labels.len()).filter(|&i| d.labels[i] == c);
                let (boxes, s): (Vec<RBox>, Vec<f64>) = pick.map(|i| (d.boxes[i], d.scores[i])).unzip();
                let objects: Vec<(RBox, bool)> =
                    (0..g.labels.len()).filter(|&j| g.labels[j] == c).map(|j| (g.boxes[j], g.ignored[j])).collect();
                num_gts += objects.iter().filter(|o| !o.1).count();
                let (t, f) = tpfp(&boxes, &s, &objects, iou_thr);
                tp.extend(t);
                fp.extend(f);
                scores.extend(s);
            }
            let order = descending(&scores);
            let (mut ctp, mut cfp) = (0f32, 0f32);
            let (mut recall, mut precision) = (Vec::new(), Vec::new());
            for &i in &order {
                ctp += tp[i];
                cfp += fp[i];
                recall.push(ctp as f64 / (num_gts as f64).max(f32::EPSILON as f64));
                precision.push(ctp / (ctp + cfp).max(f32::EPSILON));
            }
            let ap = average_precision(&recall, &precision, mode);
            ClassAp { num_gts, num_dets: scores.len(), recall, precision, ap }
        })
        .collect();
    let aps: Vec<f32> = classes.iter().filter(|c| c.num_gts > 0).map(|c| c.ap).collect();
    let map = if aps.is_empty() { 0.0 } else { aps.iter().sum::<f32>() / aps.len() as f32 };
    DotaEval { map, classes }
}
