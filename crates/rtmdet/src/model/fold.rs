//! Inference-time parameters of the graph's convolutions: a ConvModule's BatchNorm folded
//! into its conv, a biased conv's weight and bias, both checked against the [`Graph`]. The
//! CPU plan (`engine::cpu::plan`) and the ONNX export (`export`) read weights only through
//! these, so both run exactly the same numbers.

use super::graph::Graph;
use super::params::{HostTensor, TensorMap, join};
use crate::error::{Error, Result};

/// A convolution ready to run: weight `[o, i / groups, k, k]` (OIHW) and bias `[o]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedConv {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub shape: [usize; 4],
}

fn tensor<'a>(map: &'a TensorMap, name: &str) -> Result<&'a HostTensor> {
    map.get(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })
}

fn checked<'a>(map: &'a TensorMap, name: &str, shape: &[usize]) -> Result<&'a HostTensor> {
    let t = tensor(map, name)?;
    if t.shape != shape {
        return Err(Error::ShapeMismatch { name: name.to_string(), expected: shape.to_vec(), found: t.shape.clone() });
    }
    Ok(t)
}

/// ConvModule `conv` with BatchNorm `norm` folded in (in float64, rounded once):
/// `w·γ/√(var+eps)` and `β − mean·γ/√(var+eps)`.
pub fn conv_module(graph: &Graph, map: &TensorMap, conv: usize, norm: usize) -> Result<FoldedConv> {
    let p = &graph.convs[conv];
    let shape = p.weight_shape();
    let w = checked(map, &p.weight[0], &shape)?;
    let o = shape[0];
    let prefix = &graph.norms[norm].prefix;
    let bn = |n: &str| checked(map, &join(prefix, n), &[o]);
    let (gamma, beta, mean, var) = (bn("weight")?, bn("bias")?, bn("running_mean")?, bn("running_var")?);
    let per_out = w.data.len() / o;
    let mut weight = Vec::with_capacity(w.data.len());
    let mut bias = Vec::with_capacity(o);
    for (c, ws) in w.data.chunks_exact(per_out).enumerate() {
        let scale = gamma.data[c] as f64 / (var.data[c] as f64 + graph.bn_eps).sqrt();
        weight.extend(ws.iter().map(|&v| (v as f64 * scale) as f32));
        bias.push(((0.0 - mean.data[c] as f64) * scale + beta.data[c] as f64) as f32);
    }
    Ok(FoldedConv { weight, bias, shape })
}

/// The weight and bias of biased conv `conv` (head predictors, channel attention), checked.
pub fn biased<'a>(graph: &Graph, map: &'a TensorMap, conv: usize) -> Result<(&'a HostTensor, &'a HostTensor)> {
    let p = &graph.convs[conv];
    let bias_name = p.bias.as_deref().expect("a biased conv");
    Ok((checked(map, &p.weight[0], &p.weight_shape())?, checked(map, bias_name, &[p.cout])?))
}
