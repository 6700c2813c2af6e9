//! The default model built into the library: RTMPose's RTMDet-nano person detector (the
//! mmdeploy ONNX export, BatchNorm folded; 4 MB, Apache-2.0, see `assets/NOTICE.md`), so
//! `rtmdet predict IMAGE` works with no weights file and no network.

use crate::config::{ModelConfig, Size};
use crate::error::Result;
use crate::model::params::TensorMap;

/// What messages call the embedded model.
pub const NAME: &str = "embedded rtmdet_nano_person.onnx";

/// The ONNX bytes.
pub const NANO_PERSON_ONNX: &[u8] = include_bytes!("../../../../assets/rtmdet_nano_person.onnx");

/// The embedded detector's configuration (nano, 1 class "person", input 320) and tensors.
pub fn nano_person() -> Result<(ModelConfig, TensorMap)> {
    let (mut cfg, map) = super::onnx::import_bytes(NANO_PERSON_ONNX, NAME, Some(Size::Nano))?;
    cfg.class_names = vec!["person".to_string()];
    Ok((cfg, map))
}
