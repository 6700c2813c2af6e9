//! Official OpenMMLab checkpoints: a `torch.save` zip holding `{'meta', 'state_dict'}`.

use std::path::Path;

use pytorch_reader::{DType, PytorchReader};
use serde::Deserialize;

use super::{HostTensor, TensorMap};
use crate::error::{Error, Result};

/// What a checkpoint's `meta` tells about the model, when it says it.
#[derive(Clone, Debug, Default)]
pub struct CheckpointMeta {
    pub exp_on_reg: Option<bool>,
    pub classes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawMeta {
    exp_on_reg: Option<bool>,
    cfg: Option<String>,
    dataset_meta: Option<RawDatasetMeta>,
}

#[derive(Deserialize)]
struct RawDatasetMeta {
    classes: Option<Vec<String>>,
}

/// Reads the float tensors of `state_dict` (or of the top level, for a bare state dict).
/// Integer buffers (`num_batches_tracked`) carry nothing the model uses and are skipped; any
/// other non-float tensor is an error naming its dtype (not a "missing" tensor later).
pub fn read_state_dict(path: &Path) -> Result<TensorMap> {
    let reader = PytorchReader::with_top_level_key(path, "state_dict")
        .or_else(|_| PytorchReader::new(path))
        .map_err(|e| Error::weights(path, format!("not a readable PyTorch checkpoint ({e})")))?;
    let mut map = TensorMap::new();
    for (name, t) in reader.tensors() {
        let bytes = t.read().map_err(|e| Error::weights(path, e))?;
        let data: Vec<f32> = match t.dtype() {
            DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect(),
            DType::F64 => bytes.chunks_exact(8).map(|b| f64::from_ne_bytes(b.try_into().unwrap()) as f32).collect(),
            DType::F16 => {
                bytes.chunks_exact(2).map(|b| half::f16::from_ne_bytes(b.try_into().unwrap()).to_f32()).collect()
            }
            DType::BF16 => {
                bytes.chunks_exact(2).map(|b| half::bf16::from_ne_bytes(b.try_into().unwrap()).to_f32()).collect()
            }
            _ if super::ignorable(name) => continue,
            other => return Err(super::wrong_dtype(path, name, other)),
        };
        map.insert(name.clone(), HostTensor::new(t.shape().to_vec(), data));
    }
    if map.is_empty() {
        return Err(Error::weights(path, "the checkpoint holds no float tensors"));
    }
    Ok(map)
}

/// Reads `meta`; a checkpoint without one (or with one we cannot parse) gives defaults.
pub fn read_meta(path: &Path) -> CheckpointMeta {
    let raw: RawMeta = PytorchReader::load_config(path, Some("meta")).unwrap_or_default();
    let exp_on_reg = raw.exp_on_reg.or_else(|| raw.cfg.as_deref().and_then(exp_on_reg_from_cfg));
    CheckpointMeta { exp_on_reg, classes: raw.dataset_meta.and_then(|d| d.classes) }
}

/// The last `exp_on_reg=True|False` in a dumped mmengine config (overrides come last).
fn exp_on_reg_from_cfg(cfg: &str) -> Option<bool> {
    let key = "exp_on_reg=";
    let pos = cfg.rfind(key)?;
    let rest = &cfg[pos + key.len()..];
    if rest.starts_with("True") {
        Some(true)
    } else if rest.starts_with("False") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_text_override_wins() {
        assert_eq!(exp_on_reg_from_cfg("a exp_on_reg=False, b exp_on_reg=True)"), Some(true));
        assert_eq!(exp_on_reg_from_cfg("nothing"), None);
    }
}
