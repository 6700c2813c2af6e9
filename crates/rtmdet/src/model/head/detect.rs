//! RTMDetSepBNHead (spec §5): per level, a classification tower + 1×1 `rtm_cls` and a
//! regression tower + 1×1 `rtm_reg`. Distances are `raw·stride` or `exp(raw)·stride`.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use super::tower::{Tower, TowerSpec, visit_predictor};
use crate::config::{ModelConfig, STRIDES};
use crate::error::Result;
use crate::model::blocks::NormCfg;
use crate::weights::{ParamVisitor, VisitWeights, join};

/// Raw outputs of one pyramid level.
#[derive(Clone, Debug)]
pub struct LevelOutput {
    /// Classification logits `[N, num_classes, H, W]`.
    pub cls: Tensor<4>,
    /// `rtm_reg` output before exp / stride scaling, `[N, 4, H, W]`.
    pub reg_raw: Tensor<4>,
    /// Distances (left, top, right, bottom) in input pixels, `[N, 4, H, W]`.
    pub reg: Tensor<4>,
    pub stride: usize,
}

#[derive(Module, Debug)]
pub struct DetectHead {
    pub cls_convs: Tower,
    pub reg_convs: Tower,
    pub rtm_cls: Vec<Conv2d>,
    pub rtm_reg: Vec<Conv2d>,
    pub exp_on_reg: bool,
}

/// Prior probability 0.01 for the classifier bias, as in mmdet's init.
const CLS_PRIOR_BIAS: f32 = -4.59512;

fn predictor(c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [1, 1]).with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 }).init(device)
}

impl DetectHead {
    pub fn new(cfg: &ModelConfig, norm: NormCfg, device: &Device) -> Self {
        let spec = TowerSpec {
            in_channels: cfg.neck_channels,
            feat_channels: cfg.neck_channels,
            stacked_convs: cfg.stacked_convs,
            levels: STRIDES.len(),
            shared: cfg.share_conv,
            depthwise: cfg.use_depthwise,
        };
        let c = cfg.neck_channels;
        let rtm_cls = (0..spec.levels)
            .map(|_| {
                let mut conv = predictor(c, cfg.num_classes, device);
                conv.bias = Some(Param::from_tensor(Tensor::full([cfg.num_classes], CLS_PRIOR_BIAS, device)));
                conv
            })
            .collect();
        DetectHead {
            cls_convs: Tower::new(spec, norm, device),
            reg_convs: Tower::new(spec, norm, device),
            rtm_cls,
            rtm_reg: (0..spec.levels).map(|_| predictor(c, 4, device)).collect(),
            exp_on_reg: cfg.exp_on_reg,
        }
    }

    /// Neck features `[P3, P4, P5]` → one [`LevelOutput`] per level.
    pub fn forward(&self, feats: [Tensor<4>; 3]) -> Vec<LevelOutput> {
        feats
            .into_iter()
            .enumerate()
            .map(|(level, x)| {
                let stride = STRIDES[level];
                let cls = self.rtm_cls[level].forward(self.cls_convs.forward(level, x.clone()));
                let reg_raw = self.rtm_reg[level].forward(self.reg_convs.forward(level, x));
                let scaled = if self.exp_on_reg { reg_raw.clone().exp() } else { reg_raw.clone() };
                LevelOutput { cls, reg: scaled.mul_scalar(stride as f32), reg_raw, stride }
            })
            .collect()
    }
}

impl VisitWeights for DetectHead {
    /// Per level in PyTorch order: cls tower, `rtm_cls`, reg tower, `rtm_reg`.
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        for level in 0..self.rtm_cls.len() {
            self.cls_convs.visit_level(level, &join(prefix, "cls_convs"), v)?;
            visit_predictor(&mut self.rtm_cls, level, &join(prefix, "rtm_cls"), v)?;
            self.reg_convs.visit_level(level, &join(prefix, "reg_convs"), v)?;
            visit_predictor(&mut self.rtm_reg, level, &join(prefix, "rtm_reg"), v)?;
        }
        Ok(())
    }
}
