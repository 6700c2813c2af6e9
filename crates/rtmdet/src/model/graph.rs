//! The one description of the network: a list of nodes in PyTorch execution order, the
//! convolution and BatchNorm parameters they use (with their checkpoint names and shapes),
//! and which nodes hold the head outputs.
//!
//! `Graph::new` (in [`super`]) builds it from a [`ModelConfig`] through `backbone`, `neck` and
//! `head`, which append nodes with a [`GraphBuilder`]; everything else is derived from it: the burn module
//! ([`super::RtmDet`]), the fused CPU plan (`engine::cpu::plan`), the checkpoint and ONNX
//! name mapping (`weights`) and the parameter list. Nothing builds a model to learn names.

use super::params::join;
use crate::config::ModelConfig;

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// How a convolution is initialised when training starts from scratch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// burn's default (Kaiming-uniform), as mmdet leaves ConvModules.
    Default,
    /// `N(0, std)` weights and a constant bias (mmdet's head predictors).
    Normal { std: f64, bias: f32 },
}

/// One convolution's parameters. A conv shared across head levels is one [`ConvParam`] used
/// by several nodes; its weight is stored under every level's name in checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvParam {
    /// Checkpoint names of the weight `[cout, cin / groups, k, k]` (several when shared).
    pub weight: Vec<String>,
    /// Checkpoint name of the bias `[cout]` (biased convs only).
    pub bias: Option<String>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub groups: usize,
    pub init: Init,
}

impl ConvParam {
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.groups, self.k, self.k]
    }

    /// A depthwise conv (one filter per channel).
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.cin && self.cin == self.cout
    }

    /// The module prefix of the first weight name (`backbone.stem.0.conv`).
    pub fn prefix(&self) -> &str {
        self.weight[0].strip_suffix(".weight").unwrap_or(&self.weight[0])
    }
}

/// One BatchNorm's parameters: `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`.
#[derive(Clone, Debug, PartialEq)]
pub struct NormParam {
    pub prefix: String,
    pub channels: usize,
}

/// What a node computes from its inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The normalised image batch `[N, 3, H, W]`.
    Input,
    /// mmcv's ConvModule: conv (no bias) → BatchNorm → SiLU. Indexes into
    /// [`Graph::convs`] and [`Graph::norms`].
    ConvModule { conv: usize, norm: usize },
    /// A biased conv without norm or activation (head predictors).
    Conv { conv: usize },
    /// `inputs[0] + inputs[1]`.
    Add,
    /// Channel concatenation of the inputs, in order.
    Concat,
    /// Nearest-neighbour 2× upsampling.
    Upsample2x,
    /// SPPBottleneck's pooling: `cat[x, maxpool_k(x) for k in kernels]` (stride 1, same size).
    SppPool { kernels: Vec<usize> },
    /// `x · hardsigmoid(fc(mean_hw(x)))` with a biased 1×1 `fc` (CSPNeXt's channel attention).
    ChannelAttention { fc: usize },
    /// `max(x, 0)` (RTMDet-Ins box regression).
    Relu,
    /// Bilinear resize of `inputs[0]` to the height and width of `inputs[1]` (PyTorch
    /// `interpolate(mode='bilinear', align_corners=False)`; RTMDet-Ins mask features).
    ResizeBilinearLike,
}

/// A node: an operation on earlier nodes, with the shape of its result.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    /// Channels of the result.
    pub channels: usize,
    /// Input pixels per result pixel (1 for the input, 8/16/32 at the head).
    pub stride: usize,
    /// The module path it belongs to (`neck.top_down_blocks.0`), for messages and exports.
    pub name: String,
}

/// The nodes holding one pyramid level's raw head outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelNodes {
    pub stride: usize,
    /// Classification logits `[N, num_classes, H, W]`.
    pub cls: NodeId,
    /// Raw box regression `[N, 4, H, W]` (before `exp` and the stride).
    pub reg: NodeId,
    /// Raw angle `[N, 1, H, W]` in radians (RTMDet-R only).
    pub angle: Option<NodeId>,
    /// Dynamic-conv parameters `[N, 169, H, W]` per prior (RTMDet-Ins only).
    pub kernel: Option<NodeId>,
}

impl LevelNodes {
    /// Every output node of the level: cls, reg, then the task's (angle or kernel).
    pub fn outputs(&self) -> impl Iterator<Item = NodeId> + use<> {
        [Some(self.cls), Some(self.reg), self.angle, self.kernel].into_iter().flatten()
    }
}

/// The head's output nodes, as `head::build` returns them.
pub struct HeadNodes {
    pub levels: Vec<LevelNodes>,
    /// RTMDet-Ins prototypes.
    pub mask_feat: Option<NodeId>,
    /// Checkpoint names of modules the head reuses (RTMDet-Ins `reg_convs`).
    pub aliases: Vec<String>,
}

/// The network of one [`ModelConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub convs: Vec<ConvParam>,
    pub norms: Vec<NormParam>,
    /// Backbone outputs C3, C4, C5.
    pub backbone_out: [NodeId; 3],
    /// Neck outputs P3, P4, P5.
    pub neck_out: [NodeId; 3],
    /// Head outputs per level (strides 8, 16, 32).
    pub levels: Vec<LevelNodes>,
    /// RTMDet-Ins prototypes `[N, 8, H/8, W/8]` (the mask feature module's output).
    pub mask_feat: Option<NodeId>,
    /// Checkpoint tensors that duplicate modules the graph already has (RTMDet-Ins stores its
    /// regression tower, which *is* the classification tower, under `reg_convs` too): read
    /// and not used.
    pub aliases: Vec<String>,
    pub num_classes: usize,
    /// Distances are `exp(raw)·stride` instead of `raw·stride`.
    pub exp_on_reg: bool,
    pub bn_eps: f64,
    pub bn_momentum: f64,
}

/// One tensor of the checkpoint as the graph expects it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Every checkpoint name that holds it (several for shared head convs).
    pub names: Vec<String>,
    pub shape: Vec<usize>,
    /// A BatchNorm running statistic (not learnable).
    pub buffer: bool,
}

impl Graph {
    /// Every tensor of a checkpoint in execution order: per conv its weight (and bias), then
    /// its BatchNorm's weight, bias and running statistics. A shared conv appears once.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let mut out = Vec::new();
        let mut seen = vec![false; self.convs.len()];
        let mut conv = |c: usize, out: &mut Vec<TensorSpec>| {
            if std::mem::replace(&mut seen[c], true) {
                return;
            }
            let p = &self.convs[c];
            out.push(TensorSpec { names: p.weight.clone(), shape: p.weight_shape().to_vec(), buffer: false });
            if let Some(b) = &p.bias {
                out.push(TensorSpec { names: vec![b.clone()], shape: vec![p.cout], buffer: false });
            }
        };
        for node in &self.nodes {
            match node.op {
                Op::ConvModule { conv: c, norm } => {
                    conv(c, &mut out);
                    let n = &self.norms[norm];
                    for (field, buffer) in
                        [("weight", false), ("bias", false), ("running_mean", true), ("running_var", true)]
                    {
                        out.push(TensorSpec { names: vec![join(&n.prefix, field)], shape: vec![n.channels], buffer });
                    }
                }
                Op::Conv { conv: c } | Op::ChannelAttention { fc: c } => conv(c, &mut out),
                _ => {}
            }
        }
        out
    }

    /// For each node, the nodes that read it.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &x in &n.inputs {
                out[x].push(i);
            }
        }
        out
    }

    /// For each node, the last node that reads it (`usize::MAX` for outputs, which live on).
    pub fn last_use(&self) -> Vec<usize> {
        let mut last: Vec<usize> = self.consumers().iter().map(|c| c.iter().copied().max().unwrap_or(0)).collect();
        for n in self.levels.iter().flat_map(|l| l.outputs()).chain(self.mask_feat) {
            last[n] = usize::MAX;
        }
        last
    }
}

/// Appends nodes and parameters; the block functions of [`super::blocks`] are written on it.
pub struct GraphBuilder {
    nodes: Vec<Node>,
    convs: Vec<ConvParam>,
    norms: Vec<NormParam>,
}

impl GraphBuilder {
    /// A graph holding the input node `[N, 3, H, W]` only; returns it and the input.
    pub(crate) fn new() -> (Self, NodeId) {
        let mut b = GraphBuilder { nodes: Vec::new(), convs: Vec::new(), norms: Vec::new() };
        let input = b.node(Op::Input, vec![], 3, 1, "");
        (b, input)
    }

    /// The finished graph of `cfg` with its feature and head output nodes.
    pub(crate) fn finish(
        self,
        cfg: &ModelConfig,
        backbone_out: [NodeId; 3],
        neck_out: [NodeId; 3],
        head: HeadNodes,
    ) -> Graph {
        Graph {
            nodes: self.nodes,
            convs: self.convs,
            norms: self.norms,
            backbone_out,
            neck_out,
            levels: head.levels,
            mask_feat: head.mask_feat,
            aliases: head.aliases,
            num_classes: cfg.num_classes,
            // RTMDet-Ins regresses ReLU distances whatever the size's `exp_on_reg` says.
            exp_on_reg: cfg.exp_on_reg && cfg.task != crate::config::Task::Segment,
            bn_eps: cfg.bn_eps,
            bn_momentum: cfg.bn_momentum,
        }
    }

    pub fn channels(&self, x: NodeId) -> usize {
        self.nodes[x].channels
    }

    fn stride(&self, x: NodeId) -> usize {
        self.nodes[x].stride
    }

    fn node(&mut self, op: Op, inputs: Vec<NodeId>, channels: usize, stride: usize, name: &str) -> NodeId {
        self.nodes.push(Node { op, inputs, channels, stride, name: name.to_string() });
        self.nodes.len() - 1
    }

    /// A new conv parameter; `weight_names` are its checkpoint names.
    pub fn conv_param(&mut self, conv: ConvParam) -> usize {
        self.convs.push(conv);
        self.convs.len() - 1
    }

    /// A ConvModule reading `x` with an existing conv parameter and a new BatchNorm at
    /// `{prefix}.bn`.
    pub fn conv_module_with(&mut self, prefix: &str, x: NodeId, conv: usize) -> NodeId {
        let (cout, stride) = (self.convs[conv].cout, self.convs[conv].stride);
        self.norms.push(NormParam { prefix: join(prefix, "bn"), channels: cout });
        let norm = self.norms.len() - 1;
        let s = self.stride(x) * stride;
        self.node(Op::ConvModule { conv, norm }, vec![x], cout, s, prefix)
    }

    /// A ConvModule `{prefix}.conv` + `{prefix}.bn` with kernel `k` and `groups`.
    pub fn conv_module(
        &mut self,
        prefix: &str,
        x: NodeId,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) -> NodeId {
        let conv = self.conv_param(ConvParam {
            weight: vec![join(prefix, "conv.weight")],
            bias: None,
            cin: self.channels(x),
            cout,
            k,
            stride,
            groups,
            init: Init::Default,
        });
        self.conv_module_with(prefix, x, conv)
    }

    /// A biased conv `{prefix}.weight` / `{prefix}.bias` without norm or activation.
    pub fn biased_conv(&mut self, prefix: &str, x: NodeId, cout: usize, k: usize, init: Init) -> NodeId {
        let conv = self.conv_param(ConvParam {
            weight: vec![join(prefix, "weight")],
            bias: Some(join(prefix, "bias")),
            cin: self.channels(x),
            cout,
            k,
            stride: 1,
            groups: 1,
            init,
        });
        let s = self.stride(x);
        self.node(Op::Conv { conv }, vec![x], cout, s, prefix)
    }

    pub fn add(&mut self, a: NodeId, b: NodeId, name: &str) -> NodeId {
        let (c, s) = (self.channels(a), self.stride(a));
        self.node(Op::Add, vec![a, b], c, s, name)
    }

    pub fn concat(&mut self, inputs: Vec<NodeId>, name: &str) -> NodeId {
        let c = inputs.iter().map(|&i| self.channels(i)).sum();
        let s = self.stride(inputs[0]);
        self.node(Op::Concat, inputs, c, s, name)
    }

    pub fn upsample2x(&mut self, x: NodeId, name: &str) -> NodeId {
        let (c, s) = (self.channels(x), self.stride(x) / 2);
        self.node(Op::Upsample2x, vec![x], c, s, name)
    }

    pub fn relu(&mut self, x: NodeId, name: &str) -> NodeId {
        let (c, s) = (self.channels(x), self.stride(x));
        self.node(Op::Relu, vec![x], c, s, name)
    }

    /// `x` resized (bilinear) to the resolution of `like`.
    pub fn resize_bilinear_like(&mut self, x: NodeId, like: NodeId, name: &str) -> NodeId {
        let (c, s) = (self.channels(x), self.stride(like));
        self.node(Op::ResizeBilinearLike, vec![x, like], c, s, name)
    }

    pub fn spp_pool(&mut self, x: NodeId, kernels: &[usize], name: &str) -> NodeId {
        let (c, s) = (self.channels(x) * (kernels.len() + 1), self.stride(x));
        self.node(Op::SppPool { kernels: kernels.to_vec() }, vec![x], c, s, name)
    }

    /// Channel attention with a biased 1×1 `{prefix}.fc`.
    pub fn channel_attention(&mut self, prefix: &str, x: NodeId) -> NodeId {
        let c = self.channels(x);
        let fc = self.conv_param(ConvParam {
            weight: vec![join(prefix, "fc.weight")],
            bias: Some(join(prefix, "fc.bias")),
            cin: c,
            cout: c,
            k: 1,
            stride: 1,
            groups: 1,
            init: Init::Default,
        });
        let s = self.stride(x);
        self.node(Op::ChannelAttention { fc }, vec![x], c, s, prefix)
    }
}
