//! Training losses of RTMDet: [`quality_focal`] for classification, [`giou`] (RTMDet) and
//! [`rotated_iou`] (RTMDet-R) for boxes, all burn tensor functions, so gradients flow through
//! them. [`detection`] and [`rotated`] assemble them into a batch's loss (the shared part is
//! in `dense`); [`ins`] adds RTMDet-Ins's dice mask loss to the detection loss.

mod dense;
pub mod detection;
pub mod giou;
pub mod ins;
pub mod quality_focal;
pub mod rotated;
pub mod rotated_iou;

pub use dense::DetectionLoss;

/// `float32` machine epsilon, which mmdet adds to every `avg_factor`.
pub const AVG_EPS: f32 = f32::EPSILON;
