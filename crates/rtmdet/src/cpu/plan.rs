//! Turns a model's tensors into a list of kernel calls: BatchNorm folded into the convs,
//! SiLU into their epilogues, residuals added on store, concatenations written in place by
//! their producers (each part on a 16-channel boundary) wherever the producer is a conv.

use super::kernels::Activation;
use super::kernels::attention::ChannelGate;
use super::kernels::conv::PackedConv;
use super::kernels::depthwise::PackedDepthwise;
use super::kernels::winograd::PackedWinograd;
use super::tensor::{CHANNEL_BLOCK, round_up};
use crate::config::{ModelConfig, STRIDES};
use crate::error::{Error, Result};
use crate::weights::{HostTensor, TensorMap, join};

/// A buffer of the plan: its resolution (input pixels per map pixel) and floats per pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotSpec {
    pub stride: usize,
    pub cs: usize,
}

/// Where a value's channels live: a slot and `(offset, count)` runs of channels in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Val {
    pub slot: usize,
    pub segments: Vec<(usize, usize)>,
}

impl Val {
    pub fn channels(&self) -> usize {
        self.segments.iter().map(|s| s.1).sum()
    }

    /// The channels start at 0 and are contiguous (what depthwise and copies need).
    fn is_compact(&self) -> bool {
        self.segments.len() == 1 && self.segments[0].0 == 0
    }
}

#[derive(Clone, Debug)]
pub enum Step {
    Conv {
        conv: PackedConv,
        input: usize,
        output: usize,
        out_off: usize,
        residual: Option<(usize, usize)>,
    },
    Winograd {
        wg: PackedWinograd,
        input: usize,
        output: usize,
        out_off: usize,
        residual: Option<(usize, usize)>,
    },
    Depthwise {
        dw: PackedDepthwise,
        input: usize,
        output: usize,
    },
    /// Chained 5×5 max-pools inside one slot: `dst_i = pool5(src_i)`.
    Pool {
        slot: usize,
        pairs: Vec<(usize, usize)>,
        channels: usize,
    },
    Attention {
        gate: ChannelGate,
        slot: usize,
    },
    Upsample {
        input: usize,
        output: usize,
        out_off: usize,
        channels: usize,
    },
    Copy {
        input: usize,
        in_off: usize,
        output: usize,
        out_off: usize,
        channels: usize,
    },
}

impl Step {
    /// Every slot the step reads or writes.
    pub fn slots(&self) -> Vec<usize> {
        match self {
            Step::Conv { input, output, residual, .. } | Step::Winograd { input, output, residual, .. } => {
                [*input, *output].into_iter().chain(residual.map(|r| r.0)).collect()
            }
            Step::Depthwise { input, output, .. }
            | Step::Upsample { input, output, .. }
            | Step::Copy { input, output, .. } => vec![*input, *output],
            Step::Pool { slot, .. } | Step::Attention { slot, .. } => vec![*slot],
        }
    }
}

/// One pyramid level's head outputs: logits in `cls`, raw distances in `reg` (both at offset 0).
#[derive(Clone, Copy, Debug)]
pub struct HeadSlots {
    pub cls: usize,
    pub reg: usize,
    pub stride: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub slots: Vec<SlotSpec>,
    pub steps: Vec<Step>,
    pub heads: Vec<HeadSlots>,
    pub num_classes: usize,
    pub exp_on_reg: bool,
}

/// Slot 0 is the network input: 3 channels, not padded (only convs read it).
pub const INPUT_SLOT: usize = 0;

impl Plan {
    /// `winograd`: 3×3 stride-1 convolutions through Winograd F(2×2, 3×3) (fewer
    /// multiplies; the direct kernel otherwise).
    pub fn build(cfg: &ModelConfig, map: &TensorMap, winograd: bool) -> Result<Plan> {
        let mut b =
            Builder { map, eps: cfg.bn_eps, winograd, slots: vec![SlotSpec { stride: 1, cs: 3 }], steps: Vec::new() };
        let input = Val { slot: INPUT_SLOT, segments: vec![(0, 3)] };
        let [c3, c4, c5] = backbone(&mut b, cfg, input)?;
        let feats = neck(&mut b, cfg, [c3, c4, c5])?;
        let heads = head(&mut b, cfg, &feats)?;
        Ok(Plan { slots: b.slots, steps: b.steps, heads, num_classes: cfg.num_classes, exp_on_reg: cfg.exp_on_reg })
    }

    /// Maps each slot to a buffer, slots whose lifetimes do not overlap sharing one (same
    /// shape): every producer writes all channels of its slot's part, so a reused buffer
    /// needs no clearing, and its zero frame is never written. The input and head outputs
    /// live throughout.
    pub fn buffer_assignment(&self) -> Vec<usize> {
        let n = self.slots.len();
        let (mut first, mut last) = (vec![usize::MAX; n], vec![0usize; n]);
        for (i, step) in self.steps.iter().enumerate() {
            for s in step.slots() {
                first[s] = first[s].min(i);
                last[s] = last[s].max(i);
            }
        }
        let pinned = self.heads.iter().flat_map(|h| [h.cls, h.reg]).chain([INPUT_SLOT]);
        for s in pinned {
            first[s] = 0;
            last[s] = usize::MAX;
        }
        let mut assignment = vec![usize::MAX; n];
        let mut buffers: Vec<SlotSpec> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        for i in 0..self.steps.len().max(1) {
            for s in (0..n).filter(|&s| first[s] == i) {
                let spec = self.slots[s];
                let reuse = free.iter().position(|&b| buffers[b] == spec);
                assignment[s] = match reuse {
                    Some(k) => free.swap_remove(k),
                    None => {
                        buffers.push(spec);
                        buffers.len() - 1
                    }
                };
            }
            free.extend((0..n).filter(|&s| last[s] == i && assignment[s] != usize::MAX).map(|s| assignment[s]));
        }
        assignment
    }

    /// Arithmetic of one image at `h`×`w` (multiply-add = 2 FLOP).
    pub fn flops(&self, h: usize, w: usize) -> f64 {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Conv { conv, output, .. } => {
                    let st = self.slots[*output].stride;
                    conv.flops(h / st, w / st)
                }
                Step::Depthwise { dw, output, .. } => {
                    let st = self.slots[*output].stride;
                    dw.flops(h / st, w / st)
                }
                Step::Winograd { wg, output, .. } => {
                    let st = self.slots[*output].stride;
                    wg.flops(h / st, w / st)
                }
                _ => 0.0,
            })
            .sum()
    }
}

struct Builder<'a> {
    map: &'a TensorMap,
    eps: f64,
    /// 3×3 stride-1 convolutions through Winograd F(2×2, 3×3).
    winograd: bool,
    slots: Vec<SlotSpec>,
    steps: Vec<Step>,
}

/// Where a conv writes: a fresh slot, or a part of an existing one.
#[derive(Clone, Copy)]
enum Dest {
    New,
    Into(usize, usize),
}

impl Builder<'_> {
    fn tensor(&self, name: &str) -> Result<&HostTensor> {
        self.map.get(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })
    }

    fn slot(&mut self, stride: usize, channels: usize) -> usize {
        self.slots.push(SlotSpec { stride, cs: round_up(channels, CHANNEL_BLOCK) });
        self.slots.len() - 1
    }

    /// A ConvModule's weights with its BatchNorm folded in: `(OIHW weight, bias, [o, i, k, k])`.
    fn folded(&self, prefix: &str) -> Result<(Vec<f32>, Vec<f32>, [usize; 4])> {
        let w = self.tensor(&join(prefix, "conv.weight"))?;
        let shape: [usize; 4] = w.shape.clone().try_into().map_err(|_| Error::ShapeMismatch {
            name: join(prefix, "conv.weight"),
            expected: vec![0, 0, 0, 0],
            found: w.shape.clone(),
        })?;
        let o = shape[0];
        let per_out = w.data.len() / o;
        let conv_bias = self.map.get(&join(prefix, "conv.bias")).map(|t| t.data.clone()).unwrap_or(vec![0.0; o]);
        let bn = |n: &str| self.tensor(&join(prefix, format!("bn.{n}")));
        let (gamma, beta, mean, var) = (bn("weight")?, bn("bias")?, bn("running_mean")?, bn("running_var")?);
        for t in [gamma, beta, mean, var] {
            if t.data.len() != o {
                return Err(Error::ShapeMismatch {
                    name: join(prefix, "bn"),
                    expected: vec![o],
                    found: t.shape.clone(),
                });
            }
        }
        let mut weight = Vec::with_capacity(w.data.len());
        let mut bias = Vec::with_capacity(o);
        for (c, (ws, cb)) in w.data.chunks_exact(per_out).zip(&conv_bias).enumerate() {
            let scale = gamma.data[c] as f64 / (var.data[c] as f64 + self.eps).sqrt();
            weight.extend(ws.iter().map(|&v| (v as f64 * scale) as f32));
            bias.push(((*cb as f64 - mean.data[c] as f64) * scale + beta.data[c] as f64) as f32);
        }
        Ok((weight, bias, shape))
    }

    /// The slot and channel offset a convolution of `cout` outputs at `stride` writes to.
    fn place(&mut self, stride: usize, cout: usize, dest: Dest) -> (usize, usize) {
        match dest {
            Dest::New => (self.slot(stride, cout), 0),
            Dest::Into(s, o) => (s, o),
        }
    }

    fn emit_conv(&mut self, conv: PackedConv, x: &Val, dest: Dest, residual: Option<&Val>) -> Val {
        let (slot, out_off) = self.place(self.slots[x.slot].stride * conv.stride, conv.cout, dest);
        let residual = residual.map(residual_part);
        let cout = conv.cout;
        self.steps.push(Step::Conv { conv, input: x.slot, output: slot, out_off, residual });
        Val { slot, segments: vec![(out_off, cout)] }
    }

    /// A ConvModule (conv + BN + SiLU) with kernel `k`.
    fn conv_module(&mut self, prefix: &str, x: &Val, stride: usize, dest: Dest, residual: Option<&Val>) -> Result<Val> {
        let (w, bias, [o, i, k, k2]) = self.folded(prefix)?;
        if k != k2 || i != x.channels() {
            return Err(Error::ShapeMismatch {
                name: join(prefix, "conv.weight"),
                expected: vec![o, x.channels(), k, k],
                found: vec![o, i, k, k2],
            });
        }
        if self.winograd && PackedWinograd::suits(i, o, k, stride) {
            let wg = PackedWinograd::new(&w, &bias, o, i, Activation::Silu, x.segments.clone());
            return Ok(self.emit_winograd(wg, x, dest, residual));
        }
        let conv = PackedConv::new(&w, &bias, [o, i, k], stride, Activation::Silu, Some(x.segments.clone()));
        Ok(self.emit_conv(conv, x, dest, residual))
    }

    fn emit_winograd(&mut self, wg: PackedWinograd, x: &Val, dest: Dest, residual: Option<&Val>) -> Val {
        let (slot, out_off) = self.place(self.slots[x.slot].stride, wg.cout, dest);
        let residual = residual.map(residual_part);
        let cout = wg.cout;
        self.steps.push(Step::Winograd { wg, input: x.slot, output: slot, out_off, residual });
        Val { slot, segments: vec![(out_off, cout)] }
    }

    fn depthwise_module(&mut self, prefix: &str, x: &Val, stride: usize) -> Result<Val> {
        let x = self.compact(x);
        let (w, bias, [c, one, k, _]) = self.folded(prefix)?;
        if one != 1 || c != x.channels() {
            return Err(Error::ShapeMismatch {
                name: join(prefix, "conv.weight"),
                expected: vec![x.channels(), 1, k, k],
                found: vec![c, one, k, k],
            });
        }
        let dw = PackedDepthwise::new(&w, &bias, c, k, stride, Activation::Silu);
        let slot = self.slot(self.slots[x.slot].stride * stride, c);
        self.steps.push(Step::Depthwise { dw, input: x.slot, output: slot });
        Ok(Val { slot, segments: vec![(0, c)] })
    }

    /// mmdet's `conv`: dense, or depthwise + pointwise when the weights are separable.
    fn conv(&mut self, prefix: &str, x: &Val, stride: usize, dest: Dest, residual: Option<&Val>) -> Result<Val> {
        if self.map.contains_key(&join(prefix, "depthwise_conv.conv.weight")) {
            let d = self.depthwise_module(&join(prefix, "depthwise_conv"), x, stride)?;
            self.conv_module(&join(prefix, "pointwise_conv"), &d, 1, dest, residual)
        } else {
            self.conv_module(prefix, x, stride, dest, residual)
        }
    }

    /// A copy of `x` with its channels at offset 0 of a slot of its own (no-op when already so).
    fn compact(&mut self, x: &Val) -> Val {
        if x.is_compact() {
            return x.clone();
        }
        let c = x.channels();
        let slot = self.slot(self.slots[x.slot].stride, c);
        let mut off = 0;
        for &(o, n) in &x.segments {
            self.steps.push(Step::Copy { input: x.slot, in_off: o, output: slot, out_off: off, channels: n });
            off += n;
        }
        Val { slot, segments: vec![(0, c)] }
    }

    /// A slot holding parts of `channels[i]` channels, each starting on a block boundary.
    fn concat_slot(&mut self, stride: usize, channels: &[usize]) -> (usize, Vec<usize>) {
        let mut offsets = Vec::new();
        let mut total = 0;
        for &c in channels {
            offsets.push(total);
            total += round_up(c, CHANNEL_BLOCK);
        }
        (self.slot(stride, total), offsets)
    }

    fn csp_layer(&mut self, prefix: &str, x: &Val, add_identity: bool, attention: bool, dest: Dest) -> Result<Val> {
        let mid = self.tensor(&join(prefix, "main_conv.conv.weight"))?.shape[0];
        let stride = self.slots[x.slot].stride;
        let (cat, offs) = self.concat_slot(stride, &[mid, mid]);
        let short = self.conv_module(&join(prefix, "short_conv"), x, 1, Dest::Into(cat, offs[1]), None)?;
        let mut y = self.conv_module(&join(prefix, "main_conv"), x, 1, Dest::New, None)?;
        let blocks = (0..).take_while(|j| self.map.contains_key(&block_probe(prefix, *j))).count();
        for j in 0..blocks {
            let p = join(prefix, format!("blocks.{j}"));
            let t = self.conv(&join(&p, "conv1"), &y, 1, Dest::New, None)?;
            let d = self.depthwise_module(&join(&p, "conv2.depthwise_conv"), &t, 1)?;
            let last = j + 1 == blocks;
            let dest = if last { Dest::Into(cat, offs[0]) } else { Dest::New };
            y = self.conv_module(&join(&p, "conv2.pointwise_conv"), &d, 1, dest, add_identity.then_some(&y))?;
        }
        if blocks == 0 {
            let c = y.channels();
            self.steps.push(Step::Copy { input: y.slot, in_off: 0, output: cat, out_off: offs[0], channels: c });
        }
        let cat_val = Val { slot: cat, segments: vec![(offs[0], mid), short.segments[0]] };
        if attention {
            self.attention(&join(prefix, "attention.fc"), &cat_val)?;
        }
        self.conv_module(&join(prefix, "final_conv"), &cat_val, 1, dest, None)
    }

    fn attention(&mut self, prefix: &str, x: &Val) -> Result<()> {
        let c = x.channels();
        let w = self.tensor(&join(prefix, "weight"))?;
        let b = self.tensor(&join(prefix, "bias"))?;
        if w.data.len() != c * c || b.data.len() != c {
            return Err(Error::ShapeMismatch {
                name: join(prefix, "weight"),
                expected: vec![c, c, 1, 1],
                found: w.shape.clone(),
            });
        }
        let positions = x.segments.iter().flat_map(|&(o, n)| o..o + n).collect();
        let gate = ChannelGate { channels: c, positions, weight: w.data.clone(), bias: b.data.clone() };
        self.steps.push(Step::Attention { gate, slot: x.slot });
        Ok(())
    }

    fn spp(&mut self, prefix: &str, x: &Val) -> Result<Val> {
        let mid = self.tensor(&join(prefix, "conv1.conv.weight"))?.shape[0];
        let (cat, offs) = self.concat_slot(self.slots[x.slot].stride, &[mid; 4]);
        self.conv_module(&join(prefix, "conv1"), x, 1, Dest::Into(cat, offs[0]), None)?;
        let pairs = offs.windows(2).map(|w| (w[0], w[1])).collect();
        self.steps.push(Step::Pool { slot: cat, pairs, channels: round_up(mid, CHANNEL_BLOCK) });
        let v = Val { slot: cat, segments: offs.iter().map(|&o| (o, mid)).collect() };
        self.conv_module(&join(prefix, "conv2"), &v, 1, Dest::New, None)
    }

    /// Copies compact `b` (padding channels included) into `slot` at channel `offset`.
    fn copy_part(&mut self, b: &Val, slot: usize, offset: usize) {
        let channels = round_up(b.channels(), CHANNEL_BLOCK);
        self.steps.push(Step::Copy { input: b.slot, in_off: 0, output: slot, out_off: offset, channels });
    }

    /// `cat([upsample2x(a), b])` in a new slot at `b`'s resolution.
    fn upsample_cat(&mut self, a: &Val, b: &Val) -> Val {
        let (a, b) = (self.compact(a), self.compact(b));
        let (ca, cb) = (a.channels(), b.channels());
        let (cat, offs) = self.concat_slot(self.slots[b.slot].stride, &[ca, cb]);
        self.steps.push(Step::Upsample { input: a.slot, output: cat, out_off: offs[0], channels: round_up(ca, 16) });
        self.copy_part(&b, cat, offs[1]);
        Val { slot: cat, segments: vec![(offs[0], ca), (offs[1], cb)] }
    }

    /// `cat([conv(x, stride 2), b])`, the conv writing straight into the concatenation.
    fn down_cat(&mut self, prefix: &str, x: &Val, b: &Val) -> Result<Val> {
        let b = self.compact(b);
        let c_down = self.out_channels(prefix)?;
        let cb = b.channels();
        let (cat, offs) = self.concat_slot(self.slots[b.slot].stride, &[c_down, cb]);
        self.conv(prefix, x, 2, Dest::Into(cat, offs[0]), None)?;
        self.copy_part(&b, cat, offs[1]);
        Ok(Val { slot: cat, segments: vec![(offs[0], c_down), (offs[1], cb)] })
    }

    fn out_channels(&self, conv_prefix: &str) -> Result<usize> {
        let name = if self.map.contains_key(&join(conv_prefix, "pointwise_conv.conv.weight")) {
            join(conv_prefix, "pointwise_conv.conv.weight")
        } else {
            join(conv_prefix, "conv.weight")
        };
        Ok(self.tensor(&name)?.shape[0])
    }

    /// A plain biased 1×1 conv without activation (the head's predictors).
    fn predictor(&mut self, prefix: &str, x: &Val) -> Result<Val> {
        let w = self.tensor(&join(prefix, "weight"))?;
        let b = self.tensor(&join(prefix, "bias"))?;
        let (o, i) = (w.shape[0], w.data.len() / w.shape[0].max(1));
        if i != x.channels() || b.data.len() != o {
            return Err(Error::ShapeMismatch {
                name: join(prefix, "weight"),
                expected: vec![o, x.channels(), 1, 1],
                found: w.shape.clone(),
            });
        }
        let conv = PackedConv::new(&w.data, &b.data, [o, i, 1], 1, Activation::Identity, Some(x.segments.clone()));
        Ok(self.emit_conv(conv, x, Dest::New, None))
    }
}

/// A residual is read as one part: `(slot, channel offset)`.
fn residual_part(r: &Val) -> (usize, usize) {
    assert!(r.segments.len() == 1, "a residual is one part");
    (r.slot, r.segments[0].0)
}

fn block_probe(prefix: &str, j: usize) -> String {
    join(prefix, format!("blocks.{j}.conv2.pointwise_conv.conv.weight"))
}

fn backbone(b: &mut Builder, cfg: &ModelConfig, input: Val) -> Result<[Val; 3]> {
    let mut x = input;
    for i in 0..3 {
        x = b.conv_module(&format!("backbone.stem.{i}"), &x, if i == 0 { 2 } else { 1 }, Dest::New, None)?;
    }
    let mut outs = Vec::new();
    for (i, spec) in cfg.stages().iter().enumerate() {
        let prefix = format!("backbone.stage{}", i + 1);
        x = b.conv(&join(&prefix, 0), &x, 2, Dest::New, None)?;
        let mut idx = 1;
        if spec.use_spp {
            x = b.spp(&join(&prefix, idx), &x)?;
            idx += 1;
        }
        x = b.csp_layer(&join(&prefix, idx), &x, spec.add_identity, true, Dest::New)?;
        if i >= 1 {
            outs.push(x.clone());
        }
    }
    Ok(outs.try_into().expect("three backbone outputs"))
}

fn neck(b: &mut Builder, _cfg: &ModelConfig, [c3, c4, c5]: [Val; 3]) -> Result<[Val; 3]> {
    let csp = |b: &mut Builder, p: &str, x: &Val| b.csp_layer(&format!("neck.{p}"), x, false, false, Dest::New);
    let r5 = b.conv_module("neck.reduce_layers.0", &c5, 1, Dest::New, None)?;
    let cat = b.upsample_cat(&r5, &c4);
    let t4 = csp(b, "top_down_blocks.0", &cat)?;
    let r4 = b.conv_module("neck.reduce_layers.1", &t4, 1, Dest::New, None)?;
    let cat = b.upsample_cat(&r4, &c3);
    let n3 = csp(b, "top_down_blocks.1", &cat)?;
    let cat = b.down_cat("neck.downsamples.0", &n3, &r4)?;
    let n4 = csp(b, "bottom_up_blocks.0", &cat)?;
    let cat = b.down_cat("neck.downsamples.1", &n4, &r5)?;
    let n5 = csp(b, "bottom_up_blocks.1", &cat)?;
    let mut outs = Vec::new();
    for (i, x) in [n3, n4, n5].iter().enumerate() {
        outs.push(b.conv(&format!("neck.out_convs.{i}"), x, 1, Dest::New, None)?);
    }
    Ok(outs.try_into().expect("three neck outputs"))
}

fn head(b: &mut Builder, cfg: &ModelConfig, feats: &[Val; 3]) -> Result<Vec<HeadSlots>> {
    let mut heads = Vec::new();
    for (level, x) in feats.iter().enumerate() {
        let tower = |b: &mut Builder, name: &str| -> Result<Val> {
            let mut y = x.clone();
            for i in 0..cfg.stacked_convs {
                y = b.conv(&format!("bbox_head.{name}.{level}.{i}"), &y, 1, Dest::New, None)?;
            }
            Ok(y)
        };
        let c = tower(b, "cls_convs")?;
        let cls = b.predictor(&format!("bbox_head.rtm_cls.{level}"), &c)?;
        let r = tower(b, "reg_convs")?;
        let reg = b.predictor(&format!("bbox_head.rtm_reg.{level}"), &r)?;
        heads.push(HeadSlots { cls: cls.slot, reg: reg.slot, stride: STRIDES[level] });
    }
    Ok(heads)
}
