//! RTMDet `[backbone → neck → head]`: one [`graph::Graph`] describes the network of every
//! size, variant and task; [`RtmDet`] runs it on burn (training, GPU, reference).
//!
//! The description is built by [`backbone`], [`neck`] and [`head`] from the blocks in
//! [`blocks`]; [`norm`] is PyTorch-exact BatchNorm; [`outputs`] holds what the head produces.

pub mod backbone;
pub mod blocks;
pub mod fold;
pub mod graph;
pub mod head;
pub mod neck;
pub mod norm;
pub mod outputs;
pub mod params;
pub mod train_ops;

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::hard_sigmoid;
use burn::tensor::module::{interpolate, max_pool2d};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};

pub use graph::{Graph, NodeId, Op};
pub use outputs::{HeadOutputs, HeadTensors, LevelOutputs, LevelTensors, MaskFeatures};

use crate::coders::distance_point;
use crate::config::ModelConfig;
use crate::error::Result;
use graph::{ConvParam, Init};
use norm::BatchNorm2d;
use params::{ParamVisitor, VisitWeights, join};

/// The network of a [`Graph`] as a burn module: one `Conv2d` per conv parameter (shared
/// head convs once) and one BatchNorm per norm, run node by node.
#[derive(Module, Debug)]
pub struct RtmDet {
    pub convs: Vec<Conv2d>,
    pub norms: Vec<BatchNorm2d>,
    #[module(skip)]
    graph: Arc<Graph>,
}

fn conv2d(p: &ConvParam, device: &Device) -> Conv2d {
    let pad = p.k / 2;
    let config = Conv2dConfig::new([p.cin, p.cout], [p.k, p.k])
        .with_stride([p.stride, p.stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_groups(p.groups)
        .with_bias(p.bias.is_some());
    match p.init {
        Init::Default => config.init(device),
        Init::Normal { std, bias } => {
            let mut conv = config.with_initializer(Initializer::Normal { mean: 0.0, std }).init(device);
            if conv.bias.is_some() {
                conv.bias = Some(Param::from_tensor(Tensor::full([p.cout], bias, device)));
            }
            conv
        }
    }
}

fn upsample2x(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    interpolate(x, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]))
}

impl Graph {
    /// The network of `cfg`, shared by everything derived from it.
    pub fn new(cfg: &ModelConfig) -> Result<Arc<Graph>> {
        cfg.validate()?;
        let (mut b, input) = graph::GraphBuilder::new();
        let backbone_out = backbone::build(&mut b, cfg, input);
        let neck_out = neck::build(&mut b, cfg, backbone_out);
        let head = head::build(&mut b, cfg, neck_out);
        Ok(Arc::new(b.finish(cfg, backbone_out, neck_out, head)))
    }
}

impl RtmDet {
    /// A randomly initialised model (weights as mmdet initialises them).
    pub fn new(cfg: &ModelConfig, device: &Device) -> Result<Self> {
        Ok(Self::from_graph(Graph::new(cfg)?, device))
    }

    pub fn from_graph(graph: Arc<Graph>, device: &Device) -> Self {
        let convs = graph.convs.iter().map(|p| conv2d(p, device)).collect();
        let norms =
            graph.norms.iter().map(|n| BatchNorm2d::new(n.channels, graph.bn_eps, graph.bn_momentum, device)).collect();
        RtmDet { convs, norms, graph }
    }

    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// Conv parameter `i` on `x`; bias-free ones through [`train_ops`] (our weight gradient on
    /// the CPU).
    fn conv(&self, i: usize, x: Tensor<4>) -> Tensor<4> {
        let conv = &self.convs[i];
        if conv.bias.is_some() {
            return conv.forward(x);
        }
        let p = &self.graph.convs[i];
        let options = ConvOptions::new([p.stride; 2], [p.k / 2; 2], [1, 1], p.groups);
        train_ops::conv2d_no_bias(x, conv.weight.val(), options)
    }

    /// Runs the graph on `x` `[N, 3, H, W]` and returns the values of `wanted` nodes.
    /// Intermediate values are dropped after their last reader.
    pub fn run(&self, x: Tensor<4>, wanted: &[NodeId]) -> Vec<Tensor<4>> {
        let g = &self.graph;
        let mut last = g.last_use();
        for &w in wanted {
            last[w] = usize::MAX;
        }
        let mut values: Vec<Option<Tensor<4>>> = vec![None; g.nodes.len()];
        let mut input = Some(x);
        for (i, node) in g.nodes.iter().enumerate() {
            let arg = |k: usize| values[node.inputs[k]].clone().expect("inputs are computed before their readers");
            let y = match &node.op {
                graph::Op::Input => input.take().expect("one input node"),
                graph::Op::ConvModule { conv, norm } => self.norms[*norm].forward_silu(self.conv(*conv, arg(0))),
                graph::Op::Conv { conv } => self.conv(*conv, arg(0)),
                graph::Op::Add => arg(0) + arg(1),
                graph::Op::Concat => Tensor::cat((0..node.inputs.len()).map(arg).collect(), 1),
                graph::Op::Upsample2x => upsample2x(arg(0)),
                graph::Op::SppPool { kernels } => {
                    let x = arg(0);
                    let mut parts = vec![x.clone()];
                    for &k in kernels {
                        let p = k / 2;
                        let opts = MaxPoolOptions::new([k, k]).with_stride([1, 1]).with_padding([p, p]);
                        parts.push(max_pool2d(x.clone(), opts));
                    }
                    Tensor::cat(parts, 1)
                }
                graph::Op::Relu => burn::tensor::activation::relu(arg(0)),
                graph::Op::ResizeBilinearLike => {
                    let [_, _, h, w] = values[node.inputs[1]].as_ref().expect("computed").dims();
                    let opts = InterpolateOptions::new(InterpolateMode::Bilinear)
                        .with_align_corners(false)
                        .with_output_size([h, w]);
                    interpolate(arg(0), opts)
                }
                graph::Op::ChannelAttention { fc } => {
                    let x = arg(0);
                    // [N, C, H, W] → [N, C, 1, 1]
                    let pooled = x.clone().mean_dim(3).mean_dim(2);
                    x * hard_sigmoid(self.convs[*fc].forward(pooled), 1.0 / 6.0, 0.5)
                }
            };
            values[i] = Some(y);
            for &inp in &node.inputs {
                if last[inp] == i {
                    values[inp] = None;
                }
            }
        }
        wanted.iter().map(|&w| values[w].clone().expect("wanted nodes are kept")).collect()
    }

    /// Network input `[N, 3, H, W]` → backbone `[C3, C4, C5]` and neck `[P3, P4, P5]` features.
    pub fn features(&self, x: Tensor<4>) -> ([Tensor<4>; 3], [Tensor<4>; 3]) {
        let g = &self.graph;
        let wanted: Vec<NodeId> = g.backbone_out.iter().chain(&g.neck_out).copied().collect();
        let mut v = self.run(x, &wanted).into_iter();
        let mut take3 = || [(); 3].map(|_| v.next().expect("six features"));
        (take3(), take3())
    }

    /// Network input `[N, 3, H, W]` → raw head outputs per level (strides 8, 16, 32).
    pub fn forward(&self, x: Tensor<4>) -> HeadTensors {
        self.forward_with_prototypes(x).0
    }

    /// [`Self::forward`] and, for RTMDet-Ins, the prototypes `[N, 8, H/8, W/8]`.
    pub fn forward_with_prototypes(&self, x: Tensor<4>) -> (HeadTensors, Option<Tensor<4>>) {
        let g = &self.graph;
        let wanted: Vec<NodeId> = g.levels.iter().flat_map(|l| l.outputs()).chain(g.mask_feat).collect();
        let mut v = self.run(x, &wanted).into_iter();
        let levels = g
            .levels
            .iter()
            .map(|l| {
                let (cls, reg_raw) = (v.next().expect("cls"), v.next().expect("reg"));
                let angle = l.angle.map(|_| v.next().expect("angle"));
                let kernel = l.kernel.map(|_| v.next().expect("kernel"));
                let reg = distance_point::distance_from_raw_tensor(reg_raw.clone(), l.stride, g.exp_on_reg);
                LevelTensors { cls, reg, reg_raw, angle, kernel, stride: l.stride }
            })
            .collect();
        (levels, g.mask_feat.map(|_| v.next().expect("prototypes")))
    }
}

impl VisitWeights for RtmDet {
    /// Every tensor under its checkpoint names (a shared conv under each level's name).
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        let graph = self.graph.clone();
        for (conv, p) in self.convs.iter_mut().zip(&graph.convs) {
            let names: Vec<String> = p.weight.iter().map(|n| join(prefix, n)).collect();
            v.param(&names, &mut conv.weight)?;
            if let (Some(bias), Some(name)) = (conv.bias.as_mut(), &p.bias) {
                v.param(&[join(prefix, name)], bias)?;
            }
        }
        for (bn, n) in self.norms.iter_mut().zip(&graph.norms) {
            let p = join(prefix, &n.prefix);
            v.param(&[join(&p, "weight")], &mut bn.gamma)?;
            v.param(&[join(&p, "bias")], &mut bn.beta)?;
            v.buffer(&join(&p, "running_mean"), &mut bn.running_mean)?;
            v.buffer(&join(&p, "running_var"), &mut bn.running_var)?;
            v.ignorable(&join(&p, "num_batches_tracked"));
        }
        for name in &graph.aliases {
            v.ignorable(&join(prefix, name));
        }
        Ok(())
    }
}
