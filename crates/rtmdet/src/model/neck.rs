//! CSPNeXt-PAFPN neck (spec §4): top-down then bottom-up paths of CSP layers, with the
//! *reduced* tensors as lateral inputs of the bottom-up path.

use burn::module::Module;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use super::blocks::{Conv, ConvModule, CspLayer, CspLayerSpec, NormCfg};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::{ParamVisitor, VisitWeights, join};

#[derive(Module, Debug)]
pub struct CspNextPafpn {
    /// `[0]`: C5→c4, `[1]`: T4→c3 (1×1).
    pub reduce_layers: Vec<ConvModule>,
    pub top_down_blocks: Vec<CspLayer>,
    pub downsamples: Vec<Conv>,
    pub bottom_up_blocks: Vec<CspLayer>,
    pub out_convs: Vec<Conv>,
}

fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]))
}

impl CspNextPafpn {
    pub fn new(cfg: &ModelConfig, norm: NormCfg, device: &Device) -> Self {
        let [c3, c4, c5] = cfg.neck_in_channels();
        let dw = cfg.use_depthwise;
        let csp = |c_in, c_out| {
            CspLayer::new(
                CspLayerSpec {
                    c_in,
                    c_out,
                    num_blocks: cfg.neck_blocks,
                    add_identity: false,
                    channel_attention: false,
                    depthwise: dw,
                },
                norm,
                device,
            )
        };
        CspNextPafpn {
            reduce_layers: vec![
                ConvModule::new(c5, c4, 1, 1, norm, device),
                ConvModule::new(c4, c3, 1, 1, norm, device),
            ],
            top_down_blocks: vec![csp(2 * c4, c4), csp(2 * c3, c3)],
            downsamples: vec![Conv::new(c3, c3, 3, 2, dw, norm, device), Conv::new(c4, c4, 3, 2, dw, norm, device)],
            bottom_up_blocks: vec![csp(2 * c3, c4), csp(2 * c4, c5)],
            out_convs: [c3, c4, c5].iter().map(|&c| Conv::new(c, cfg.neck_channels, 3, 1, dw, norm, device)).collect(),
        }
    }

    /// `[C3, C4, C5]` → `[P3, P4, P5]`, each with `neck_channels` channels.
    pub fn forward(&self, [c3, c4, c5]: [Tensor<4>; 3]) -> [Tensor<4>; 3] {
        let r5 = self.reduce_layers[0].forward(c5);
        let t4 = self.top_down_blocks[0].forward(Tensor::cat(vec![upsample2(r5.clone()), c4], 1));
        let r4 = self.reduce_layers[1].forward(t4);
        let n3 = self.top_down_blocks[1].forward(Tensor::cat(vec![upsample2(r4.clone()), c3], 1));
        let n4 = self.bottom_up_blocks[0].forward(Tensor::cat(vec![self.downsamples[0].forward(n3.clone()), r4], 1));
        let n5 = self.bottom_up_blocks[1].forward(Tensor::cat(vec![self.downsamples[1].forward(n4.clone()), r5], 1));
        [self.out_convs[0].forward(n3), self.out_convs[1].forward(n4), self.out_convs[2].forward(n5)]
    }
}

impl VisitWeights for CspNextPafpn {
    /// In PyTorch execution order: reduce0, top-down 0, reduce1, top-down 1, then
    /// downsample/bottom-up pairs, then the output convs.
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        for i in 0..2 {
            self.reduce_layers[i].visit_weights(&join(prefix, format!("reduce_layers.{i}")), v)?;
            self.top_down_blocks[i].visit_weights(&join(prefix, format!("top_down_blocks.{i}")), v)?;
        }
        for i in 0..2 {
            self.downsamples[i].visit_weights(&join(prefix, format!("downsamples.{i}")), v)?;
            self.bottom_up_blocks[i].visit_weights(&join(prefix, format!("bottom_up_blocks.{i}")), v)?;
        }
        for (i, c) in self.out_convs.iter_mut().enumerate() {
            c.visit_weights(&join(prefix, format!("out_convs.{i}")), v)?;
        }
        Ok(())
    }
}
