//! The project's own weight format: one safetensors file whose metadata carries the model
//! configuration as JSON, with tensors under mmdetection's names (so any tool that reads the
//! official state_dict reads ours too).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{HostTensor, TensorMap};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

const CONFIG_KEY: &str = "rtmdet_config";

/// Writes `map` and `cfg` to `path` atomically: a temporary file in the same folder is
/// written, synced and renamed over the target, so a crash never leaves a half-written file.
pub fn save(path: &Path, cfg: &ModelConfig, map: &TensorMap) -> Result<()> {
    save_with(path, cfg, map, &[])
}

/// Tensors under this prefix are training state (raw weights, optimizer moments), not part of
/// the detector: [`load`] leaves them out, [`load_training_state`] reads them.
pub const TRAIN_PREFIX: &str = "train.";

/// [`save`] with extra metadata entries (training state as JSON).
pub fn save_with(path: &Path, cfg: &ModelConfig, map: &TensorMap, extra: &[(&str, String)]) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = map
        .iter()
        .map(|(k, t)| (k.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| {
            Ok((k.as_str(), TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::Other(e.to_string()))?))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta =
        HashMap::from([(CONFIG_KEY.to_string(), serde_json::to_string(cfg).map_err(|e| Error::Other(e.to_string()))?)]);
    meta.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let out = safetensors::tensor::serialize(views, Some(meta)).map_err(|e| Error::weights(path, e))?;
    write_atomically(path, &out)
}

pub use crate::files::write_atomically;

/// Reads a file written by [`save`]. The configuration is `None` for a plain safetensors
/// state dict (then it is inferred from the tensors).
pub fn load(path: &Path) -> Result<(Option<ModelConfig>, TensorMap)> {
    let (cfg, mut map, _) = load_all(path)?;
    map.retain(|k, _| !k.starts_with(TRAIN_PREFIX));
    Ok((cfg, map))
}

/// Everything in the file: configuration, all tensors and the metadata.
pub fn load_all(path: &Path) -> Result<(Option<ModelConfig>, TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::weights(path, e))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| Error::weights(path, format!("not a safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::weights(path, e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let cfg = match metadata.get(CONFIG_KEY) {
        Some(json) => {
            Some(serde_json::from_str(json).map_err(|e| Error::weights(path, format!("bad model config ({e})")))?)
        }
        None => None,
    };
    let mut map = TensorMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F16 => {
                view.data().chunks_exact(2).map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect()
            }
            Dtype::BF16 => {
                view.data().chunks_exact(2).map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect()
            }
            _ if super::ignorable(&name) => continue,
            other => return Err(super::wrong_dtype(path, &name, other)),
        };
        map.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok((cfg, map, metadata))
}
