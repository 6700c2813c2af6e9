//! Import of BN-folded ONNX exports (e.g. mmdeploy's RTMDet-nano person detector).
//!
//! A folded graph has one biased `Conv` per ConvModule. The convolutions appear in PyTorch
//! execution order, which is the order our model visits its weights, so the import walks both
//! lists together, checks every shape, and writes each folded conv into a ConvModule whose
//! BatchNorm is the identity.
//!
//! Our own exports (`rtmdet export`) record their [`ModelConfig`] under the metadata key
//! [`METADATA_KEY`]; for them the configuration is read, not guessed (any task, any size).

use std::path::Path;

use onnx_protobuf::{Message, ModelProto, TensorProto, tensor_proto::DataType};

use super::{HostTensor, TensorMap};
use crate::config::{ModelConfig, Size};
use crate::error::{Error, Result};
use crate::model::{Graph, Op};

/// One convolution of the graph: its weight `[out, in/groups, k, k]` and optional bias.
#[derive(Debug, Clone)]
pub struct GraphConv {
    pub node: String,
    pub weight: HostTensor,
    pub bias: Option<HostTensor>,
}

/// The metadata key under which `rtmdet export` stores its JSON record (`{"config": …}`).
pub const METADATA_KEY: &str = "rtmdet";

fn tensor_values(t: &TensorProto, path: &Path) -> Result<HostTensor> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let n: usize = shape.iter().product();
    let data: Vec<f32> = if t.data_type == DataType::FLOAT as i32 {
        if !t.raw_data.is_empty() {
            t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
        } else {
            t.float_data.clone()
        }
    } else if t.data_type == DataType::FLOAT16 as i32 {
        // FP16 exports: raw little-endian halves, or (per the spec) one half per int32.
        if !t.raw_data.is_empty() {
            t.raw_data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        } else {
            t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f32()).collect()
        }
    } else {
        return Err(Error::weights(path, format!("initializer '{}' is not float32 or float16", t.name)));
    };
    if data.len() != n {
        return Err(Error::weights(
            path,
            format!("initializer '{}' holds {} values for shape {shape:?}", t.name, data.len()),
        ));
    }
    Ok(HostTensor::new(shape, data))
}

/// Reads and parses an ONNX file.
fn read_model(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::weights(path, e))?;
    parse_model(&bytes, path)
}

/// Parses ONNX bytes; `path` names them in messages.
fn parse_model(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    ModelProto::parse_from_bytes(bytes).map_err(|e| Error::weights(path, format!("not an ONNX model ({e})")))
}

/// The metadata value stored under `key`.
fn metadata<'a>(model: &'a ModelProto, key: &str) -> Option<&'a str> {
    model.metadata_props.iter().find(|p| p.key == key).map(|p| p.value.as_str())
}

/// The configuration an export of ours recorded, if `model` is one.
fn recorded_config(model: &ModelProto, path: &Path) -> Result<Option<ModelConfig>> {
    let Some(json) = metadata(model, METADATA_KEY) else { return Ok(None) };
    #[derive(serde::Deserialize)]
    struct Record {
        config: ModelConfig,
    }
    let record: Record = serde_json::from_str(json)
        .map_err(|e| Error::weights(path, format!("its '{METADATA_KEY}' metadata is not a model record ({e})")))?;
    Ok(Some(record.config))
}

/// The `Conv` nodes of an ONNX model in graph order, with their constant weights.
pub fn read_convs(model: &ModelProto, path: &Path) -> Result<Vec<GraphConv>> {
    let graph = model.graph.as_ref().ok_or_else(|| Error::weights(path, "the ONNX model has no graph"))?;
    let mut constants: std::collections::HashMap<&str, &TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for node in graph.node.iter().filter(|n| n.op_type == "Constant") {
        let value = node.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
        if let (Some(out), Some(t)) = (node.output.first(), value) {
            constants.insert(out.as_str(), t);
        }
    }
    let constant = |name: &str, node: &str| -> Result<HostTensor> {
        let t = constants
            .get(name)
            .ok_or_else(|| Error::weights(path, format!("conv '{node}' takes a non-constant weight '{name}'")))?;
        tensor_values(t, path)
    };
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| {
            let weight = constant(n.input.get(1).map(String::as_str).unwrap_or(""), &n.name)?;
            let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                Some(b) => Some(constant(b, &n.name)?),
                None => None,
            };
            Ok(GraphConv { node: n.name.clone(), weight, bias })
        })
        .collect()
}

/// A conv slot of our model: a ConvModule (`conv` + `bn`) or a plain biased conv.
enum Slot {
    ConvBn { prefix: String, weight_shape: Vec<usize>, channels: usize },
    Biased { prefix: String, weight_shape: Vec<usize> },
}

/// The conv slots of `cfg`'s graph in execution order (= ONNX graph order).
fn slots(cfg: &ModelConfig) -> Result<Vec<Slot>> {
    let graph = Graph::new(cfg)?;
    let slots = graph
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::ConvModule { conv, norm } => {
                let p = &graph.convs[conv];
                Some(Slot::ConvBn {
                    prefix: p.prefix().strip_suffix(".conv").unwrap_or(p.prefix()).to_string(),
                    weight_shape: p.weight_shape().to_vec(),
                    channels: graph.norms[norm].channels,
                })
            }
            Op::Conv { conv } | Op::ChannelAttention { fc: conv } => {
                let p = &graph.convs[conv];
                Some(Slot::Biased { prefix: p.prefix().to_string(), weight_shape: p.weight_shape().to_vec() })
            }
            _ => None,
        })
        .collect();
    Ok(slots)
}

fn shapes_match(slots: &[Slot], convs: &[GraphConv]) -> bool {
    slots.len() == convs.len()
        && slots.iter().zip(convs).all(|(s, c)| match s {
            Slot::ConvBn { weight_shape, .. } | Slot::Biased { weight_shape, .. } => *weight_shape == c.weight.shape,
        })
}

/// Imports a BN-folded ONNX detector. The size is recognised from the conv shapes unless
/// `hint` names it; heads are imported unshared (folding gives every level its own convs).
/// Also returns the JSON record under [`METADATA_KEY`] of an export of ours (read once with
/// the weights; `export::ExportInfo` interprets it).
pub fn import(path: &Path, hint: Option<Size>) -> Result<(ModelConfig, TensorMap, Option<String>)> {
    let model = read_model(path)?;
    let (cfg, map) = import_model(&model, path, hint)?;
    Ok((cfg, map, metadata(&model, METADATA_KEY).map(str::to_string)))
}

/// [`import`] of ONNX bytes in memory (the embedded default model); `name` labels messages.
pub fn import_bytes(bytes: &[u8], name: &str, hint: Option<Size>) -> Result<(ModelConfig, TensorMap)> {
    let path = Path::new(name);
    import_model(&parse_model(bytes, path)?, path, hint)
}

fn import_model(model: &ModelProto, path: &Path, hint: Option<Size>) -> Result<(ModelConfig, TensorMap)> {
    let convs = read_convs(model, path)?;
    if let Some(cfg) = recorded_config(model, path)? {
        if hint.is_some_and(|h| h != cfg.size) {
            let h = hint.map_or("", |h| h.name());
            return Err(Error::weights(path, format!("it holds RTMDet-{}, not {h}", cfg.size.name())));
        }
        let slots = slots(&cfg)?;
        if !shapes_match(&slots, &convs) {
            return Err(Error::weights(
                path,
                format!(
                    "its {} convolutions do not match the RTMDet-{} its metadata names (edited after export?)",
                    convs.len(),
                    cfg.size.name()
                ),
            ));
        }
        let eps = cfg.bn_eps as f32;
        return Ok((cfg, fold(&slots, convs, eps)));
    }
    let sizes: Vec<Size> = hint.map(|h| vec![h]).unwrap_or_else(|| Size::ALL.to_vec());
    for size in sizes {
        let mut cfg = ModelConfig::new(size);
        cfg.share_conv = false;
        // The classifier of level 0 follows the level-0 cls tower; read its width from the graph.
        let probe = slots(&cfg)?;
        let cls_pos =
            probe.iter().position(|s| matches!(s, Slot::Biased { prefix, .. } if prefix == "bbox_head.rtm_cls.0"));
        let Some(num_classes) = cls_pos.and_then(|p| convs.get(p)).map(|c| c.weight.shape[0]) else {
            continue;
        };
        cfg = cfg.with_num_classes(num_classes);
        let slots = slots(&cfg)?;
        if !shapes_match(&slots, &convs) {
            continue;
        }
        return Ok((cfg.clone(), fold(&slots, convs, cfg.bn_eps as f32)));
    }
    Err(Error::weights(
        path,
        format!(
            "its {} convolutions match no RTMDet model{}",
            convs.len(),
            hint.map(|h| format!(" of size {}", h.name())).unwrap_or_default()
        ),
    ))
}

/// Writes the folded convs into the model's names, with identity BatchNorms.
fn fold(slots: &[Slot], convs: Vec<GraphConv>, eps: f32) -> TensorMap {
    let mut map = TensorMap::new();
    for (slot, conv) in slots.iter().zip(convs) {
        match slot {
            Slot::ConvBn { prefix, channels, .. } => {
                let c = *channels;
                let bias = conv.bias.unwrap_or_else(|| HostTensor::new(vec![c], vec![0.0; c]));
                map.insert(format!("{prefix}.conv.weight"), conv.weight);
                map.insert(format!("{prefix}.bn.weight"), HostTensor::new(vec![c], vec![1.0; c]));
                map.insert(format!("{prefix}.bn.bias"), bias);
                map.insert(format!("{prefix}.bn.running_mean"), HostTensor::new(vec![c], vec![0.0; c]));
                // sqrt(var + eps) == 1
                map.insert(format!("{prefix}.bn.running_var"), HostTensor::new(vec![c], vec![1.0 - eps; c]));
            }
            Slot::Biased { prefix, weight_shape } => {
                let c = weight_shape[0];
                map.insert(format!("{prefix}.weight"), conv.weight);
                map.insert(
                    format!("{prefix}.bias"),
                    conv.bias.unwrap_or_else(|| HostTensor::new(vec![c], vec![0.0; c])),
                );
            }
        }
    }
    map
}
