//! AdamW exactly as PyTorch steps it, with mmdet's parameter groups for RTMDet: no weight
//! decay on normalisation weights and on any bias (`norm_decay_mult=0, bias_decay_mult=0`);
//! shared head convs are one parameter (counted once).

use std::collections::BTreeMap;

use burn::module::{Param, RunningState};
use burn::tensor::Gradients;
use burn::tensor::Tensor;

use crate::error::Result;
use crate::model::params::{HostTensor, ParamVisitor, VisitWeights};

#[derive(Clone, Debug)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken.
    pub step: u64,
    /// First and second moments by parameter name.
    pub moments: BTreeMap<String, (HostTensor, HostTensor)>,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05, step: 0, moments: BTreeMap::new() }
    }
}

/// Whether mmdet's paramwise config applies weight decay to a parameter: not to biases and
/// not to BatchNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains(".bn.") || name.ends_with("bn.weight"))
}

impl AdamW {
    /// One update of every parameter of `model` that has a gradient in `grads`.
    pub fn step<M: VisitWeights>(&mut self, model: &mut M, grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        let mut v = Stepper { opt: self, grads, lr };
        model.visit_weights("", &mut v)
    }
}

struct Stepper<'a> {
    opt: &'a mut AdamW,
    grads: &'a Gradients,
    lr: f64,
}

impl ParamVisitor for Stepper<'_> {
    fn param<const D: usize>(&mut self, names: &[String], param: &mut Param<Tensor<D>>) -> Result<()> {
        let value = param.val();
        let Some(grad) = value.grad(self.grads) else { return Ok(()) };
        let o = &mut *self.opt;
        let name = &names[0];
        let g = HostTensor::from_tensor(&grad);
        let mut p = HostTensor::from_tensor(&value.clone().detach());
        let (m, v) = o.moments.entry(name.clone()).or_insert_with(|| {
            (
                HostTensor::new(g.shape.clone(), vec![0.0; g.data.len()]),
                HostTensor::new(g.shape.clone(), vec![0.0; g.data.len()]),
            )
        });
        let t = o.step as i32;
        let (b1, b2) = (o.beta1 as f32, o.beta2 as f32);
        let bias1 = 1.0 - o.beta1.powi(t);
        let bias2_sqrt = (1.0 - o.beta2.powi(t)).sqrt();
        let step_size = (self.lr / bias1) as f32;
        let decay = if decays(name) { (1.0 - self.lr * o.weight_decay) as f32 } else { 1.0 };
        for i in 0..p.data.len() {
            p.data[i] *= decay;
            m.data[i] = m.data[i] * b1 + (1.0 - b1) * g.data[i];
            v.data[i] = v.data[i] * b2 + (1.0 - b2) * g.data[i] * g.data[i];
            let denom = v.data[i].sqrt() / bias2_sqrt as f32 + o.eps as f32;
            p.data[i] -= step_size * m.data[i] / denom;
        }
        let device = value.device();
        let updated = Tensor::<D>::from_data(burn::tensor::TensorData::new(p.data, p.shape), &device);
        let mut fresh = Param::from_tensor(updated);
        fresh.id = param.id;
        *param = fresh;
        Ok(())
    }

    fn buffer(&mut self, _: &str, _: &mut RunningState<Tensor<1>>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One {
        weight: Param<Tensor<1>>,
        bias: Param<Tensor<1>>,
    }

    impl VisitWeights for One {
        fn visit_weights<V: ParamVisitor>(&mut self, _: &str, v: &mut V) -> Result<()> {
            v.param(&["layer.weight".into()], &mut self.weight)?;
            v.param(&["layer.bias".into()], &mut self.bias)
        }
    }

    #[test]
    fn first_steps_match_pytorch_adamw() {
        use burn::tensor::{Device, TensorData};
        let device = Device::default().autodiff();
        let t = |v: Vec<f32>| Param::from_tensor(Tensor::<1>::from_data(TensorData::new(v, [2]), &device));
        let mut m = One { weight: t(vec![1.0, -2.0]), bias: t(vec![0.5, 0.25]) };
        let mut opt = AdamW::default();
        let (lr, g) = (0.01f64, [3.0f64, -0.5]);
        let coef = Tensor::<1>::from_data(TensorData::new(vec![3.0f32, -0.5], [2]), &device);
        for step in 1..=2 {
            let loss = (m.weight.val() * coef.clone()).sum() + (m.bias.val() * coef.clone()).sum();
            let grads = loss.backward();
            let before_w = crate::weights::to_vec(&m.weight.val());
            let before_b = crate::weights::to_vec(&m.bias.val());
            opt.step(&mut m, &grads, lr).unwrap();
            // With a constant gradient, m_hat = g and v_hat = g^2 at every step.
            for i in 0..2 {
                let upd = lr * g[i] / (g[i].abs() + 1e-8);
                let w = before_w[i] as f64 * (1.0 - lr * 0.05) - upd;
                let b = before_b[i] as f64 - upd;
                assert!((crate::weights::to_vec(&m.weight.val())[i] as f64 - w).abs() < 1e-6, "step {step}");
                assert!((crate::weights::to_vec(&m.bias.val())[i] as f64 - b).abs() < 1e-6, "step {step}");
            }
        }
    }

    #[test]
    fn decay_groups_follow_mmdet() {
        assert!(decays("backbone.stem.0.conv.weight"));
        assert!(decays("bbox_head.rtm_cls.0.weight"));
        assert!(!decays("bbox_head.rtm_cls.0.bias"));
        assert!(!decays("backbone.stem.0.bn.weight"));
        assert!(!decays("backbone.stage1.1.attention.fc.bias"));
        assert!(decays("backbone.stage1.1.attention.fc.weight"));
    }
}
