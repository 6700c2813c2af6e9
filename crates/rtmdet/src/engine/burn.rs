//! The burn model as an inference engine: any burn device (CPU flex, CUDA), and the reference
//! the CPU engine is tested against.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use super::Engine;
use crate::error::Result;
use crate::model::params::{TensorMap, load_into};
use crate::model::{Graph, HeadOutputs, HeadTensors, RtmDet};

pub struct BurnEngine {
    model: RtmDet,
    device: Device,
}

impl BurnEngine {
    /// The model of `graph` with the tensors of `map` (strict: every tensor must fit).
    pub fn new(graph: Arc<Graph>, map: &TensorMap, device: &Device) -> Result<Self> {
        let mut model = RtmDet::from_graph(graph, device);
        load_into(&mut model, map, device)?;
        Ok(BurnEngine { model, device: device.clone() })
    }

    pub fn model(&self) -> &RtmDet {
        &self.model
    }

    /// The input as a burn tensor on the engine's device.
    pub fn tensor(&self, input: &[f32], dims: [usize; 4]) -> Tensor<4> {
        Tensor::from_data(TensorData::new(input.to_vec(), dims), &self.device)
    }

    /// Head outputs as burn tensors (raw and scaled distances).
    pub fn forward_tensors(&self, input: &[f32], dims: [usize; 4]) -> HeadTensors {
        self.model.forward(self.tensor(input, dims))
    }
}

impl Engine for BurnEngine {
    fn forward(&self, input: &[f32], dims: [usize; 4]) -> HeadOutputs {
        let (levels, proto) = self.model.forward_with_prototypes(self.tensor(input, dims));
        HeadOutputs::from_tensors(&levels, proto.as_ref())
    }

    fn name(&self) -> &'static str {
        "burn"
    }

    fn as_burn(&self) -> Option<&BurnEngine> {
        Some(self)
    }
}
