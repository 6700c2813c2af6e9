//! RTMDetSepBNHead (spec §5): per level, a classification tower + 1×1 `rtm_cls` and a
//! regression tower + 1×1 `rtm_reg`. The towers' 3×3 conv weights are shared across levels
//! with a BatchNorm per level (`share_conv`, tiny..x), or separate per level (nano, and
//! models imported from BN-folded ONNX graphs).
//!
//! Every task builds its head from these towers; the task only adds predictors (RTMDet-Ins
//! kernels and mask features, RTMDet-R angles).

use super::blocks::conv;
use super::graph::{ConvParam, GraphBuilder, Init, LevelNodes, NodeId};
use super::params::join;
use crate::config::{ModelConfig, STRIDES, Task};

/// Prior probability 0.01 for the classifier bias, as in mmdet's init.
const CLS_PRIOR_BIAS: f32 = -4.59512;

/// mmdet's init of the 1×1 predictors.
const PREDICTOR_STD: f64 = 0.01;

/// The conv stack of one branch (`cls_convs` / `reg_convs`) across levels.
struct Tower {
    prefix: String,
    /// The shared conv parameters, created at level 0 (`share_conv` only).
    shared: Vec<usize>,
}

impl Tower {
    fn new(prefix: &str) -> Self {
        Tower { prefix: format!("bbox_head.{prefix}"), shared: Vec::new() }
    }

    /// `[N, in, H, W]` → `[N, feat, H, W]` at `level`, under mmdet's `{prefix}.{level}.{i}` names.
    fn build(&mut self, b: &mut GraphBuilder, cfg: &ModelConfig, level: usize, x: NodeId) -> NodeId {
        let c = cfg.neck_channels;
        let mut y = x;
        for i in 0..cfg.stacked_convs {
            let name = format!("{}.{level}.{i}", self.prefix);
            y = if !cfg.share_conv {
                conv(b, &name, y, c, 3, 1, cfg.use_depthwise)
            } else {
                if level == 0 {
                    let param = ConvParam {
                        weight: (0..STRIDES.len()).map(|n| format!("{}.{n}.{i}.conv.weight", self.prefix)).collect(),
                        bias: None,
                        cin: b.channels(y),
                        cout: c,
                        k: 3,
                        stride: 1,
                        groups: 1,
                        init: Init::Default,
                    };
                    let id = b.conv_param(param);
                    self.shared.push(id);
                }
                b.conv_module_with(&name, y, self.shared[i])
            };
        }
        y
    }
}

/// The head on neck features `[P3, P4, P5]`: per level, in PyTorch order, the cls tower,
/// `rtm_cls`, the reg tower, `rtm_reg`, and the task's predictors (RTMDet-R: `rtm_ang` on the
/// reg tower).
pub fn build(b: &mut GraphBuilder, cfg: &ModelConfig, feats: [NodeId; 3]) -> Vec<LevelNodes> {
    let (mut cls_tower, mut reg_tower) = (Tower::new("cls_convs"), Tower::new("reg_convs"));
    let mut levels = Vec::new();
    for (level, x) in feats.into_iter().enumerate() {
        let c = cls_tower.build(b, cfg, level, x);
        let cls_init = Init::Normal { std: PREDICTOR_STD, bias: CLS_PRIOR_BIAS };
        let cls = b.biased_conv(&join("bbox_head.rtm_cls", level), c, cfg.num_classes, 1, cls_init);
        let r = reg_tower.build(b, cfg, level, x);
        let reg_init = Init::Normal { std: PREDICTOR_STD, bias: 0.0 };
        let reg = b.biased_conv(&join("bbox_head.rtm_reg", level), r, 4, 1, reg_init);
        let angle =
            (cfg.task == Task::Rotated).then(|| b.biased_conv(&join("bbox_head.rtm_ang", level), r, 1, 1, reg_init));
        levels.push(LevelNodes { stride: STRIDES[level], cls, reg, angle });
    }
    levels
}
