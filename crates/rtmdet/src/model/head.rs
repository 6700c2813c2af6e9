//! RTMDetSepBNHead (spec §5): per level, a classification tower + 1×1 `rtm_cls` and a
//! regression tower + 1×1 `rtm_reg`. The towers' 3×3 conv weights are shared across levels
//! with a BatchNorm per level (`share_conv`, tiny..x), or separate per level (nano, and
//! models imported from BN-folded ONNX graphs).
//!
//! Every task builds its head from these towers; the task only adds predictors: RTMDet-R an
//! angle on the regression tower; RTMDet-Ins (spec §10.1) a kernel tower per level (never
//! shared) with `rtm_kernel`, ReLU distances, and the mask feature module on P3–P5. The Ins
//! head keeps an upstream quirk every released checkpoint was trained with: its regression
//! tower *is* the classification tower (mmdet #9835), so `rtm_reg` reads the cls tower and the
//! checkpoint's `reg_convs` copies are aliases.

use super::blocks::conv;
use super::graph::{ConvParam, GraphBuilder, HeadNodes, Init, LevelNodes, NodeId};
use super::params::join;
use crate::config::{ModelConfig, STRIDES, Task};

/// Prior probability 0.01 for the classifier bias, as in mmdet's init.
const CLS_PRIOR_BIAS: f32 = -4.59512;

/// mmdet's init of the 1×1 predictors.
const PREDICTOR_STD: f64 = 0.01;

/// Prototype masks of RTMDet-Ins (`num_prototypes`).
pub const NUM_PROTOTYPES: usize = 8;

/// Dynamic-conv parameters per prior: weights 10·8 + 8·8 + 8·1, biases 8 + 8 + 1.
pub const KERNEL_PARAMS: usize = 169;

/// Width of the per-instance dynamic convs (`dyconv_channels`).
pub const DYCONV_CHANNELS: usize = 8;

/// Input pixels per prototype pixel (the mask features sit at P3's stride).
pub const MASK_FEAT_STRIDE: usize = 8;

/// ConvModules of the mask feature module.
const MASK_STACKED_CONVS: usize = 4;

/// The conv stack of one branch (`cls_convs` / `reg_convs` / `kernel_convs`) across levels.
struct Tower {
    prefix: String,
    /// Conv weights shared across levels (`share_conv`, never for Ins kernel towers).
    share: bool,
    /// The shared conv parameters, created at level 0.
    shared: Vec<usize>,
}

impl Tower {
    fn new(prefix: &str, share: bool) -> Self {
        Tower { prefix: format!("bbox_head.{prefix}"), share, shared: Vec::new() }
    }

    /// `[N, in, H, W]` → `[N, feat, H, W]` at `level`, under mmdet's `{prefix}.{level}.{i}` names.
    fn build(&mut self, b: &mut GraphBuilder, cfg: &ModelConfig, level: usize, x: NodeId) -> NodeId {
        let c = cfg.neck_channels;
        let mut y = x;
        for i in 0..cfg.stacked_convs {
            let name = format!("{}.{level}.{i}", self.prefix);
            y = if !self.share {
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
/// reg tower; RTMDet-Ins: the kernel tower and `rtm_kernel`), then the Ins mask features.
pub fn build(b: &mut GraphBuilder, cfg: &ModelConfig, feats: [NodeId; 3]) -> HeadNodes {
    let ins = cfg.task == Task::Segment;
    let mut cls_tower = Tower::new("cls_convs", cfg.share_conv);
    let mut reg_tower = Tower::new("reg_convs", cfg.share_conv);
    let mut kernel_tower = Tower::new("kernel_convs", false);
    let mut levels = Vec::new();
    for (level, x) in feats.into_iter().enumerate() {
        let c = cls_tower.build(b, cfg, level, x);
        let cls_init = Init::Normal { std: PREDICTOR_STD, bias: CLS_PRIOR_BIAS };
        let cls = b.biased_conv(&join("bbox_head.rtm_cls", level), c, cfg.num_classes, 1, cls_init);
        let r = if ins { c } else { reg_tower.build(b, cfg, level, x) };
        let reg_init = Init::Normal { std: PREDICTOR_STD, bias: if ins { 1.0 } else { 0.0 } };
        let mut reg = b.biased_conv(&join("bbox_head.rtm_reg", level), r, 4, 1, reg_init);
        if ins {
            reg = b.relu(reg, &join("bbox_head.rtm_reg", level));
        }
        let angle =
            (cfg.task == Task::Rotated).then(|| b.biased_conv(&join("bbox_head.rtm_ang", level), r, 1, 1, reg_init));
        let kernel = ins.then(|| {
            let k = kernel_tower.build(b, cfg, level, x);
            let init = Init::Normal { std: PREDICTOR_STD, bias: 0.0 };
            b.biased_conv(&join("bbox_head.rtm_kernel", level), k, KERNEL_PARAMS, 1, init)
        });
        levels.push(LevelNodes { stride: STRIDES[level], cls, reg, angle, kernel });
    }
    HeadNodes {
        levels,
        mask_feat: ins.then(|| mask_features(b, cfg, feats)),
        aliases: if ins { reg_tower_aliases(cfg) } else { Vec::new() },
    }
}

/// `MaskFeatModule`: P4 and P5 resized to P3, concatenated, fused by a 1×1 conv, four
/// ConvModules, projected to the prototypes `[N, 8, H/8, W/8]`.
fn mask_features(b: &mut GraphBuilder, cfg: &ModelConfig, [p3, p4, p5]: [NodeId; 3]) -> NodeId {
    let pre = "bbox_head.mask_head";
    let up4 = b.resize_bilinear_like(p4, p3, pre);
    let up5 = b.resize_bilinear_like(p5, p3, pre);
    let cat = b.concat(vec![p3, up4, up5], pre);
    let mut y = b.biased_conv(&join(pre, "fusion_conv"), cat, cfg.neck_channels, 1, Init::Default);
    for i in 0..MASK_STACKED_CONVS {
        y = b.conv_module(&format!("{pre}.stacked_convs.{i}"), y, cfg.neck_channels, 3, 1, 1);
    }
    b.biased_conv(&join(pre, "projection"), y, NUM_PROTOTYPES, 1, Init::Default)
}

/// The checkpoint names of RTMDet-Ins's `reg_convs`, which are the `cls_convs` modules.
fn reg_tower_aliases(cfg: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    for level in 0..STRIDES.len() {
        for i in 0..cfg.stacked_convs {
            let m = format!("bbox_head.reg_convs.{level}.{i}");
            out.push(format!("{m}.conv.weight"));
            for f in ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"] {
                out.push(format!("{m}.bn.{f}"));
            }
        }
    }
    out
}
