//! BatchNorm2d with PyTorch's semantics: batch statistics in training (biased variance to
//! normalise, unbiased variance into the running estimate, `running = (1 - m)·running +
//! m·batch`), running statistics otherwise.
//!
//! The batch mean and variance are reduced hierarchically (width, height, then batch), which
//! keeps float32 sums short: a single sequential sum over N·H·W values loses enough precision
//! to move the normalised activations of low-variance channels visibly.

use burn::module::{Module, Param, RunningState};
use burn::tensor::activation::silu;
use burn::tensor::module::batch_norm;
use burn::tensor::{Device, Tensor};

#[derive(Module, Debug)]
pub struct BatchNorm2d {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub epsilon: f64,
    pub momentum: f64,
}

impl BatchNorm2d {
    pub fn new(channels: usize, epsilon: f64, momentum: f64, device: &Device) -> Self {
        BatchNorm2d {
            gamma: Param::from_tensor(Tensor::ones([channels], device)),
            beta: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            epsilon,
            momentum,
        }
    }

    /// `[N, C, H, W]` → `[N, C, H, W]`. Training statistics are used on an autodiff device.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if x.device().is_autodiff() {
            self.forward_train(x)
        } else {
            batch_norm(
                x,
                self.gamma.val(),
                self.beta.val(),
                self.running_mean.value_sync(),
                self.running_var.value_sync(),
                self.epsilon,
            )
        }
    }

    /// `silu(self.forward(x))`; in training on the CPU one fused operation with its own
    /// backward ([`super::train_ops::bn_silu_train`]).
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        match super::train_ops::bn_silu_train(&x, self.gamma.val(), self.beta.val(), self.epsilon) {
            Some((y, mean, var)) => {
                let [n, _, h, w] = x.dims();
                self.update_running(mean, var, n * h * w);
                y
            }
            None => silu(self.forward(x)),
        }
    }

    /// The running statistics' update with a batch's mean and biased variance over `count`
    /// values (PyTorch's: the unbiased variance goes in).
    fn update_running(&self, mean: Tensor<1>, var: Tensor<1>, count: usize) {
        let count = count as f64;
        let unbiased = var.mul_scalar(count / (count - 1.0).max(1.0));
        let m = self.momentum;
        self.running_mean.update(self.running_mean.value_sync().mul_scalar(1.0 - m) + mean.mul_scalar(m));
        self.running_var.update(self.running_var.value_sync().mul_scalar(1.0 - m) + unbiased.mul_scalar(m));
    }

    fn forward_train(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let mean = x.clone().mean_dim(3).mean_dim(2).mean_dim(0); // [1, C, 1, 1]
        let centered = x - mean.clone();
        let var = centered.clone().square().mean_dim(3).mean_dim(2).mean_dim(0); // biased
        self.update_running(mean.clone().detach().reshape([c]), var.clone().detach().reshape([c]), n * h * w);
        let inv_std = (var + self.epsilon).sqrt().recip();
        centered * inv_std * self.gamma.val().reshape([1, c, 1, 1]) + self.beta.val().reshape([1, c, 1, 1])
    }
}
