//! Weights: a name → tensor map ([`TensorMap`]) read from official `.pth` checkpoints
//! ([`pth`]), our own safetensors files ([`safetensors`]) or an ONNX export ([`onnx`]), checked
//! against the [`Graph`]'s tensor list ([`check`]); [`recognise`] tells the configuration from
//! the names and shapes, [`hub`] downloads official checkpoints.
//!
//! The in-memory tensor map and the visitor that walks the burn model by checkpoint name live
//! in [`crate::model::params`] (re-exported here).

pub mod embedded;
pub mod hub;
pub mod onnx;
pub mod pth;
pub mod recognise;
pub mod safetensors;

use std::path::Path;

use crate::config::{ModelConfig, Size};
use crate::error::{Error, Result};
use crate::model::Graph;
pub use crate::model::params::{
    Collector, HostTensor, Loader, ParamVisitor, TensorMap, VisitWeights, collect, join, load_into, load_into_except,
    to_vec,
};

/// Keys a checkpoint may hold that carry nothing the model uses: mmdet's data preprocessor
/// (mean/std) and BatchNorm's batch counters.
pub(crate) fn ignorable(name: &str) -> bool {
    name.starts_with("data_preprocessor.") || name.ends_with(".num_batches_tracked")
}

/// A tensor the model needs stored as integers or booleans.
pub(crate) fn wrong_dtype(path: &Path, name: &str, dtype: impl std::fmt::Debug) -> Error {
    Error::weights(path, format!("tensor '{name}' has dtype {dtype:?}; the model needs a floating-point tensor"))
}

/// Checks `map` against the tensors `graph` needs (every one present with its shape, shared
/// convs equal under every name, nothing unexpected) and returns exactly those tensors.
pub fn check(graph: &Graph, mut map: TensorMap) -> Result<TensorMap> {
    let mut out = TensorMap::new();
    for spec in graph.tensors() {
        for (i, name) in spec.names.iter().enumerate() {
            let t = map.remove(name).ok_or_else(|| Error::MissingTensor { name: name.clone() })?;
            if t.shape != spec.shape {
                return Err(Error::ShapeMismatch { name: name.clone(), expected: spec.shape.clone(), found: t.shape });
            }
            if i > 0 && out[&spec.names[0]] != t {
                return Err(Error::Other(format!(
                    "tensor '{name}' should be shared with '{}' but holds different values",
                    spec.names[0]
                )));
            }
            out.insert(name.clone(), t);
        }
    }
    // Aliases (RTMDet-Ins `reg_convs`, the cls tower again) are read and dropped.
    for alias in &graph.aliases {
        map.remove(alias);
    }
    let extra: Vec<&String> = map.keys().filter(|k| !ignorable(k)).collect();
    if extra.is_empty() {
        return Ok(out);
    }
    let mut names = extra.iter().take(8).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if extra.len() > 8 {
        names.push_str(&format!(" and {} more", extra.len() - 8));
    }
    Err(Error::UnexpectedTensors { names })
}

/// Overrides for reading a weights file (everything else is recognised from it).
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Restrict/force the size (otherwise recognised from the tensors).
    pub size: Option<Size>,
    /// Override the distance decoding (otherwise from the checkpoint meta or the size).
    pub exp_on_reg: Option<bool>,
}

/// The kinds of weights file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    /// OpenMMLab `.pth` (torch zip).
    Pth,
    /// Our safetensors file.
    SafeTensors,
    /// BN-folded ONNX export.
    Onnx,
}

impl WeightsFormat {
    /// By content first (a torch checkpoint is a zip), then by extension.
    pub fn detect(path: &Path) -> Result<Self> {
        let mut head = [0u8; 4];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::weights(path, e))?;
            f.read(&mut head).map_err(|e| Error::weights(path, e))?
        };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        Ok(match ext.as_str() {
            "onnx" => WeightsFormat::Onnx,
            "safetensors" | "st" => WeightsFormat::SafeTensors,
            _ if n == 4 && &head == b"PK\x03\x04" => WeightsFormat::Pth,
            "pth" | "pt" | "ckpt" => WeightsFormat::Pth,
            _ => WeightsFormat::SafeTensors,
        })
    }
}

/// Reads any supported weights file into a configuration and a tensor map.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<(ModelConfig, TensorMap)> {
    read_with_record(path, opts).map(|(cfg, map, _)| (cfg, map))
}

/// [`read`], plus the JSON record an ONNX export of ours carries (`export::ExportInfo`; `None`
/// for every other file), from the same single read of the file.
pub fn read_with_record(path: &Path, opts: &ReadOptions) -> Result<(ModelConfig, TensorMap, Option<String>)> {
    if let Some(why) = crate::files::not_a_regular_file(path) {
        return Err(Error::weights(path, format!("{why}; give a weights file")));
    }
    let (mut cfg, map, record) = match WeightsFormat::detect(path)? {
        WeightsFormat::Pth => {
            let map = pth::read_state_dict(path)?;
            let meta = pth::read_meta(path);
            let mut cfg = recognise::recognise(&map, opts.size, opts.exp_on_reg.or(meta.exp_on_reg))?;
            if let Some(classes) = meta.classes.filter(|c| c.len() == cfg.num_classes) {
                cfg.class_names = classes;
            }
            (cfg, map, None)
        }
        WeightsFormat::SafeTensors => {
            let (cfg, map) = safetensors::load(path)?;
            let cfg = match cfg {
                Some(c) => c,
                None => recognise::recognise(&map, opts.size, None)?,
            };
            (cfg, map, None)
        }
        WeightsFormat::Onnx => onnx::import(path, opts.size)?,
    };
    if let Some(e) = opts.exp_on_reg {
        cfg.exp_on_reg = e;
    }
    warn_non_finite(path, &map);
    Ok((cfg, map, record))
}

/// Weights holding NaN or ±inf load (a diverged training saves them) but predict nothing
/// useful: say so, naming the first such tensor.
fn warn_non_finite(path: &Path, map: &TensorMap) {
    let bad: Vec<&String> = map.iter().filter(|(_, t)| t.data.iter().any(|v| !v.is_finite())).map(|(k, _)| k).collect();
    if let Some(first) = bad.first() {
        eprintln!(
            "warning: weights {}: {} tensors hold NaN or infinite values (first: '{first}'); detections will be meaningless",
            path.display(),
            bad.len()
        );
    }
}
