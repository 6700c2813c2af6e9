//! CSPNeXt backbone (P5): stem + 4 stages, returning C3, C4, C5 (strides 8, 16, 32). Spec §3.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::blocks::{Conv, ConvModule, CspLayer, CspLayerSpec, NormCfg, SppBottleneck};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::{ParamVisitor, VisitWeights, join};

/// One stage: a stride-2 conv, an optional SPP (last stage) and a CSPLayer with attention.
#[derive(Module, Debug)]
pub struct Stage {
    pub downsample: Conv,
    pub spp: Option<SppBottleneck>,
    pub csp: CspLayer,
}

impl Stage {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.downsample.forward(x);
        if let Some(spp) = &self.spp {
            x = spp.forward(x);
        }
        self.csp.forward(x)
    }
}

impl VisitWeights for Stage {
    /// mmdet keys: `stage{s}.0` (downsample), `.1` (SPP, last stage), then the CSPLayer.
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        self.downsample.visit_weights(&join(prefix, 0), v)?;
        let mut idx = 1;
        if let Some(spp) = self.spp.as_mut() {
            spp.visit_weights(&join(prefix, idx), v)?;
            idx += 1;
        }
        self.csp.visit_weights(&join(prefix, idx), v)
    }
}

#[derive(Module, Debug)]
pub struct CspNext {
    pub stem: Vec<ConvModule>,
    pub stages: Vec<Stage>,
}

impl CspNext {
    pub fn new(cfg: &ModelConfig, norm: NormCfg, device: &Device) -> Self {
        let (c_half, c_stem) = cfg.stem_channels();
        let stem = vec![
            ConvModule::new(3, c_half, 3, 2, norm, device),
            ConvModule::new(c_half, c_half, 3, 1, norm, device),
            ConvModule::new(c_half, c_stem, 3, 1, norm, device),
        ];
        let stages = cfg
            .stages()
            .iter()
            .map(|s| Stage {
                downsample: Conv::new(s.in_channels, s.out_channels, 3, 2, cfg.use_depthwise, norm, device),
                spp: s.use_spp.then(|| SppBottleneck::new(s.out_channels, norm, device)),
                csp: CspLayer::new(
                    CspLayerSpec {
                        c_in: s.out_channels,
                        c_out: s.out_channels,
                        num_blocks: s.num_blocks,
                        add_identity: s.add_identity,
                        channel_attention: true,
                        depthwise: cfg.use_depthwise,
                    },
                    norm,
                    device,
                ),
            })
            .collect();
        CspNext { stem, stages }
    }

    /// `[N, 3, H, W]` → `[C3 [N, c3, H/8, W/8], C4 [.., H/16, ..], C5 [.., H/32, ..]]`
    pub fn forward(&self, x: Tensor<4>) -> [Tensor<4>; 3] {
        let mut x = self.stem.iter().fold(x, |x, c| c.forward(x));
        let mut outs = Vec::with_capacity(3);
        for (i, stage) in self.stages.iter().enumerate() {
            x = stage.forward(x);
            if i >= 1 {
                outs.push(x.clone());
            }
        }
        outs.try_into().expect("three backbone outputs")
    }
}

impl VisitWeights for CspNext {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        for (i, c) in self.stem.iter_mut().enumerate() {
            c.visit_weights(&join(prefix, format!("stem.{i}")), v)?;
        }
        for (i, s) in self.stages.iter_mut().enumerate() {
            s.visit_weights(&join(prefix, format!("stage{}", i + 1)), v)?;
        }
        Ok(())
    }
}
