//! The library's integration tests, one binary (one link) with a module per capability. They
//! read the reference data in `../shared/` beside the project root and never use the network.

mod common;

mod architecture;
mod assigner;
mod coco_eval;
mod coders;
mod cpu_engine_sizes;
mod cpu_kernels;
mod datasets;
mod dota_data;
mod dota_eval;
mod export;
mod fuzz;
#[cfg(any(feature = "wgpu", feature = "vulkan"))]
mod gpu;
mod ins;
mod ins_train;
mod losses;
mod onnx_import;
mod parity;
mod robustness;
mod rotated;
mod rotated_train;
mod structures_reference;
mod tracking;
mod train_resume;
mod train_step;
mod video;
