//! The fast CPU inference engine.
//!
//! burn runs training and GPU inference; on a CPU, [`CpuEngine`] runs the same network from
//! the same tensors much faster: [`plan`] compiles the [`Graph`] into kernel calls, folding
//! BatchNorm into the convolutions and fusing activations, residuals and concatenations; the
//! kernels (crate `rtmdet-kernels`) are direct NHWC convolutions written once over a SIMD
//! trait and compiled for AVX-512, AVX2+FMA and portable Rust, chosen at run time; buffers
//! are allocated on the first call and reused.

pub mod plan;

use std::sync::Mutex;

pub use plan::Plan;
pub use rtmdet_kernels as kernels;
use rtmdet_kernels::tensor::FeatureMap;
pub use rtmdet_kernels::{Isa, peak};
use rtmdet_kernels::{attention, conv, depthwise, layout, pool, winograd};

use super::Engine;
use crate::coders::distance_point;
use crate::error::{Error, Result};
use crate::model::params::TensorMap;
use crate::model::{Graph, HeadOutputs, LevelOutputs};
use plan::{INPUT_SLOT, Step};

/// How to run the engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuOptions {
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Instruction set (default: the best the CPU has, capped by `RTMDET_ISA`).
    pub isa: Option<Isa>,
    /// Compute 3×3 stride-1 convolutions directly instead of by Winograd F(2×2, 3×3).
    pub direct_3x3: bool,
}

/// A network compiled for the CPU.
pub struct CpuEngine {
    plan: Plan,
    isa: Isa,
    threads: usize,
    pool: rayon::ThreadPool,
    /// Slot → buffer (slots with disjoint lifetimes share buffers).
    buffer_of: Vec<usize>,
    buffers: Mutex<Vec<FeatureMap>>,
}

impl CpuEngine {
    /// Builds the engine for `graph` from its tensors (checkpoint names).
    pub fn new(graph: &Graph, map: &TensorMap, opts: CpuOptions) -> Result<Self> {
        let plan = Plan::build(graph, map, !opts.direct_3x3)?;
        let best = Isa::detect();
        let isa = opts.isa.map_or(best, |i| i.min(Isa::best_supported()));
        let threads = opts.threads.unwrap_or_else(default_threads).max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("rtmdet-cpu-{i}"))
            .build()
            .map_err(|e| Error::Config(format!("cannot start {threads} threads: {e}")))?;
        let buffer_of = plan.buffer_assignment();
        let count = buffer_of.iter().max().map_or(0, |m| m + 1);
        let buffers = Mutex::new(vec![FeatureMap::default(); count]);
        Ok(CpuEngine { plan, isa, threads, pool, buffer_of, buffers })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// [`CpuEngine::forward`] that also times every step (for `rtmdet bench --profile`).
    pub fn forward_profiled(&self, input: &[f32], dims: [usize; 4]) -> (HeadOutputs, Vec<StepTime>) {
        let mut times = Vec::new();
        let out = self.forward_timed(input, dims, Some(&mut times));
        (out, times)
    }

    fn forward_timed(&self, input: &[f32], dims: [usize; 4], mut times: Option<&mut Vec<StepTime>>) -> HeadOutputs {
        let [n, c, h, w] = dims;
        assert!(c == 3 && h.is_multiple_of(32) && w.is_multiple_of(32), "input {dims:?} must be [N, 3, 32k, 32k]");
        let mut bufs = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, spec) in self.plan.slots.iter().enumerate() {
            bufs[self.buffer_of[slot]].ensure(n, h / spec.stride, w / spec.stride, spec.cs);
        }
        let bufs_ref: &mut [FeatureMap] = &mut bufs;
        self.pool.install(|| {
            bufs_ref[self.buffer_of[INPUT_SLOT]].fill_from_nchw(input, dims);
            for step in &self.plan.steps {
                let t = std::time::Instant::now();
                self.run_step(step, bufs_ref);
                if let Some(times) = times.as_deref_mut() {
                    times.push(StepTime::of(step, &self.plan, h, w, n, t.elapsed().as_secs_f64() * 1e3));
                }
            }
        });
        self.pool.install(|| self.outputs(&bufs))
    }

    fn run_step(&self, step: &Step, bufs: &mut [FeatureMap]) {
        let isa = self.isa;
        let b = |slot: usize| self.buffer_of[slot];
        match step {
            Step::Conv { conv, input, output, out_off, residual } => {
                let mut out = std::mem::take(&mut bufs[b(*output)]);
                let res = residual.map(|(s, off)| (&bufs[b(s)], off));
                conv::conv2d(isa, conv, &bufs[b(*input)], &mut out, *out_off, res);
                bufs[b(*output)] = out;
            }
            Step::Winograd { wg, input, output, out_off, residual } => {
                let mut out = std::mem::take(&mut bufs[b(*output)]);
                let res = residual.map(|(s, off)| (&bufs[b(s)], off));
                winograd::winograd_conv(isa, wg, &bufs[b(*input)], &mut out, *out_off, res);
                bufs[b(*output)] = out;
            }
            Step::Depthwise { dw, input, output } => {
                let mut out = std::mem::take(&mut bufs[b(*output)]);
                depthwise::depthwise2d(isa, dw, &bufs[b(*input)], &mut out);
                bufs[b(*output)] = out;
            }
            Step::Pool { slot, pairs, channels } => {
                for &(src, dst) in pairs {
                    pool::max_pool(isa, &mut bufs[b(*slot)], src, dst, *channels, 5);
                }
            }
            Step::Attention { gate, slot } => attention::channel_attention(isa, gate, &mut bufs[b(*slot)]),
            Step::Upsample { input, output, out_off, channels } => {
                let mut out = std::mem::take(&mut bufs[b(*output)]);
                layout::upsample2x(&bufs[b(*input)], 0, &mut out, *out_off, *channels);
                bufs[b(*output)] = out;
            }
            Step::Resize { input, output, out_off, channels } => {
                let mut out = std::mem::take(&mut bufs[b(*output)]);
                layout::resize_bilinear(&bufs[b(*input)], 0, &mut out, *out_off, *channels);
                bufs[b(*output)] = out;
            }
            Step::Copy { input, in_off, output, out_off, channels } => {
                let mut out = std::mem::take(&mut bufs[b(*output)]);
                layout::copy_channels(&bufs[b(*input)], *in_off, &mut out, *out_off, *channels);
                bufs[b(*output)] = out;
            }
        }
    }

    /// Logits and decoded distances (`raw·stride` or `exp(raw)·stride`) as NCHW.
    fn outputs(&self, bufs: &[FeatureMap]) -> HeadOutputs {
        let levels = self
            .plan
            .heads
            .iter()
            .map(|h| {
                let cls_map = &bufs[self.buffer_of[h.cls]];
                let cls = cls_map.to_nchw(0, self.plan.num_classes);
                let stride = h.stride as f32;
                let (exp, relu) = (self.plan.exp_on_reg, h.relu_reg);
                let reg = bufs[self.buffer_of[h.reg]]
                    .to_nchw(0, 4)
                    .into_iter()
                    .map(|v| distance_point::distance_from_raw(if relu { v.max(0.0) } else { v }, stride, exp));
                let angle = h.angle.map(|a| bufs[self.buffer_of[a]].to_nchw(0, 1)).unwrap_or_default();
                let kernel = h
                    .kernel
                    .map(|k| bufs[self.buffer_of[k]].to_nchw(0, crate::model::head::KERNEL_PARAMS))
                    .unwrap_or_default();
                LevelOutputs {
                    cls,
                    reg: reg.collect(),
                    angle,
                    kernel,
                    dims: [cls_map.n, self.plan.num_classes, cls_map.h, cls_map.w],
                    stride: h.stride,
                }
            })
            .collect();
        let mask_feat = self.plan.mask_feat.map(|m| {
            let map = &bufs[self.buffer_of[m]];
            let c = crate::model::head::NUM_PROTOTYPES;
            crate::model::MaskFeatures { data: map.to_nchw(0, c), dims: [map.n, c, map.h, map.w] }
        });
        HeadOutputs { levels, mask_feat }
    }
}

/// The measured time of one step.
#[derive(Clone, Debug)]
pub struct StepTime {
    /// `conv3x3/s2 24→48 @160x160` style description.
    pub what: String,
    pub kind: &'static str,
    pub ms: f64,
    pub flops: f64,
}

impl StepTime {
    fn of(step: &Step, plan: &Plan, h: usize, w: usize, n: usize, ms: f64) -> StepTime {
        let at = |slot: usize| {
            let st = plan.slots[slot].stride;
            (h / st, w / st)
        };
        let (kind, what, flops) = match step {
            Step::Conv { conv, output, .. } => {
                let (oh, ow) = at(*output);
                let kind = if conv.k == 1 { "conv1x1" } else { "conv3x3" };
                let what = format!("conv{}x{}/s{} {}→{} @{oh}x{ow}", conv.k, conv.k, conv.stride, conv.cin, conv.cout);
                (kind, what, conv.flops(oh, ow) * n as f64)
            }
            Step::Winograd { wg, output, .. } => {
                let (oh, ow) = at(*output);
                let what = format!("winograd3x3 {}→{} @{oh}x{ow}", wg.cin, wg.cout);
                ("winograd", what, wg.flops(oh, ow) * n as f64)
            }
            Step::Depthwise { dw, output, .. } => {
                let (oh, ow) = at(*output);
                let what = format!("dw{}x{}/s{} {} @{oh}x{ow}", dw.k, dw.k, dw.stride, dw.channels);
                ("depthwise", what, dw.flops(oh, ow) * n as f64)
            }
            Step::Pool { slot, .. } => ("pool", format!("spp pools @{:?}", at(*slot)), 0.0),
            Step::Attention { gate, .. } => ("attention", format!("attention {}", gate.channels), 0.0),
            Step::Upsample { channels, .. } => ("copy", format!("upsample {channels}"), 0.0),
            Step::Resize { channels, .. } => ("copy", format!("bilinear resize {channels}"), 0.0),
            Step::Copy { channels, .. } => ("copy", format!("copy {channels}"), 0.0),
        };
        StepTime { what, kind, ms, flops }
    }
}

impl Engine for CpuEngine {
    fn forward(&self, input: &[f32], dims: [usize; 4]) -> HeadOutputs {
        self.forward_timed(input, dims, None)
    }

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn thread_pool(&self) -> Option<&rayon::ThreadPool> {
        Some(&self.pool)
    }

    fn as_cpu(&self) -> Option<&CpuEngine> {
        Some(self)
    }
}

/// All cores the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
