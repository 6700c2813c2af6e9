//! # rtmdet
//!
//! RTMDet real-time object detectors (OpenMMLab, arXiv 2212.07784) in Rust on burn.
//!
//! The modules follow the data: [`image_io`] → [`preprocess`] → [`model`] (backbone, neck,
//! head) → [`postprocess`] (decode, NMS) → [`viz`]; [`weights`] loads official checkpoints,
//! our safetensors files and ONNX exports.
//!
//! ```no_run
//! use rtmdet::{Detector, image_io::read_image};
//! let det = Detector::from_checkpoint("rtmdet_tiny.pth")?;
//! let image = read_image("demo.jpg".as_ref())?;
//! for d in det.predict(&image)? {
//!     println!("{} {:.2} {:?}", det.config().class_name(d.label), d.score, d.bbox);
//! }
//! # Ok::<(), rtmdet::Error>(())
//! ```

pub mod assign;
pub mod classes;
pub mod config;
pub mod cpu;
pub mod data;
pub mod detector;
pub mod error;
pub mod eval;
pub mod image_io;
pub mod loss;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod priors;
pub mod train;
pub mod viz;
pub mod weights;

/// The burn version this crate is built on, for callers that build tensors or devices.
pub use burn;
pub use config::{ModelConfig, Size};
pub use detector::{Detector, LoadOptions};
pub use error::{Error, Result};
pub use postprocess::{DetectParams, Detection};
