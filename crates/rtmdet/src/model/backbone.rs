//! CSPNeXt backbone (P5, spec §3): stem + 4 stages, returning C3, C4, C5 (strides 8, 16, 32).

use super::blocks::{CspLayerSpec, conv, csp_layer, spp_bottleneck};
use super::graph::{GraphBuilder, NodeId};
use super::params::join;
use crate::config::ModelConfig;

/// `[N, 3, H, W]` → `[C3 [N, c3, H/8, W/8], C4 [.., H/16, ..], C5 [.., H/32, ..]]`.
///
/// mmdet keys: `stem.{0,1,2}`, then per stage `stage{s}.0` (stride-2 conv), `.1` (SPP, last
/// stage only) and the CSPLayer with channel attention.
pub fn build(b: &mut GraphBuilder, cfg: &ModelConfig, input: NodeId) -> [NodeId; 3] {
    let (c_half, c_stem) = cfg.stem_channels();
    let mut x = b.conv_module("backbone.stem.0", input, c_half, 3, 2, 1);
    x = b.conv_module("backbone.stem.1", x, c_half, 3, 1, 1);
    x = b.conv_module("backbone.stem.2", x, c_stem, 3, 1, 1);
    let mut outs = Vec::with_capacity(3);
    for (i, s) in cfg.stages().iter().enumerate() {
        let prefix = format!("backbone.stage{}", i + 1);
        x = conv(b, &join(&prefix, 0), x, s.out_channels, 3, 2, cfg.use_depthwise);
        let mut idx = 1;
        if s.use_spp {
            x = spp_bottleneck(b, &join(&prefix, idx), x);
            idx += 1;
        }
        let spec = CspLayerSpec {
            c_out: s.out_channels,
            num_blocks: s.num_blocks,
            add_identity: s.add_identity,
            channel_attention: true,
            depthwise: cfg.use_depthwise,
        };
        x = csp_layer(b, &join(&prefix, idx), x, spec);
        if i >= 1 {
            outs.push(x);
        }
    }
    outs.try_into().expect("three backbone outputs")
}
