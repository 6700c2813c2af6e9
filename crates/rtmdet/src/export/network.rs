//! The network as ONNX nodes, one [`Graph`] node at a time: BatchNorm folded into each
//! ConvModule's conv (the numbers the CPU engine runs, [`fold`]), SiLU as `Sigmoid` + `Mul`,
//! PyTorch's nearest and bilinear resizes as `Resize`, channel attention as
//! `GlobalAveragePool` → 1×1 `Conv` → `HardSigmoid` → `Mul`. Only standard operators.
//!
//! In a half-precision export everything runs in FP16 except the head's predictors:
//! they read the FP16 towers and compute in FP32, so the outputs are not rounded to FP16
//! (distances up to hundreds of pixels would lose 0.1–0.25 px to FP16 spacing alone).

use std::collections::HashSet;

use super::proto::{Attr, Elem, OnnxWriter};
use crate::error::Result;
use crate::model::fold;
use crate::model::graph::{ConvParam, Graph, NodeId, Op};
use crate::model::params::TensorMap;

/// An ONNX value and its element type.
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub elem: Elem,
}

/// The ONNX value of every graph node (index = node id), from the network input `input`
/// (already in the network's precision, [`OnnxWriter::float`]).
pub fn emit(w: &mut OnnxWriter, graph: &Graph, map: &TensorMap, input: &str) -> Result<Vec<Value>> {
    let mut values: Vec<Value> = Vec::with_capacity(graph.nodes.len());
    let mut names = HashSet::new();
    let float = w.float;
    let predictors = predictors(graph);
    for (id, node) in graph.nodes.iter().enumerate() {
        w.scope(&node.name);
        let x = |i: usize| values[node.inputs[i]].name.clone();
        let mut elem = node.inputs.first().map_or(float, |&i| values[i].elem);
        let value = match &node.op {
            Op::Input => input.to_string(),
            Op::ConvModule { conv, norm } => {
                let f = fold::conv_module(graph, map, *conv, *norm)?;
                let name = unique(&mut names, &node.name);
                let y = conv_node(w, &graph.convs[*conv], &x(0), &name, &f.weight, &f.bias, float);
                let gate = w.node("Sigmoid", &[&y], vec![]);
                w.node("Mul", &[&y, &gate], vec![])
            }
            Op::Conv { conv } => {
                let (weight, bias) = fold::biased(graph, map, *conv)?;
                let name = unique(&mut names, &node.name);
                // Head predictors compute in FP32 (see the module doc).
                let input = if predictors.contains(&id) && elem != Elem::F32 {
                    elem = Elem::F32;
                    w.cast(&x(0), Elem::F32)
                } else {
                    x(0)
                };
                conv_node(w, &graph.convs[*conv], &input, &name, &weight.data, &bias.data, elem)
            }
            Op::Add => w.node("Add", &[&x(0), &x(1)], vec![]),
            Op::Concat => {
                let parts: Vec<String> = (0..node.inputs.len()).map(x).collect();
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                w.node("Concat", &parts, vec![("axis", Attr::Int(1))])
            }
            Op::Upsample2x => {
                let scales = w.f32s(&[4], &[1.0, 1.0, 2.0, 2.0]);
                let attrs = vec![
                    ("mode", Attr::Str("nearest")),
                    ("coordinate_transformation_mode", Attr::Str("asymmetric")),
                    ("nearest_mode", Attr::Str("floor")),
                ];
                w.node("Resize", &[&x(0), "", &scales], attrs)
            }
            Op::SppPool { kernels } => {
                let mut parts = vec![x(0)];
                for &k in kernels {
                    let (k, pad) = (k as i64, (k / 2) as i64);
                    let attrs = vec![
                        ("kernel_shape", Attr::Ints(vec![k, k])),
                        ("strides", Attr::Ints(vec![1, 1])),
                        ("pads", Attr::Ints(vec![pad; 4])),
                    ];
                    parts.push(w.node("MaxPool", &[&x(0)], attrs));
                }
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                w.node("Concat", &parts, vec![("axis", Attr::Int(1))])
            }
            Op::ChannelAttention { fc } => {
                let (weight, bias) = fold::biased(graph, map, *fc)?;
                let pooled = w.node("GlobalAveragePool", &[&x(0)], vec![]);
                let name = unique(&mut names, &format!("{}.fc", node.name));
                let logits = conv_node(w, &graph.convs[*fc], &pooled, &name, &weight.data, &bias.data, float);
                // PyTorch's Hardsigmoid: relu6(x + 3) / 6.
                let gate = w.node("HardSigmoid", &[&logits], vec![("alpha", Attr::Float(1.0 / 6.0))]);
                w.node("Mul", &[&x(0), &gate], vec![])
            }
            Op::Relu => w.node("Relu", &[&x(0)], vec![]),
            Op::ResizeBilinearLike => {
                let (nc, hw) = (w.node("Shape", &[&x(0)], vec![]), w.node("Shape", &[&x(1)], vec![]));
                let (start, mid, end) = (w.ints(&[0]), w.ints(&[2]), w.ints(&[4]));
                let nc = w.node("Slice", &[&nc, &start, &mid], vec![]);
                let hw = w.node("Slice", &[&hw, &mid, &end], vec![]);
                let sizes = w.node("Concat", &[&nc, &hw], vec![("axis", Attr::Int(0))]);
                // `interpolate(mode='bilinear', align_corners=False)`, as torch.onnx writes it.
                let attrs = vec![
                    ("mode", Attr::Str("linear")),
                    ("coordinate_transformation_mode", Attr::Str("pytorch_half_pixel")),
                ];
                w.node("Resize", &[&x(0), "", "", &sizes], attrs)
            }
        };
        values.push(Value { name: value, elem });
    }
    w.scope("");
    Ok(values)
}

/// The head's predictor convs: the level outputs, or what their ReLU reads (RTMDet-Ins).
fn predictors(graph: &Graph) -> HashSet<NodeId> {
    graph
        .levels
        .iter()
        .flat_map(|l| l.outputs())
        .map(|o| match graph.nodes[o].op {
            Op::Relu => graph.nodes[o].inputs[0],
            _ => o,
        })
        .collect()
}

/// `name`, or `name#2`, `name#3`… when taken (initializer names must be unique).
fn unique(taken: &mut HashSet<String>, name: &str) -> String {
    let mut candidate = name.to_string();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{name}#{n}");
    }
    candidate
}

/// A biased `Conv` node of parameter `p` with weights stored as `{name}.weight` / `.bias`
/// in `elem`.
fn conv_node(
    w: &mut OnnxWriter,
    p: &ConvParam,
    x: &str,
    name: &str,
    weight: &[f32],
    bias: &[f32],
    elem: Elem,
) -> String {
    let weight = w.weight(&format!("{name}.weight"), &p.weight_shape(), weight, elem);
    let bias = w.weight(&format!("{name}.bias"), &[p.cout], bias, elem);
    let (k, s, pad) = (p.k as i64, p.stride as i64, (p.k / 2) as i64);
    let attrs = vec![
        ("kernel_shape", Attr::Ints(vec![k, k])),
        ("strides", Attr::Ints(vec![s, s])),
        ("pads", Attr::Ints(vec![pad; 4])),
        ("group", Attr::Int(p.groups as i64)),
    ];
    w.node("Conv", &[x, &weight, &bias], attrs)
}
