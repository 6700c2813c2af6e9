//! Evaluation: COCO box mAP with pycocotools' exact semantics ([`coco`], files in
//! [`coco_files`]) and DOTA mAP as mmrotate computes it ([`dota`], files in [`dota_files`]).

pub mod coco;
pub mod coco_files;
pub mod confusion;
pub mod dota;
pub mod dota_files;
pub mod validate;
