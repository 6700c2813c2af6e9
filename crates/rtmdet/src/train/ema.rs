//! ExpMomentumEMA (spec §9.3): an exponential moving average of all weights **and** BN
//! buffers with momentum `(1 - m)·exp(-(1 + step)/gamma) + m`, updated every iteration; the
//! first update copies the model.

use std::collections::BTreeMap;

use burn::module::{Param, RunningState};
use burn::tensor::Tensor;

use crate::error::Result;
use crate::model::params::{HostTensor, ParamVisitor, VisitWeights};

#[derive(Clone, Debug)]
pub struct ExpMomentumEma {
    pub momentum: f64,
    pub gamma: f64,
    /// Number of updates so far.
    pub steps: u64,
    /// Averaged tensors by checkpoint name.
    pub averaged: BTreeMap<String, HostTensor>,
}

impl Default for ExpMomentumEma {
    fn default() -> Self {
        ExpMomentumEma { momentum: 0.0002, gamma: 2000.0, steps: 0, averaged: BTreeMap::new() }
    }
}

impl ExpMomentumEma {
    /// The momentum of update number `steps` (`steps >= 1`; update 0 is a copy).
    pub fn momentum_at(&self, steps: u64) -> f64 {
        (1.0 - self.momentum) * (-(1.0 + steps as f64) / self.gamma).exp() + self.momentum
    }

    /// Folds the model's current weights and buffers into the average.
    pub fn update<M: VisitWeights>(&mut self, model: &mut M) -> Result<()> {
        let m = if self.steps == 0 { 1.0 } else { self.momentum_at(self.steps) } as f32;
        let mut v = Averager { averaged: &mut self.averaged, m };
        model.visit_weights("", &mut v)?;
        self.steps += 1;
        Ok(())
    }
}

struct Averager<'a> {
    averaged: &'a mut BTreeMap<String, HostTensor>,
    m: f32,
}

impl Averager<'_> {
    fn fold(&mut self, name: &str, current: HostTensor) {
        let m = self.m;
        match self.averaged.get_mut(name) {
            Some(avg) if m < 1.0 => {
                for (a, c) in avg.data.iter_mut().zip(&current.data) {
                    // lerp: a + m (c - a)
                    *a += m * (c - *a);
                }
            }
            _ => {
                self.averaged.insert(name.to_string(), current);
            }
        }
    }
}

impl ParamVisitor for Averager<'_> {
    fn param<const D: usize>(&mut self, names: &[String], param: &mut Param<Tensor<D>>) -> Result<()> {
        // Shared tensors are stored under every name, so the average loads like a checkpoint.
        let current = HostTensor::from_tensor(&param.val());
        for name in names {
            self.fold(name, current.clone());
        }
        Ok(())
    }

    fn buffer(&mut self, name: &str, state: &mut RunningState<Tensor<1>>) -> Result<()> {
        self.fold(name, HostTensor::from_tensor(&state.value_sync()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_schedule() {
        let e = ExpMomentumEma::default();
        assert!((e.momentum_at(1) - (0.9998 * (-2.0f64 / 2000.0).exp() + 0.0002)).abs() < 1e-15);
        assert!((e.momentum_at(2000) - (0.9998 * (-2001.0f64 / 2000.0).exp() + 0.0002)).abs() < 1e-15);
        assert!((e.momentum_at(1_000_000) - 0.0002).abs() < 1e-12);
    }
}
