//! Inference engines: code that turns a normalised image batch into [`HeadOutputs`].
//!
//! Two implement [`Engine`]: [`burn::BurnEngine`] runs the burn model (any burn device, the
//! reference for training parity) and [`cpu::CpuEngine`] runs the fused CPU plan compiled from
//! the same [`Graph`](crate::model::Graph). A [`Detector`](crate::Detector) owns exactly one,
//! chosen once with [`EngineKind`]; post-processing sees only [`HeadOutputs`].

pub mod burn;
pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda_probe;

use ::burn::tensor::Device;

use crate::error::{Error, Result};
use crate::model::params::TensorMap;
use crate::model::{Graph, HeadOutputs};

/// Runs the network.
pub trait Engine: Send + Sync {
    /// Normalised BGR input `[N, 3, H, W]` (flat NCHW, H and W multiples of 32) → raw head
    /// outputs per level.
    fn forward(&self, input: &[f32], dims: [usize; 4]) -> HeadOutputs;

    /// `cpu` or `burn`, for reports.
    fn name(&self) -> &'static str;

    /// The engine's worker threads, which post-processing runs on too (`--threads`).
    fn thread_pool(&self) -> Option<&rayon::ThreadPool> {
        None
    }

    /// The CPU engine, for benchmarks and profiles.
    fn as_cpu(&self) -> Option<&cpu::CpuEngine> {
        None
    }

    /// The burn engine, for intermediate features and tensors.
    fn as_burn(&self) -> Option<&burn::BurnEngine> {
        None
    }
}

/// `cpu` (burn's flex backend); in builds with the `cuda` feature `cuda` / `cuda:N`; with the
/// `wgpu` feature `wgpu` (the best adapter: Vulkan, Metal or DX12), `wgpu:N` (the N-th discrete
/// GPU) or `wgpu:cpu` (a software adapter such as Mesa's lavapipe); with the `vulkan` feature
/// the same as `vulkan`, `vulkan:N`, `vulkan:cpu` (Vulkan only, SPIR-V kernels).
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (k, Some(i)),
        None => (name.as_str(), None),
    };
    let fail = |reason: String| Error::Device { device: name.clone(), reason };
    // Used by the GPU kinds a build has.
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu", feature = "vulkan")), allow(unused_variables))]
    let number = |i: &str| i.parse::<usize>().map_err(|_| fail(format!("expected {kind}:N")));
    match kind {
        "cpu" | "flex" if index.is_none() => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => {
            let index = index.map_or(Ok(0), number)?;
            cuda_probe::check(index).map_err(fail)?;
            Ok(Device::cuda(index))
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(graphics_device(index, number)?)),
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(graphics_device(index, number)?)),
        // The kinds this build lacks (those it has matched above).
        #[allow(unreachable_patterns)]
        "cuda" | "wgpu" | "vulkan" => {
            Err(fail(format!("this build has no {kind} support; rebuild with `--features {kind}`")))
        }
        _ => Err(fail("unknown device (expected cpu, cuda[:N], wgpu[:N|:cpu] or vulkan[:N|:cpu])".into())),
    }
}

/// The adapter a `wgpu`/`vulkan` device name selects.
#[cfg(any(feature = "wgpu", feature = "vulkan"))]
fn graphics_device(index: Option<&str>, number: impl Fn(&str) -> Result<usize>) -> Result<::burn::tensor::DeviceKind> {
    use ::burn::tensor::DeviceKind;
    Ok(match index {
        None => DeviceKind::DefaultDevice,
        Some("cpu") => DeviceKind::Cpu,
        Some(i) => DeviceKind::DiscreteGpu(number(i)?),
    })
}

/// Which engine runs inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// The CPU engine when the device is the CPU, burn otherwise.
    #[default]
    Auto,
    /// The burn model (training, GPU, reference).
    Burn,
    /// The fused CPU engine ([`cpu`]).
    Cpu,
}

impl EngineKind {
    pub fn parse(text: &str) -> Result<EngineKind> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(EngineKind::Auto),
            "burn" => Ok(EngineKind::Burn),
            "cpu" | "fast" => Ok(EngineKind::Cpu),
            other => Err(Error::Config(format!("unknown engine '{other}' (expected auto, burn or cpu)"))),
        }
    }

    /// Builds the chosen engine for `graph` with weights `map` (as [`crate::weights::check`]
    /// returns them).
    pub fn build(
        self,
        graph: &std::sync::Arc<Graph>,
        map: &TensorMap,
        device: &Device,
        cpu: cpu::CpuOptions,
    ) -> Result<Box<dyn Engine>> {
        let use_cpu = match self {
            EngineKind::Auto => *device == Device::flex(),
            EngineKind::Burn => false,
            EngineKind::Cpu => true,
        };
        Ok(if use_cpu {
            Box::new(cpu::CpuEngine::new(graph, map, cpu)?)
        } else {
            Box::new(burn::BurnEngine::new(graph.clone(), map, device)?)
        })
    }
}
