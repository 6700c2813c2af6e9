//! CSPNeXt-PAFPN neck (spec §4): top-down then bottom-up paths of CSP layers, with the
//! *reduced* tensors as lateral inputs of the bottom-up path.

use super::blocks::{CspLayerSpec, conv, csp_layer};
use super::graph::{GraphBuilder, NodeId};
use crate::config::ModelConfig;

/// `[C3, C4, C5]` → `[P3, P4, P5]`, each with `neck_channels` channels. Nodes in PyTorch
/// execution order: reduce 0, top-down 0, reduce 1, top-down 1, then downsample/bottom-up
/// pairs, then the output convs.
pub fn build(b: &mut GraphBuilder, cfg: &ModelConfig, [c3, c4, c5]: [NodeId; 3]) -> [NodeId; 3] {
    let [w3, w4, w5] = cfg.neck_in_channels();
    let dw = cfg.use_depthwise;
    let spec = |c_out| CspLayerSpec {
        c_out,
        num_blocks: cfg.neck_blocks,
        add_identity: false,
        channel_attention: false,
        depthwise: dw,
    };
    let r5 = b.conv_module("neck.reduce_layers.0", c5, w4, 1, 1, 1);
    let up = b.upsample2x(r5, "neck.upsample.0");
    let cat = b.concat(vec![up, c4], "neck.top_down_blocks.0");
    let t4 = csp_layer(b, "neck.top_down_blocks.0", cat, spec(w4));
    let r4 = b.conv_module("neck.reduce_layers.1", t4, w3, 1, 1, 1);
    let up = b.upsample2x(r4, "neck.upsample.1");
    let cat = b.concat(vec![up, c3], "neck.top_down_blocks.1");
    let n3 = csp_layer(b, "neck.top_down_blocks.1", cat, spec(w3));
    let d = conv(b, "neck.downsamples.0", n3, w3, 3, 2, dw);
    let cat = b.concat(vec![d, r4], "neck.bottom_up_blocks.0");
    let n4 = csp_layer(b, "neck.bottom_up_blocks.0", cat, spec(w4));
    let d = conv(b, "neck.downsamples.1", n4, w4, 3, 2, dw);
    let cat = b.concat(vec![d, r5], "neck.bottom_up_blocks.1");
    let n5 = csp_layer(b, "neck.bottom_up_blocks.1", cat, spec(w5));
    [n3, n4, n5]
        .into_iter()
        .enumerate()
        .map(|(i, x)| conv(b, &format!("neck.out_convs.{i}"), x, cfg.neck_channels, 3, 1, dw))
        .collect::<Vec<_>>()
        .try_into()
        .expect("three neck outputs")
}
