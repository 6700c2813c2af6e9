//! Value types every stage shares: axis-aligned boxes and the one overlap family
//! ([`boxes`]), rotated boxes with rotated IoU and NMS ([`rotated`]), DOTA quadrilaterals and their
//! OpenCV-exact conversion to rotated boxes ([`quad`]), instance masks with COCO
//! RLE ([`mask`]) and sets of instances ([`instances`]).

pub mod boxes;
pub mod instances;
pub mod mask;
pub mod quad;
pub mod rotated;

pub use boxes::{Bbox, OverlapMode};
pub use instances::{Detection, Instances};
