//! # rtmdet
//!
//! RTMDet real-time object detectors (OpenMMLab, arXiv 2212.07784) in Rust on burn.
//!
//! The modules follow the data (see the README's "Architecture" section):
//!
//! * [`structures`]: boxes, rotated boxes, masks, instance sets and the one overlap family;
//!   [`coders`]: one encoder/decoder per box coder;
//! * [`data`] (datasets, augmentation) → [`preprocess`] → [`model`] (one [`model::Graph`] per
//!   configuration; the burn module) → [`assign`] / [`loss`] → [`train`];
//! * [`model`] → [`engine`] (burn or the fused CPU engine, both giving
//!   [`model::HeadOutputs`]) → [`postprocess`] → [`eval`] / [`viz`];
//! * [`weights`] reads and writes checkpoints by the graph's tensor names;
//! * [`video`] reads frames from video files, cameras and streams and writes H.264 MP4;
//!   [`track`] follows detections through frames (ByteTrack).
//!
//! ```no_run
//! use rtmdet::{Detector, image_io::read_image};
//! let det = Detector::from_checkpoint("rtmdet_tiny.pth")?;
//! let image = read_image("demo.jpg".as_ref())?;
//! for d in det.predict(&image)?.iter() {
//!     println!("{} {:.2} {:?}", det.config().class_name(d.label), d.score, d.bbox);
//! }
//! # Ok::<(), rtmdet::Error>(())
//! ```

#![deny(unsafe_code)] // SIMD kernels live in crate `rtmdet-kernels`; the CUDA driver probe
// (`engine/cuda_probe.rs`, feature `cuda`) is the one exception here.

pub mod assign;
pub mod classes;
pub mod coders;
pub mod config;
pub mod data;
pub mod detector;
pub mod engine;
pub mod error;
pub mod eval;
pub mod export;
pub mod files;
pub mod image_io;
pub mod loss;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod priors;
pub mod structures;
pub mod track;
pub mod train;
pub mod video;
pub mod viz;
pub mod weights;

/// The burn version this crate is built on, for callers that build tensors or devices.
pub use burn;
pub use config::{ModelConfig, Size};
pub use detector::{Detector, LoadOptions, Slicing};
pub use engine::EngineKind;
pub use error::{Error, Result};
pub use postprocess::DetectParams;
pub use structures::{Detection, Instances};
