//! Training losses of RTMDet: [`quality_focal`] for classification, [`giou`] for boxes.
//! Both are burn tensor functions, so gradients flow through them.

pub mod detection;
pub mod giou;
pub mod quality_focal;

/// `float32` machine epsilon, which mmdet adds to every `avg_factor`.
pub const AVG_EPS: f32 = f32::EPSILON;
