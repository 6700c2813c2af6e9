//! The building blocks of CSPNeXt and its PAFPN (spec §2): ConvModule, depthwise-separable
//! conv, CSPNeXtBlock, ChannelAttention, CSPLayer and SPPBottleneck.
//!
//! Every block visits its tensors in the order PyTorch executes them, so a graph-ordered
//! export (ONNX) maps onto the same walk.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{hard_sigmoid, silu};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use super::norm::BatchNorm2d;
use crate::error::Result;
use crate::weights::{ParamVisitor, VisitWeights, join};

/// BatchNorm hyper-parameters shared by every norm layer of a model.
#[derive(Clone, Copy, Debug)]
pub struct NormCfg {
    pub eps: f64,
    pub momentum: f64,
}

pub(crate) fn conv2d(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    groups: usize,
    bias: bool,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_groups(groups)
        .with_bias(bias)
        .init(device)
}

pub(crate) fn batch_norm(c: usize, norm: NormCfg, device: &Device) -> BatchNorm2d {
    BatchNorm2d::new(c, norm.eps, norm.momentum, device)
}

/// Visits a conv's weight (and bias when it has one) under `prefix`.
pub(crate) fn visit_conv<V: ParamVisitor>(conv: &mut Conv2d, prefix: &str, v: &mut V) -> Result<()> {
    v.param(&[join(prefix, "weight")], &mut conv.weight)?;
    if let Some(bias) = conv.bias.as_mut() {
        v.param(&[join(prefix, "bias")], bias)?;
    }
    Ok(())
}

/// Visits a BatchNorm under mmdet's names (`weight`, `bias`, `running_mean`, `running_var`).
pub(crate) fn visit_bn<V: ParamVisitor>(bn: &mut BatchNorm2d, prefix: &str, v: &mut V) -> Result<()> {
    v.param(&[join(prefix, "weight")], &mut bn.gamma)?;
    v.param(&[join(prefix, "bias")], &mut bn.beta)?;
    v.buffer(&join(prefix, "running_mean"), &mut bn.running_mean)?;
    v.buffer(&join(prefix, "running_var"), &mut bn.running_var)?;
    v.ignorable(&join(prefix, "num_batches_tracked"));
    Ok(())
}

/// Conv (no bias) → BatchNorm → SiLU.
#[derive(Module, Debug)]
pub struct ConvModule {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

impl ConvModule {
    pub fn new(c_in: usize, c_out: usize, k: usize, stride: usize, norm: NormCfg, device: &Device) -> Self {
        Self::grouped(c_in, c_out, k, stride, 1, norm, device)
    }

    pub fn grouped(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        groups: usize,
        norm: NormCfg,
        device: &Device,
    ) -> Self {
        ConvModule { conv: conv2d(c_in, c_out, k, stride, groups, false, device), bn: batch_norm(c_out, norm, device) }
    }

    /// `[N, C_in, H, W]` → `[N, C_out, H/stride, W/stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        silu(self.bn.forward(self.conv.forward(x)))
    }
}

impl VisitWeights for ConvModule {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        visit_conv(&mut self.conv, &join(prefix, "conv"), v)?;
        visit_bn(&mut self.bn, &join(prefix, "bn"), v)
    }
}

/// k×k depthwise ConvModule followed by a 1×1 pointwise ConvModule.
#[derive(Module, Debug)]
pub struct DepthwiseSeparable {
    pub depthwise_conv: ConvModule,
    pub pointwise_conv: ConvModule,
}

impl DepthwiseSeparable {
    pub fn new(c_in: usize, c_out: usize, k: usize, stride: usize, norm: NormCfg, device: &Device) -> Self {
        DepthwiseSeparable {
            depthwise_conv: ConvModule::grouped(c_in, c_in, k, stride, c_in, norm, device),
            pointwise_conv: ConvModule::new(c_in, c_out, 1, 1, norm, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pointwise_conv.forward(self.depthwise_conv.forward(x))
    }
}

impl VisitWeights for DepthwiseSeparable {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        self.depthwise_conv.visit_weights(&join(prefix, "depthwise_conv"), v)?;
        self.pointwise_conv.visit_weights(&join(prefix, "pointwise_conv"), v)
    }
}

/// mmdet's `conv` alias: a dense ConvModule, or a depthwise-separable one when the model is
/// built with `use_depthwise` (the nano variant).
#[derive(Module, Debug)]
pub enum Conv {
    Dense(ConvModule),
    Separable(DepthwiseSeparable),
}

impl Conv {
    pub fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
        norm: NormCfg,
        device: &Device,
    ) -> Self {
        if depthwise {
            Conv::Separable(DepthwiseSeparable::new(c_in, c_out, k, stride, norm, device))
        } else {
            Conv::Dense(ConvModule::new(c_in, c_out, k, stride, norm, device))
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Conv::Dense(c) => c.forward(x),
            Conv::Separable(c) => c.forward(x),
        }
    }
}

impl VisitWeights for Conv {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        match self {
            Conv::Dense(c) => c.visit_weights(prefix, v),
            Conv::Separable(c) => c.visit_weights(prefix, v),
        }
    }
}

/// `conv2(conv1(x)) (+ x)`: a 3×3 conv then a 5×5 depthwise-separable conv (the "large
/// kernel" block of CSPNeXt).
#[derive(Module, Debug)]
pub struct CspNextBlock {
    pub conv1: Conv,
    pub conv2: DepthwiseSeparable,
    pub add_identity: bool,
}

impl CspNextBlock {
    pub fn new(channels: usize, add_identity: bool, depthwise: bool, norm: NormCfg, device: &Device) -> Self {
        CspNextBlock {
            conv1: Conv::new(channels, channels, 3, 1, depthwise, norm, device),
            conv2: DepthwiseSeparable::new(channels, channels, 5, 1, norm, device),
            add_identity,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv2.forward(self.conv1.forward(x.clone()));
        if self.add_identity { y + x } else { y }
    }
}

impl VisitWeights for CspNextBlock {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        self.conv1.visit_weights(&join(prefix, "conv1"), v)?;
        self.conv2.visit_weights(&join(prefix, "conv2"), v)
    }
}

/// `x * hardsigmoid(fc(avgpool(x)))` with a biased 1×1 conv (no reduction).
#[derive(Module, Debug)]
pub struct ChannelAttention {
    pub fc: Conv2d,
}

impl ChannelAttention {
    pub fn new(channels: usize, device: &Device) -> Self {
        ChannelAttention { fc: conv2d(channels, channels, 1, 1, 1, true, device) }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // [N, C, H, W] → [N, C, 1, 1]
        let pooled = x.clone().mean_dim(3).mean_dim(2);
        let gate = hard_sigmoid(self.fc.forward(pooled), 1.0 / 6.0, 0.5);
        x * gate
    }
}

impl VisitWeights for ChannelAttention {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        visit_conv(&mut self.fc, &join(prefix, "fc"), v)
    }
}

/// Cross-stage-partial layer: `final(attn(cat[blocks(main(x)), short(x)]))`.
#[derive(Module, Debug)]
pub struct CspLayer {
    pub main_conv: ConvModule,
    pub short_conv: ConvModule,
    pub blocks: Vec<CspNextBlock>,
    pub attention: Option<ChannelAttention>,
    pub final_conv: ConvModule,
}

/// Shape of a [`CspLayer`].
#[derive(Clone, Copy, Debug)]
pub struct CspLayerSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub num_blocks: usize,
    pub add_identity: bool,
    pub channel_attention: bool,
    pub depthwise: bool,
}

impl CspLayer {
    pub fn new(spec: CspLayerSpec, norm: NormCfg, device: &Device) -> Self {
        let mid = spec.c_out / 2; // expand_ratio 0.5
        CspLayer {
            main_conv: ConvModule::new(spec.c_in, mid, 1, 1, norm, device),
            short_conv: ConvModule::new(spec.c_in, mid, 1, 1, norm, device),
            blocks: (0..spec.num_blocks)
                .map(|_| CspNextBlock::new(mid, spec.add_identity, spec.depthwise, norm, device))
                .collect(),
            attention: spec.channel_attention.then(|| ChannelAttention::new(2 * mid, device)),
            final_conv: ConvModule::new(2 * mid, spec.c_out, 1, 1, norm, device),
        }
    }

    /// `[N, c_in, H, W]` → `[N, c_out, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let short = self.short_conv.forward(x.clone());
        let main = self.blocks.iter().fold(self.main_conv.forward(x), |y, b| b.forward(y));
        let mut y = Tensor::cat(vec![main, short], 1);
        if let Some(att) = &self.attention {
            y = att.forward(y);
        }
        self.final_conv.forward(y)
    }
}

impl VisitWeights for CspLayer {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        // PyTorch runs short_conv before main_conv.
        self.short_conv.visit_weights(&join(prefix, "short_conv"), v)?;
        self.main_conv.visit_weights(&join(prefix, "main_conv"), v)?;
        for (j, b) in self.blocks.iter_mut().enumerate() {
            b.visit_weights(&join(prefix, format!("blocks.{j}")), v)?;
        }
        if let Some(att) = self.attention.as_mut() {
            att.visit_weights(&join(prefix, "attention"), v)?;
        }
        self.final_conv.visit_weights(&join(prefix, "final_conv"), v)
    }
}

/// SPP with three parallel max-pools (5, 9, 13) concatenated with their input.
#[derive(Module, Debug)]
pub struct SppBottleneck {
    pub conv1: ConvModule,
    pub conv2: ConvModule,
}

const SPP_KERNELS: [usize; 3] = [5, 9, 13];

impl SppBottleneck {
    pub fn new(channels: usize, norm: NormCfg, device: &Device) -> Self {
        let mid = channels / 2;
        SppBottleneck {
            conv1: ConvModule::new(channels, mid, 1, 1, norm, device),
            conv2: ConvModule::new(mid * (SPP_KERNELS.len() + 1), channels, 1, 1, norm, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv1.forward(x);
        let mut parts = vec![x.clone()];
        for k in SPP_KERNELS {
            let p = k / 2;
            let opts = MaxPoolOptions::new([k, k]).with_stride([1, 1]).with_padding([p, p]);
            parts.push(max_pool2d(x.clone(), opts));
        }
        self.conv2.forward(Tensor::cat(parts, 1))
    }
}

impl VisitWeights for SppBottleneck {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        self.conv1.visit_weights(&join(prefix, "conv1"), v)?;
        self.conv2.visit_weights(&join(prefix, "conv2"), v)
    }
}
