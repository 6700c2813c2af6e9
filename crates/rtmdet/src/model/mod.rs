//! Predictor `[head, neck, backbone]` of RTMDet: one definition for every size and variant,
//! running on whatever burn device its tensors live on.

pub mod head;

pub mod backbone;
pub mod blocks;
pub mod neck;
pub mod norm;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use head::detect::{DetectHead, LevelOutput};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::{ParamVisitor, VisitWeights, join};
use backbone::CspNext;
use blocks::NormCfg;
use neck::CspNextPafpn;

#[derive(Module, Debug)]
pub struct RtmDet {
    pub backbone: CspNext,
    pub neck: CspNextPafpn,
    pub bbox_head: DetectHead,
}

impl RtmDet {
    /// A randomly initialised model (weights as mmdet initialises them).
    pub fn new(cfg: &ModelConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let norm = NormCfg { eps: cfg.bn_eps, momentum: cfg.bn_momentum };
        Ok(RtmDet {
            backbone: CspNext::new(cfg, norm, device),
            neck: CspNextPafpn::new(cfg, norm, device),
            bbox_head: DetectHead::new(cfg, norm, device),
        })
    }

    /// Network input `[N, 3, H, W]` (normalised BGR) → neck features `[P3, P4, P5]`.
    pub fn features(&self, x: Tensor<4>) -> [Tensor<4>; 3] {
        self.neck.forward(self.backbone.forward(x))
    }

    /// Network input `[N, 3, H, W]` → raw head outputs per level (strides 8, 16, 32).
    pub fn forward(&self, x: Tensor<4>) -> Vec<LevelOutput> {
        self.bbox_head.forward(self.features(x))
    }
}

impl VisitWeights for RtmDet {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        self.backbone.visit_weights(&join(prefix, "backbone"), v)?;
        self.neck.visit_weights(&join(prefix, "neck"), v)?;
        self.bbox_head.visit_weights(&join(prefix, "bbox_head"), v)
    }
}
