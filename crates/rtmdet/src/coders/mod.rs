//! Box coders: one encoder/decoder per coder, used by post-processing, training and the
//! engines alike. [`distance_point`] (RTMDet, RTMDet-Ins): distances `(l, t, r, b)` from a
//! prior point; [`distance_angle`] (RTMDet-R): the same plus an angle, giving rotated boxes.

pub mod distance_angle;
pub mod distance_point;
