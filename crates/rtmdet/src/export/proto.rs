//! A small ONNX graph writer over the `onnx-protobuf` messages: nodes with generated value
//! names, typed constants and initializers (FP16 when exporting half precision), inputs and
//! outputs with static or named dimensions.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::type_proto::{Tensor as TensorType, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// An attribute of a node.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(&'static str),
}

/// The element type of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    I64,
    Bool,
}

impl Elem {
    fn data_type(self) -> DataType {
        match self {
            Elem::F32 => DataType::FLOAT,
            Elem::F16 => DataType::FLOAT16,
            Elem::I64 => DataType::INT64,
            Elem::Bool => DataType::BOOL,
        }
    }
}

/// A dimension of a graph input or output: fixed or named (dynamic).
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(usize),
    Named(&'static str),
}

/// Builds one `GraphProto`. Every node has one output unless [`OnnxWriter::node_n`] says
/// otherwise; value names are `{scope}/{op}_{n}` so messages and viewers point at the module.
pub struct OnnxWriter {
    graph: GraphProto,
    counter: usize,
    scope: String,
    /// The element type of the network's floats (F16 for `--half`).
    pub float: Elem,
}

impl OnnxWriter {
    pub fn new(half: bool) -> Self {
        OnnxWriter {
            graph: GraphProto { name: "rtmdet".into(), ..Default::default() },
            counter: 0,
            scope: String::new(),
            float: if half { Elem::F16 } else { Elem::F32 },
        }
    }

    /// Names the module that the following nodes belong to.
    pub fn scope(&mut self, name: &str) {
        self.scope = name.to_string();
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        if self.scope.is_empty() {
            format!("{what}_{}", self.counter)
        } else {
            format!("{}/{what}_{}", self.scope, self.counter)
        }
    }

    /// A node with `n` outputs; returns their names.
    pub fn node_n(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, n: usize) -> Vec<String> {
        let name = self.fresh(op);
        let output: Vec<String> = (0..n).map(|i| if n == 1 { name.clone() } else { format!("{name}:{i}") }).collect();
        let attribute = attrs.into_iter().map(|(k, v)| attribute(k, v)).collect();
        self.graph.node.push(NodeProto {
            op_type: op.into(),
            name,
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            attribute,
            ..Default::default()
        });
        output
    }

    /// A node with one output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.node_n(op, inputs, attrs, 1).remove(0)
    }

    /// `x` converted to `to`.
    pub fn cast(&mut self, x: &str, to: Elem) -> String {
        self.node("Cast", &[x], vec![("to", Attr::Int(to.data_type() as i64))])
    }

    /// Renames the output of the last node (graph outputs carry fixed names).
    pub fn rename_last(&mut self, name: &str) -> String {
        let node = self.graph.node.last_mut().expect("a node to rename");
        node.output[0] = name.to_string();
        name.to_string()
    }

    fn initializer(&mut self, name: String, dims: &[usize], elem: Elem, raw: Vec<u8>) -> String {
        self.graph.initializer.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: elem.data_type() as i32,
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    /// A float tensor (weights) of element type `elem` (F32 or F16), named `name`.
    pub fn weight(&mut self, name: &str, dims: &[usize], data: &[f32], elem: Elem) -> String {
        let raw = match elem {
            Elem::F16 => data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            _ => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        self.initializer(name.to_string(), dims, elem, raw)
    }

    /// A float32 constant.
    pub fn f32s(&mut self, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh("const");
        self.initializer(name, dims, Elem::F32, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// An int64 constant.
    pub fn i64s(&mut self, dims: &[usize], data: &[i64]) -> String {
        let name = self.fresh("const");
        self.initializer(name, dims, Elem::I64, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// A 1-D int64 constant.
    pub fn ints(&mut self, data: &[i64]) -> String {
        self.i64s(&[data.len()], data)
    }

    /// A scalar float32 constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.f32s(&[], &[v])
    }

    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) {
        self.graph.input.push(value_info(name, elem, dims));
    }

    pub fn output(&mut self, name: &str, elem: Elem, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem, dims));
    }

    /// The finished model with its operator set and `metadata` entries.
    pub fn finish(self, opset: i64, metadata: Vec<(String, String)>) -> ModelProto {
        ModelProto {
            ir_version: 8,
            producer_name: "rtmdet-rs".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset, ..Default::default() }],
            graph: Some(self.graph).into(),
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key, value, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto { name: name.into(), ..Default::default() };
    let kind = match value {
        Attr::Int(i) => {
            a.i = i;
            AttributeType::INT
        }
        Attr::Ints(v) => {
            a.ints = v;
            AttributeType::INTS
        }
        Attr::Float(f) => {
            a.f = f;
            AttributeType::FLOAT
        }
        Attr::Str(s) => {
            a.s = s.as_bytes().to_vec();
            AttributeType::STRING
        }
    };
    a.type_ = kind.into();
    a
}

fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Named(s) => dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = TensorType {
        elem_type: elem.data_type() as i32,
        shape: Some(TensorShapeProto { dim, ..Default::default() }).into(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto { value: Some(TypeValue::TensorType(tensor)), ..Default::default() }).into(),
        ..Default::default()
    }
}
