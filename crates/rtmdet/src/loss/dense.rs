//! What RTMDet's and RTMDet-R's `loss_by_feat` share (spec §9.2, §11.3): flatten the
//! levels, assign every image on detached predictions, then per level QualityFocalLoss over
//! all priors and a box loss over the positives (weighted by their IoU target, weight 2), each
//! divided by `1 + eps`, and all terms divided by the global `max(1, Σ IoU targets)`. The box
//! type ([`BoxKind`]) supplies only the decoding, the targets and the box loss.

use burn::tensor::{Int, Tensor, TensorData};

use super::AVG_EPS;
use super::quality_focal::quality_focal_loss;
use crate::assign::dynamic_soft::AssignBox;
use crate::assign::{AssignResult, DynamicSoftLabelAssigner};
use crate::model::LevelTensors;
use crate::model::params::to_vec;
use crate::priors::grid_priors;
use crate::structures::Instances;

/// The loss of a batch and what it was made of.
pub struct DetectionLoss {
    /// `Σ levels (cls + bbox)`: the scalar to differentiate.
    pub total: Tensor<1>,
    /// Per level, already normalised.
    pub cls: Vec<Tensor<1>>,
    pub bbox: Vec<Tensor<1>>,
    pub assignments: Vec<AssignResult>,
    /// `max(1, Σ IoU targets)`.
    pub avg_factor: f32,
    pub num_positives: usize,
}

impl DetectionLoss {
    /// The batch's loss terms as numbers, named as [`crate::config::Task::loss_terms`] names
    /// them: `loss_cls` and `loss_bbox` summed over levels.
    pub fn terms(&self) -> Vec<f64> {
        let sum = |ts: &[Tensor<1>]| ts.iter().map(|t| to_vec(t)[0] as f64).sum::<f64>();
        vec![sum(&self.cls), sum(&self.bbox)]
    }
}

/// What distinguishes one box type's loss: axis-aligned (GIoU) or rotated (rotated IoU).
pub(crate) trait BoxKind {
    /// The assigner's box.
    type Box: AssignBox;
    /// Values per decoded box and per regression target.
    const WIDTH: usize;
    /// Decoded, unclamped boxes `[N, HW, WIDTH]` of one level with prior points `points`,
    /// differentiable in the level's outputs.
    fn decode(level: &LevelTensors, points: &[[f32; 2]]) -> Tensor<3>;
    /// The assigner's view of one detached decoded row.
    fn host_box(row: &[f32]) -> Self::Box;
    /// The ground-truth boxes of an image.
    fn gt_boxes(t: &Instances) -> Vec<Self::Box>;
    /// The regression target of an assigned ground truth (`WIDTH` values).
    fn target(gt: &Self::Box) -> Vec<f32>;
    /// Unweighted loss `[K]` of positive predictions against their targets, both `[K, WIDTH]`.
    fn box_loss(pred: Tensor<2>, target: Tensor<2>) -> Tensor<1>;
}

/// Weight of the box term in RTMDet and RTMDet-R (`loss_bbox.loss_weight`).
const BOX_LOSS_WEIGHT: f32 = 2.0;

/// The loss of head `outputs` (one entry per level, batch `N`) against the objects of the
/// `N` images (input pixels), with box type `K`.
pub(crate) fn dense_loss<K: BoxKind>(
    outputs: &[LevelTensors],
    targets: &[Instances],
    assigner: &DynamicSoftLabelAssigner,
) -> DetectionLoss {
    let device = outputs[0].cls.device();
    let [n, c, _, _] = outputs[0].cls.dims();
    let width = K::WIDTH;
    let sizes: Vec<(usize, usize)> = outputs.iter().map(|o| (o.cls.dims()[2], o.cls.dims()[3])).collect();
    let strides: Vec<usize> = outputs.iter().map(|o| o.stride).collect();
    let priors = grid_priors(&sizes, &strides);
    let p = priors.len();

    // [N, HW, C] logits and [N, HW, WIDTH] decoded boxes per level.
    let flat_cls: Vec<Tensor<3>> = outputs
        .iter()
        .map(|o| {
            let [_, _, h, w] = o.cls.dims();
            o.cls.clone().reshape([n, c, h * w]).swap_dims(1, 2)
        })
        .collect();
    let mut offset = 0;
    let flat_boxes: Vec<Tensor<3>> = outputs
        .iter()
        .map(|o| {
            let [_, _, h, w] = o.cls.dims();
            let points: Vec<[f32; 2]> = priors[offset..offset + h * w].iter().map(|q| [q[0], q[1]]).collect();
            offset += h * w;
            K::decode(o, &points)
        })
        .collect();

    // Assignment on detached values, per image.
    let all_logits = to_vec(&Tensor::cat(flat_cls.clone(), 1)); // [N, P, C]
    let all_boxes = to_vec(&Tensor::cat(flat_boxes.clone(), 1)); // [N, P, WIDTH]
    let mut assignments = Vec::with_capacity(n);
    let mut labels = vec![c as i64; n * p];
    let mut metrics = vec![0f32; n * p];
    let mut box_targets = vec![0f32; n * p * width];
    for (b, t) in targets.iter().enumerate() {
        let boxes: Vec<K::Box> = all_boxes[b * p * width..(b + 1) * p * width].chunks(width).map(K::host_box).collect();
        let gts = K::gt_boxes(t);
        let r = assigner.assign(&priors, &all_logits[b * p * c..(b + 1) * p * c], &boxes, &gts, &t.labels);
        for i in 0..p {
            let g = r.gt_inds[i];
            if g > 0 {
                let j = (g - 1) as usize;
                let at = b * p + i;
                labels[at] = t.labels[j] as i64;
                metrics[at] = r.max_overlaps[i];
                box_targets[at * width..(at + 1) * width].copy_from_slice(&K::target(&gts[j]));
            }
        }
        assignments.push(r);
    }
    let avg_factor = metrics.iter().sum::<f32>().max(1.0);
    let num_positives = labels.iter().filter(|&&l| l < c as i64).count();

    let (mut cls, mut bbox) = (Vec::new(), Vec::new());
    let mut start = 0;
    for (lv, (logits, boxes)) in flat_cls.into_iter().zip(flat_boxes).enumerate() {
        let hw = sizes[lv].0 * sizes[lv].1;
        // Targets of this level, images concatenated in mmdet's (image, prior) order.
        let pick = |v: &[f32], width: usize| -> Vec<f32> {
            (0..n).flat_map(|b| v[(b * p + start) * width..(b * p + start + hw) * width].to_vec()).collect()
        };
        let lv_labels: Vec<i64> = (0..n).flat_map(|b| labels[b * p + start..b * p + start + hw].to_vec()).collect();
        let lv_metrics = pick(&metrics, 1);
        let lv_targets = pick(&box_targets, width);

        let logits = logits.reshape([n * hw, c]);
        let l = Tensor::<1, Int>::from_data(TensorData::new(lv_labels.clone(), [n * hw]), &device);
        let m = Tensor::<1>::from_data(TensorData::new(lv_metrics.clone(), [n * hw]), &device);
        let loss_cls = quality_focal_loss(logits, l, m, 2.0).sum().div_scalar(1.0 + AVG_EPS).div_scalar(avg_factor);

        let pos: Vec<i64> =
            lv_labels.iter().enumerate().filter(|(_, l)| **l < c as i64).map(|(i, _)| i as i64).collect();
        // A level without positives still contributes 0·Σ boxes, so every head output gets a
        // (zero) gradient, as mmdet's `bbox_pred.sum() * 0`.
        let loss_bbox = if pos.is_empty() {
            boxes.sum().mul_scalar(0.0)
        } else {
            let k = pos.len();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(pos.clone(), [k]), &device);
            let pred = boxes.reshape([n * hw, width]).select(0, idx);
            let tgt: Vec<f32> =
                pos.iter().flat_map(|&i| lv_targets[i as usize * width..(i as usize + 1) * width].to_vec()).collect();
            let w: Vec<f32> = pos.iter().map(|&i| lv_metrics[i as usize]).collect();
            let tgt = Tensor::<2>::from_data(TensorData::new(tgt, [k, width]), &device);
            let w = Tensor::<1>::from_data(TensorData::new(w, [k]), &device);
            (K::box_loss(pred, tgt) * w)
                .sum()
                .div_scalar(1.0 + AVG_EPS)
                .mul_scalar(BOX_LOSS_WEIGHT)
                .div_scalar(avg_factor)
        };
        cls.push(loss_cls);
        bbox.push(loss_bbox);
        start += hw;
    }
    let total = cls.iter().chain(&bbox).cloned().reduce(|a, b| a + b).expect("at least one level");
    DetectionLoss { total, cls, bbox, assignments, avg_factor, num_positives }
}
