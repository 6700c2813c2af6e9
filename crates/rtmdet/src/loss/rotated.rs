//! RTMDet-R's `loss_by_feat` (mmrotate `RotatedRTMDetHead`, spec §11.3, reference quirks 1,
//! 5, 6 and 11): the shared `dense` loss with rotated boxes. Predictions are decoded with the
//! distance-angle coder (θ wrapped into le90 range, w and h as predicted); the assigner sees
//! them detached, with the logits, and the ground truth as given; the box loss is
//! [`rotated_iou_loss`] against the le90-regularised assigned ground truth. There is no angle
//! loss.

use burn::tensor::Tensor;

use super::dense::{BoxKind, DetectionLoss, dense_loss};
use super::rotated_iou::rotated_iou_loss;
use crate::assign::DynamicSoftLabelAssigner;
use crate::coders::distance_angle;
use crate::model::LevelTensors;
use crate::structures::Instances;
use crate::structures::rotated::RBox;

/// Rotated boxes `(cx, cy, w, h, θ)`.
struct Rotated;

impl BoxKind for Rotated {
    type Box = RBox;
    const WIDTH: usize = 5;

    fn decode(level: &LevelTensors, points: &[[f32; 2]]) -> Tensor<3> {
        let [n, _, h, w] = level.reg.dims();
        let d = level.reg.clone().reshape([n, 4, h * w]).swap_dims(1, 2);
        let angle = level.angle.clone().expect("rotated_loss needs the head's angle outputs (an RTMDet-R model)");
        let a = angle.reshape([n, 1, h * w]).swap_dims(1, 2);
        distance_angle::decode_tensor(points, d, a)
    }

    fn host_box(row: &[f32]) -> RBox {
        [row[0], row[1], row[2], row[3], row[4]]
    }

    fn gt_boxes(t: &Instances) -> Vec<RBox> {
        t.rboxes.clone()
    }

    /// mmrotate regularises the assigned gts (w ≥ h, θ in le90 range); the predictions are
    /// not, which the IoU does not notice.
    fn target(gt: &RBox) -> Vec<f32> {
        distance_angle::regularize_le90(gt).to_vec()
    }

    fn box_loss(pred: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
        rotated_iou_loss(pred, target, 1e-6)
    }
}

/// The training loss of RTMDet-R head `outputs` (one entry per level, batch `N`, with
/// angles) against the rotated objects (`rboxes`, `labels`) of the `N` images, in input
/// pixels.
pub fn rotated_loss(
    outputs: &[LevelTensors],
    targets: &[Instances],
    assigner: &DynamicSoftLabelAssigner,
) -> DetectionLoss {
    // Without rotated boxes the assigner would see no objects and train everything as background.
    assert!(
        targets.iter().all(|t| t.rboxes.len() == t.labels.len()),
        "rotated_loss needs the rotated boxes of the targets (Instances::rotated_targets)"
    );
    dense_loss::<Rotated>(outputs, targets, assigner)
}
