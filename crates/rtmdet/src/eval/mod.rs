//! Evaluation: COCO box mAP with pycocotools' exact semantics ([`coco`]).

pub mod coco;
pub mod coco_files;
pub mod confusion;
pub mod dota;
pub mod validate;
