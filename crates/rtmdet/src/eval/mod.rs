//! Evaluation: COCO box mAP with pycocotools' exact semantics ([`coco`]).

pub mod coco;
