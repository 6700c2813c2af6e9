//! Turns a model's tensors into a list of kernel calls: BatchNorm folded into the convs,
//! SiLU into their epilogues, residuals added on store, concatenations written in place by
//! their producers (each part on a 16-channel boundary) wherever the producer is a conv.

use crate::error::{Error, Result};
use crate::model::fold::{self, FoldedConv};
use crate::model::graph::{Graph, NodeId, Op};
use crate::model::params::TensorMap;
use rtmdet_kernels::Activation;
use rtmdet_kernels::attention::ChannelGate;
use rtmdet_kernels::conv::PackedConv;
use rtmdet_kernels::depthwise::PackedDepthwise;
use rtmdet_kernels::tensor::{CHANNEL_BLOCK, round_up};
use rtmdet_kernels::winograd::PackedWinograd;

/// A buffer of the plan: its resolution (input pixels per map pixel) and floats per pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotSpec {
    pub stride: usize,
    pub cs: usize,
}

/// Where a value's channels live: a slot and `(offset, count)` runs of channels in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub slot: usize,
    pub segments: Vec<(usize, usize)>,
}

impl Location {
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
    /// Bilinear resize to the output slot's resolution (RTMDet-Ins mask features).
    Resize {
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
            | Step::Resize { input, output, .. }
            | Step::Copy { input, output, .. } => vec![*input, *output],
            Step::Pool { slot, .. } | Step::Attention { slot, .. } => vec![*slot],
        }
    }
}

/// One pyramid level's head outputs: logits in `cls`, raw distances in `reg` (ReLU still to
/// apply when `relu_reg`, RTMDet-Ins), raw angles in `angle` (RTMDet-R), dynamic-conv
/// kernels in `kernel` (RTMDet-Ins), all at offset 0.
#[derive(Clone, Copy, Debug)]
pub struct HeadSlots {
    pub cls: usize,
    pub reg: usize,
    pub relu_reg: bool,
    pub angle: Option<usize>,
    pub kernel: Option<usize>,
    pub stride: usize,
}

impl HeadSlots {
    fn slots(&self) -> impl Iterator<Item = usize> + use<> {
        [Some(self.cls), Some(self.reg), self.angle, self.kernel].into_iter().flatten()
    }
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub slots: Vec<SlotSpec>,
    pub steps: Vec<Step>,
    pub heads: Vec<HeadSlots>,
    /// RTMDet-Ins prototypes (8 channels at offset 0).
    pub mask_feat: Option<usize>,
    pub num_classes: usize,
    pub exp_on_reg: bool,
}

/// Slot 0 is the network input: 3 channels, not padded (only convs read it).
pub const INPUT_SLOT: usize = 0;

impl Plan {
    /// Compiles `graph` with the weights in `map` (checkpoint names). `winograd`: 3×3
    /// stride-1 convolutions through Winograd F(2×2, 3×3) (fewer multiplies; the direct
    /// kernel otherwise).
    pub fn build(graph: &Graph, map: &TensorMap, winograd: bool) -> Result<Plan> {
        let consumers = graph.consumers();
        let mut b = Builder {
            graph,
            consumers: &consumers,
            map,
            winograd,
            slots: vec![SlotSpec { stride: 1, cs: 3 }],
            steps: Vec::new(),
            locations: vec![None; graph.nodes.len()],
            parts: vec![None; graph.nodes.len()],
        };
        for id in 0..graph.nodes.len() {
            b.compile(id)?;
        }
        let val = |n: NodeId| b.locations[n].as_ref().map(|v| v.slot).expect("head outputs are compiled");
        let heads = graph
            .levels
            .iter()
            .map(|l| HeadSlots {
                cls: val(l.cls),
                reg: val(l.reg),
                relu_reg: graph.nodes[l.reg].op == Op::Relu,
                angle: l.angle.map(val),
                kernel: l.kernel.map(val),
                stride: l.stride,
            })
            .collect();
        Ok(Plan {
            slots: b.slots,
            steps: b.steps,
            heads,
            mask_feat: graph.mask_feat.map(val),
            num_classes: graph.num_classes,
            exp_on_reg: graph.exp_on_reg,
        })
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
        let pinned = self.heads.iter().flat_map(HeadSlots::slots).chain(self.mask_feat).chain([INPUT_SLOT]);
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

/// Compiles graph nodes into steps, one node at a time in graph order.
struct Builder<'a> {
    graph: &'a Graph,
    consumers: &'a [Vec<NodeId>],
    map: &'a TensorMap,
    /// 3×3 stride-1 convolutions through Winograd F(2×2, 3×3).
    winograd: bool,
    slots: Vec<SlotSpec>,
    steps: Vec<Step>,
    /// Where each compiled node's value lives.
    locations: Vec<Option<Location>>,
    /// Concatenations (and SPP pools) whose slot exists: `(slot, offset of each part)`.
    parts: Vec<Option<(usize, Vec<usize>)>>,
}

/// Where a conv writes: a fresh slot, or a part of an existing one.
#[derive(Clone, Copy)]
enum Dest {
    New,
    Into(usize, usize),
}

impl Builder<'_> {
    fn slot(&mut self, stride: usize, channels: usize) -> usize {
        self.slots.push(SlotSpec { stride, cs: round_up(channels, CHANNEL_BLOCK) });
        self.slots.len() - 1
    }

    fn location(&self, node: NodeId) -> &Location {
        self.locations[node].as_ref().expect("inputs are compiled before their readers")
    }

    /// The single reader of `node`, if it has exactly one.
    fn sole_consumer(&self, node: NodeId) -> Option<NodeId> {
        match self.consumers[node].as_slice() {
            [c] => Some(*c),
            _ => None,
        }
    }

    /// A residual `Add` that the conv `node` can add in its epilogue: `node` is the Add's only
    /// producer still to run (its other input exists already) and nothing else reads `node`.
    fn fused_add(&self, node: NodeId) -> Option<(NodeId, NodeId)> {
        let add = self.sole_consumer(node)?;
        let n = &self.graph.nodes[add];
        (n.op == Op::Add && n.inputs[0] == node && n.inputs[1] < node).then(|| (add, n.inputs[1]))
    }

    /// Where the value of `node` should be written: straight into the concatenation (or SPP
    /// pool) that is its only reader, else a fresh slot.
    fn dest(&mut self, node: NodeId) -> Dest {
        let Some(cat) = self.sole_consumer(node) else { return Dest::New };
        let cat_node = &self.graph.nodes[cat];
        if !matches!(cat_node.op, Op::Concat | Op::SppPool { .. }) {
            return Dest::New;
        }
        let part = cat_node.inputs.iter().position(|&i| i == node).expect("a reader lists its input");
        let (slot, offsets) = self.concat_slot(cat);
        Dest::Into(slot, offsets[part])
    }

    /// The slot of concatenation `cat`, created on first use with each part on a block boundary.
    fn concat_slot(&mut self, cat: NodeId) -> (usize, Vec<usize>) {
        if let Some(p) = &self.parts[cat] {
            return p.clone();
        }
        let n = &self.graph.nodes[cat];
        let channels: Vec<usize> = match &n.op {
            Op::SppPool { kernels } => vec![self.graph.nodes[n.inputs[0]].channels; kernels.len() + 1],
            _ => n.inputs.iter().map(|&i| self.graph.nodes[i].channels).collect(),
        };
        let mut offsets = Vec::new();
        let mut total = 0;
        for &c in &channels {
            offsets.push(total);
            total += round_up(c, CHANNEL_BLOCK);
        }
        let slot = self.slot(n.stride, total);
        self.parts[cat] = Some((slot, offsets.clone()));
        (slot, offsets)
    }

    fn compile(&mut self, id: NodeId) -> Result<()> {
        let node = &self.graph.nodes[id];
        let val = match &node.op {
            Op::Input => Location { slot: INPUT_SLOT, segments: vec![(0, 3)] },
            Op::ConvModule { conv, norm } => {
                let x = self.location(node.inputs[0]).clone();
                self.conv_module(id, *conv, *norm, &x)?
            }
            Op::Conv { conv } => {
                let x = self.location(node.inputs[0]).clone();
                self.predictor(*conv, &x)?
            }
            Op::Add => match &self.locations[id] {
                Some(v) => v.clone(),
                None => return Err(Error::Config(format!("{}: an addition the CPU engine cannot fuse", node.name))),
            },
            Op::Concat => self.concat(id),
            Op::Upsample2x => self.resample(id, |input, output, out_off, channels| Step::Upsample {
                input,
                output,
                out_off,
                channels,
            }),
            Op::SppPool { kernels } => self.spp_pool(id, kernels)?,
            Op::ChannelAttention { fc } => {
                let x = self.location(node.inputs[0]).clone();
                self.attention(*fc, &x)?;
                x
            }
            // The head's ReLU is applied when the distances are read out (`HeadSlots::relu_reg`).
            Op::Relu if self.graph.levels.iter().any(|l| l.reg == id) => self.location(node.inputs[0]).clone(),
            Op::Relu => {
                return Err(Error::Config(format!(
                    "{}: the CPU engine applies ReLU to head distances only",
                    node.name
                )));
            }
            Op::ResizeBilinearLike => {
                self.resample(id, |input, output, out_off, channels| Step::Resize { input, output, out_off, channels })
            }
        };
        self.locations[id] = Some(val);
        Ok(())
    }

    /// Folded conv + SiLU (depthwise, Winograd or direct), writing into a concatenation and
    /// adding a residual in its epilogue where the graph allows.
    fn conv_module(&mut self, id: NodeId, conv: usize, norm: usize, x: &Location) -> Result<Location> {
        let FoldedConv { weight: w, bias, shape: [o, i, k, _] } = fold::conv_module(self.graph, self.map, conv, norm)?;
        let p = &self.graph.convs[conv];
        let stride = p.stride;
        if p.is_depthwise() {
            let x = self.compact(x);
            let dw = PackedDepthwise::new(&w, &bias, o, k, stride, Activation::Silu);
            let slot = self.slot(self.slots[x.slot].stride * stride, o);
            self.steps.push(Step::Depthwise { dw, input: x.slot, output: slot });
            return Ok(Location { slot, segments: vec![(0, o)] });
        }
        let fused = self.fused_add(id);
        let dest = self.dest(fused.map_or(id, |(add, _)| add));
        let residual = fused.map(|(_, r)| residual_part(self.location(r)));
        let out_stride = self.slots[x.slot].stride * stride;
        let (slot, out_off) = match dest {
            Dest::New => (self.slot(out_stride, o), 0),
            Dest::Into(s, off) => (s, off),
        };
        let (input, output) = (x.slot, slot);
        if self.winograd && PackedWinograd::suits(i, o, k, stride) {
            let wg = PackedWinograd::new(&w, &bias, o, i, Activation::Silu, x.segments.clone());
            self.steps.push(Step::Winograd { wg, input, output, out_off, residual });
        } else {
            let conv = PackedConv::new(&w, &bias, [o, i, k], stride, Activation::Silu, Some(x.segments.clone()));
            self.steps.push(Step::Conv { conv, input, output, out_off, residual });
        }
        let val = Location { slot, segments: vec![(out_off, o)] };
        if let Some((add, _)) = fused {
            self.locations[add] = Some(val.clone());
        }
        Ok(val)
    }

    /// A plain biased conv without activation (the head's predictors), into a fresh slot.
    fn predictor(&mut self, conv: usize, x: &Location) -> Result<Location> {
        let p = &self.graph.convs[conv];
        let (w, b) = fold::biased(self.graph, self.map, conv)?;
        let (o, i, k, stride) = (p.cout, p.cin, p.k, p.stride);
        let conv = PackedConv::new(&w.data, &b.data, [o, i, k], stride, Activation::Identity, Some(x.segments.clone()));
        let slot = self.slot(self.slots[x.slot].stride * stride, o);
        self.steps.push(Step::Conv { conv, input: x.slot, output: slot, out_off: 0, residual: None });
        Ok(Location { slot, segments: vec![(0, o)] })
    }

    /// A copy of `x` with its channels at offset 0 of a slot of its own (no-op when already so).
    fn compact(&mut self, x: &Location) -> Location {
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
        Location { slot, segments: vec![(0, c)] }
    }

    /// The concatenation's parts that were not written in place are copied in (padding
    /// channels included).
    fn concat(&mut self, id: NodeId) -> Location {
        let (slot, offsets) = self.concat_slot(id);
        let inputs = self.graph.nodes[id].inputs.clone();
        let mut segments = Vec::new();
        for (&input, &off) in inputs.iter().zip(&offsets) {
            self.place_part(input, slot, off);
            segments.push((off, self.graph.nodes[input].channels));
        }
        Location { slot, segments }
    }

    /// Copies the value of `input` into part `off` of concatenation `slot` (padding channels
    /// included), unless its producer already wrote it there.
    fn place_part(&mut self, input: NodeId, slot: usize, off: usize) {
        let v = self.location(input).clone();
        if v.slot != slot {
            let v = self.compact(&v);
            let channels = round_up(v.channels(), CHANNEL_BLOCK);
            self.steps.push(Step::Copy { input: v.slot, in_off: 0, output: slot, out_off: off, channels });
        }
    }

    /// Nearest 2× upsampling, written into the concatenation that reads it when there is one.
    /// A resampling of the node's input to the node's resolution (nearest 2× or bilinear),
    /// written into its concatenation when that is its only reader.
    fn resample(&mut self, id: NodeId, step: fn(usize, usize, usize, usize) -> Step) -> Location {
        let node = &self.graph.nodes[id];
        let c = node.channels;
        let x = self.location(node.inputs[0]).clone();
        let x = self.compact(&x);
        let (output, out_off) = match self.dest(id) {
            Dest::New => (self.slot(node.stride, c), 0),
            Dest::Into(s, o) => (s, o),
        };
        self.steps.push(step(x.slot, output, out_off, round_up(c, CHANNEL_BLOCK)));
        Location { slot: output, segments: vec![(out_off, c)] }
    }

    /// SPP's `cat[x, pool5, pool9, pool13]` as chained 5×5 pools inside the concatenation
    /// (`pool9 = pool5∘pool5`, `pool13 = pool5∘pool5∘pool5`; max is exact).
    fn spp_pool(&mut self, id: NodeId, kernels: &[usize]) -> Result<Location> {
        let node = &self.graph.nodes[id];
        if kernels.iter().enumerate().any(|(j, &k)| k != 5 + 4 * j) {
            return Err(Error::Config(format!("{}: the CPU engine pools SPP kernels 5, 9, 13 only", node.name)));
        }
        let mid = self.graph.nodes[node.inputs[0]].channels;
        let (slot, offsets) = self.concat_slot(id);
        self.place_part(node.inputs[0], slot, offsets[0]);
        let pairs = offsets.windows(2).map(|w| (w[0], w[1])).collect();
        self.steps.push(Step::Pool { slot, pairs, channels: round_up(mid, CHANNEL_BLOCK) });
        Ok(Location { slot, segments: offsets.iter().map(|&o| (o, mid)).collect() })
    }

    /// Channel attention, applied in place to the channels of `x`.
    fn attention(&mut self, fc: usize, x: &Location) -> Result<()> {
        let (w, b) = fold::biased(self.graph, self.map, fc)?;
        let positions = x.segments.iter().flat_map(|&(o, n)| o..o + n).collect();
        let gate = ChannelGate { channels: x.channels(), positions, weight: w.data.clone(), bias: b.data.clone() };
        self.steps.push(Step::Attention { gate, slot: x.slot });
        Ok(())
    }
}

/// A residual is read as one part: `(slot, channel offset)`.
fn residual_part(r: &Location) -> (usize, usize) {
    assert!(r.segments.len() == 1, "a residual is one part");
    (r.slot, r.segments[0].0)
}
