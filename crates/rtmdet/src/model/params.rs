//! Parameters by checkpoint name: a name → tensor map ([`TensorMap`]) on the host, and the
//! visitor that walks the burn model by mmdetection parameter name ([`VisitWeights`]); the same
//! walk serves loading ([`Loader`]), collecting ([`Collector`]), the optimizer and the EMA.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Param, RunningState};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

/// A dense float32 tensor held on the host, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }

    pub fn from_tensor<const D: usize>(t: &Tensor<D>) -> Self {
        HostTensor { shape: t.dims().to_vec(), data: to_vec(t) }
    }

    fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(self.data.clone(), self.shape.clone()), device)
    }
}

/// Parameter name → tensor, in mmdetection's naming (`backbone.stem.0.conv.weight`, ...).
pub type TensorMap = BTreeMap<String, HostTensor>;

/// Joins a module prefix and a child name with a dot.
pub fn join(prefix: &str, name: impl std::fmt::Display) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// What a walk over the model does with each tensor it meets.
pub trait ParamVisitor {
    /// A learnable tensor. `names` holds every checkpoint key that refers to it: more than one
    /// for conv weights shared across head levels (PyTorch repeats them under each level).
    fn param<const D: usize>(&mut self, names: &[String], param: &mut Param<Tensor<D>>) -> Result<()>;
    /// A BatchNorm running statistic.
    fn buffer(&mut self, name: &str, state: &mut RunningState<Tensor<1>>) -> Result<()>;
    /// A key that may be present in checkpoints but carries nothing we use
    /// (`num_batches_tracked`).
    fn ignorable(&mut self, _name: &str) {}
}

/// A module whose tensors can be walked by their checkpoint names.
pub trait VisitWeights {
    fn visit_weights<V: ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()>;
}

/// Loads tensors from a [`TensorMap`], checking names and shapes, and reports keys the model
/// did not use.
pub struct Loader<'a> {
    map: &'a TensorMap,
    used: BTreeSet<String>,
    device: Device,
    /// Tensors under these prefixes keep their initial values (fine-tuning a new classifier).
    keep_initial: Vec<String>,
}

impl<'a> Loader<'a> {
    pub fn new(map: &'a TensorMap, device: &Device) -> Self {
        Loader { map, used: BTreeSet::new(), device: device.clone(), keep_initial: Vec::new() }
    }

    /// True (and the file's tensor marked as seen) when `name` keeps its initial value.
    fn skipped(&mut self, name: &str) -> bool {
        if self.keep_initial.iter().any(|p| name.starts_with(p.as_str())) {
            if self.map.contains_key(name) {
                self.used.insert(name.to_string());
            }
            return true;
        }
        false
    }

    fn fetch(&mut self, name: &str, expected: &[usize]) -> Result<&'a HostTensor> {
        let t = self.map.get(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        if t.shape != expected {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: t.shape.clone(),
            });
        }
        self.used.insert(name.to_string());
        Ok(t)
    }

    /// Fails on tensors the model has no place for, ignoring `data_preprocessor.*`
    /// (mmdet stores its mean/std there).
    pub fn finish(self) -> Result<()> {
        let extra: Vec<&String> =
            self.map.keys().filter(|k| !self.used.contains(*k) && !k.starts_with("data_preprocessor.")).collect();
        if extra.is_empty() {
            return Ok(());
        }
        let mut names = extra.iter().take(8).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        if extra.len() > 8 {
            names.push_str(&format!(" and {} more", extra.len() - 8));
        }
        Err(Error::UnexpectedTensors { names })
    }
}

impl ParamVisitor for Loader<'_> {
    fn param<const D: usize>(&mut self, names: &[String], param: &mut Param<Tensor<D>>) -> Result<()> {
        // Every name is visited (not `any`, which stops early): `skipped` marks each as seen.
        #[allow(clippy::unnecessary_fold)]
        if names.iter().fold(false, |any, n| self.skipped(n) || any) {
            return Ok(());
        }
        let expected = param.val().dims().to_vec();
        let first = self.fetch(&names[0], &expected)?;
        for alias in &names[1..] {
            let other = self.fetch(alias, &expected)?;
            if other.data != first.data {
                return Err(Error::Other(format!(
                    "tensor '{alias}' should be shared with '{}' but holds different values",
                    names[0]
                )));
            }
        }
        // Keep the parameter's id (optimizer state refers to it) and make it trainable.
        let mut loaded = Param::from_tensor(first.to_tensor::<D>(&self.device));
        loaded.id = param.id;
        *param = loaded;
        Ok(())
    }

    fn buffer(&mut self, name: &str, state: &mut RunningState<Tensor<1>>) -> Result<()> {
        if self.skipped(name) {
            return Ok(());
        }
        let expected = state.value_sync().dims().to_vec();
        let t = self.fetch(name, &expected)?;
        *state = RunningState::new(t.to_tensor::<1>(&self.device));
        Ok(())
    }

    fn ignorable(&mut self, name: &str) {
        if self.map.contains_key(name) {
            self.used.insert(name.to_string());
        }
    }
}

/// Collects every tensor of a model under its checkpoint names (shared tensors under each).
#[derive(Default)]
pub struct Collector {
    pub map: TensorMap,
}

impl ParamVisitor for Collector {
    fn param<const D: usize>(&mut self, names: &[String], param: &mut Param<Tensor<D>>) -> Result<()> {
        let host = HostTensor::from_tensor(&param.val());
        for n in names {
            self.map.insert(n.clone(), host.clone());
        }
        Ok(())
    }

    fn buffer(&mut self, name: &str, state: &mut RunningState<Tensor<1>>) -> Result<()> {
        self.map.insert(name.to_string(), HostTensor::from_tensor(&state.value_sync()));
        Ok(())
    }
}

/// Loads `map` into `module`, failing on any missing, mis-shaped or unexpected tensor.
pub fn load_into<M: VisitWeights>(module: &mut M, map: &TensorMap, device: &Device) -> Result<()> {
    let mut loader = Loader::new(map, device);
    module.visit_weights("", &mut loader)?;
    loader.finish()
}

/// [`load_into`], except that tensors whose names start with one of `keep_initial` keep the
/// module's initial values (and may be absent or differently shaped in `map`).
pub fn load_into_except<M: VisitWeights>(
    module: &mut M,
    map: &TensorMap,
    device: &Device,
    keep_initial: &[&str],
) -> Result<()> {
    let mut loader = Loader::new(map, device);
    loader.keep_initial = keep_initial.iter().map(|s| s.to_string()).collect();
    module.visit_weights("", &mut loader)?;
    loader.finish()
}

/// All tensors of `module` by checkpoint name.
pub fn collect<M: VisitWeights>(module: &mut M) -> TensorMap {
    let mut c = Collector::default();
    module.visit_weights("", &mut c).expect("collecting never fails");
    c.map
}

/// A float tensor's values on the host, row-major.
pub fn to_vec<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().convert::<f32>().try_to_vec::<f32>().expect("float tensor")
}
