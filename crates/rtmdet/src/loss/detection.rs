//! RTMDet's `loss_by_feat` (spec §9.2, reference quirk 12): the shared `dense` loss with
//! axis-aligned boxes, decoded as prior ± distances and regressed with GIoU.

use burn::tensor::Tensor;

pub use super::dense::DetectionLoss;
use super::dense::{BoxKind, dense_loss};
use super::giou::giou_loss;
use crate::assign::DynamicSoftLabelAssigner;
use crate::coders::distance_point;
use crate::model::LevelTensors;
use crate::structures::Instances;
use crate::structures::boxes::Bbox;

/// Axis-aligned xyxy boxes.
pub(crate) struct Horizontal;

impl BoxKind for Horizontal {
    type Box = Bbox;
    const WIDTH: usize = 4;

    fn decode(level: &LevelTensors, points: &[[f32; 2]]) -> Tensor<3> {
        let [n, _, h, w] = level.reg.dims();
        let d = level.reg.clone().reshape([n, 4, h * w]).swap_dims(1, 2);
        distance_point::decode_tensor(points, d)
    }

    fn host_box(row: &[f32]) -> Bbox {
        [row[0], row[1], row[2], row[3]]
    }

    fn gt_boxes(t: &Instances) -> Vec<Bbox> {
        t.boxes.clone()
    }

    fn target(gt: &Bbox) -> Vec<f32> {
        gt.to_vec()
    }

    fn box_loss(pred: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
        giou_loss(pred, target, 1e-6)
    }
}

/// Computes the training loss of head `outputs` (one entry per level, batch `N`) against the
/// objects of the `N` images (input pixels).
pub fn detection_loss(
    outputs: &[LevelTensors],
    targets: &[Instances],
    assigner: &DynamicSoftLabelAssigner,
) -> DetectionLoss {
    dense_loss::<Horizontal>(outputs, targets, assigner)
}
