//! The per-level conv towers of the SepBN heads: conv weights shared across levels with a
//! BatchNorm per level (`share_conv`, tiny..x), or fully separate per-level convs (nano, and
//! models imported from BN-folded ONNX graphs). Every RTMDet head variant builds its
//! branches from this one type.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::model::blocks::{Conv, NormCfg, batch_norm, conv2d, visit_bn, visit_conv};
use crate::model::norm::BatchNorm2d;
use crate::weights::{ParamVisitor, join};

/// Shape of a tower.
#[derive(Clone, Copy, Debug)]
pub struct TowerSpec {
    pub in_channels: usize,
    pub feat_channels: usize,
    pub stacked_convs: usize,
    pub levels: usize,
    pub shared: bool,
    pub depthwise: bool,
}

/// 3×3 convs shared by all levels, BatchNorm per level.
#[derive(Module, Debug)]
pub struct SharedTower {
    /// `[stacked_convs]`
    pub convs: Vec<Conv2d>,
    /// `[level][stacked_convs]`
    pub norms: Vec<Vec<BatchNorm2d>>,
}

#[derive(Module, Debug)]
pub enum Tower {
    Shared(SharedTower),
    /// `[level][stacked_convs]`
    PerLevel(Vec<Vec<Conv>>),
}

impl Tower {
    pub fn new(spec: TowerSpec, norm: NormCfg, device: &Device) -> Self {
        let c_in = |i: usize| {
            if i == 0 { spec.in_channels } else { spec.feat_channels }
        };
        if spec.shared {
            Tower::Shared(SharedTower {
                convs: (0..spec.stacked_convs)
                    .map(|i| conv2d(c_in(i), spec.feat_channels, 3, 1, 1, false, device))
                    .collect(),
                norms: (0..spec.levels)
                    .map(|_| (0..spec.stacked_convs).map(|_| batch_norm(spec.feat_channels, norm, device)).collect())
                    .collect(),
            })
        } else {
            Tower::PerLevel(
                (0..spec.levels)
                    .map(|_| {
                        (0..spec.stacked_convs)
                            .map(|i| Conv::new(c_in(i), spec.feat_channels, 3, 1, spec.depthwise, norm, device))
                            .collect()
                    })
                    .collect(),
            )
        }
    }

    /// `[N, in, H, W]` → `[N, feat, H, W]` for pyramid level `level`.
    pub fn forward(&self, level: usize, x: Tensor<4>) -> Tensor<4> {
        match self {
            Tower::Shared(t) => {
                t.convs.iter().zip(&t.norms[level]).fold(x, |x, (conv, bn)| silu(bn.forward(conv.forward(x))))
            }
            Tower::PerLevel(levels) => levels[level].iter().fold(x, |x, c| c.forward(x)),
        }
    }

    pub fn num_levels(&self) -> usize {
        match self {
            Tower::Shared(t) => t.norms.len(),
            Tower::PerLevel(l) => l.len(),
        }
    }

    /// Visits the tensors used at `level` under mmdet's `{prefix}.{level}.{i}` names. A shared
    /// conv is visited once, at level 0, under the names of every level.
    pub fn visit_level<V: ParamVisitor>(&mut self, level: usize, prefix: &str, v: &mut V) -> Result<()> {
        match self {
            Tower::Shared(t) => {
                let levels = t.norms.len();
                for (i, conv) in t.convs.iter_mut().enumerate() {
                    if level == 0 {
                        let names: Vec<String> =
                            (0..levels).map(|n| join(prefix, format!("{n}.{i}.conv.weight"))).collect();
                        v.param(&names, &mut conv.weight)?;
                    }
                    visit_bn(&mut t.norms[level][i], &join(prefix, format!("{level}.{i}.bn")), v)?;
                }
                Ok(())
            }
            Tower::PerLevel(levels) => {
                for (i, c) in levels[level].iter_mut().enumerate() {
                    crate::weights::VisitWeights::visit_weights(c, &join(prefix, format!("{level}.{i}")), v)?;
                }
                Ok(())
            }
        }
    }
}

/// Visits a per-level 1×1 predictor conv (`rtm_cls.{n}`, `rtm_reg.{n}`, ...).
pub fn visit_predictor<V: ParamVisitor>(convs: &mut [Conv2d], level: usize, prefix: &str, v: &mut V) -> Result<()> {
    visit_conv(&mut convs[level], &join(prefix, level), v)
}
