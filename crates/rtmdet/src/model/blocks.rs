//! The building blocks of CSPNeXt and its PAFPN (spec §2), written as functions that append
//! their nodes to the [`Graph`](super::graph::Graph): ConvModule, depthwise-separable conv,
//! CSPNeXtBlock, ChannelAttention, CSPLayer and SPPBottleneck.
//!
//! Nodes are appended in the order PyTorch executes them, so a graph-ordered export (ONNX)
//! lists its convolutions in the same order.

use super::graph::{GraphBuilder, NodeId};
use super::params::join;

/// k×k depthwise ConvModule followed by a 1×1 pointwise ConvModule.
pub fn depthwise_separable(
    b: &mut GraphBuilder,
    prefix: &str,
    x: NodeId,
    cout: usize,
    k: usize,
    stride: usize,
) -> NodeId {
    let c = b.channels(x);
    let d = b.conv_module(&join(prefix, "depthwise_conv"), x, c, k, stride, c);
    b.conv_module(&join(prefix, "pointwise_conv"), d, cout, 1, 1, 1)
}

/// mmdet's `conv` alias: a dense ConvModule, or a depthwise-separable one when the model is
/// built with `use_depthwise` (the nano variant).
pub fn conv(
    b: &mut GraphBuilder,
    prefix: &str,
    x: NodeId,
    cout: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
) -> NodeId {
    if depthwise {
        depthwise_separable(b, prefix, x, cout, k, stride)
    } else {
        b.conv_module(prefix, x, cout, k, stride, 1)
    }
}

/// `conv2(conv1(x)) (+ x)`: a 3×3 conv then a 5×5 depthwise-separable conv (the "large
/// kernel" block of CSPNeXt). `[N, C, H, W]` → `[N, C, H, W]`.
fn csp_next_block(b: &mut GraphBuilder, prefix: &str, x: NodeId, add_identity: bool, depthwise: bool) -> NodeId {
    let c = b.channels(x);
    let y = conv(b, &join(prefix, "conv1"), x, c, 3, 1, depthwise);
    let y = depthwise_separable(b, &join(prefix, "conv2"), y, c, 5, 1);
    if add_identity { b.add(y, x, prefix) } else { y }
}

/// Shape of a CSPLayer.
#[derive(Clone, Copy, Debug)]
pub struct CspLayerSpec {
    pub c_out: usize,
    pub num_blocks: usize,
    pub add_identity: bool,
    pub channel_attention: bool,
    pub depthwise: bool,
}

/// Cross-stage-partial layer: `final(attn(cat[blocks(main(x)), short(x)]))`, expand ratio 0.5.
/// `[N, c_in, H, W]` → `[N, c_out, H, W]`.
pub fn csp_layer(b: &mut GraphBuilder, prefix: &str, x: NodeId, spec: CspLayerSpec) -> NodeId {
    let mid = spec.c_out / 2;
    // PyTorch runs short_conv before main_conv.
    let short = b.conv_module(&join(prefix, "short_conv"), x, mid, 1, 1, 1);
    let mut main = b.conv_module(&join(prefix, "main_conv"), x, mid, 1, 1, 1);
    for j in 0..spec.num_blocks {
        main = csp_next_block(b, &join(prefix, format!("blocks.{j}")), main, spec.add_identity, spec.depthwise);
    }
    let mut y = b.concat(vec![main, short], prefix);
    if spec.channel_attention {
        y = b.channel_attention(&join(prefix, "attention"), y);
    }
    b.conv_module(&join(prefix, "final_conv"), y, spec.c_out, 1, 1, 1)
}

/// The max-pool kernels of SPPBottleneck.
pub const SPP_KERNELS: [usize; 3] = [5, 9, 13];

/// SPP: `conv2(cat[y, pool5(y), pool9(y), pool13(y)])` with `y = conv1(x)` of half the channels.
pub fn spp_bottleneck(b: &mut GraphBuilder, prefix: &str, x: NodeId) -> NodeId {
    let c = b.channels(x);
    let y = b.conv_module(&join(prefix, "conv1"), x, c / 2, 1, 1, 1);
    let pooled = b.spp_pool(y, &SPP_KERNELS, prefix);
    b.conv_module(&join(prefix, "conv2"), pooled, c, 1, 1, 1)
}
