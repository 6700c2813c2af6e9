//! RTMDet's learning-rate schedule (spec §9.3): linear warm-up from 1e-5·lr over the first
//! 1000 iterations, flat, then cosine from the middle epoch to 0.05·lr at the end.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub warmup_iters: usize,
    pub warmup_start_factor: f64,
    /// First iteration of the cosine part (`max_epochs / 2` epochs).
    pub cosine_begin: usize,
    /// Last iteration (`max_epochs` epochs).
    pub total_iters: usize,
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    /// The official recipe for `epochs` epochs of `iters_per_epoch` iterations at total batch
    /// `batch` (lr 0.004 at batch 256, scaled linearly).
    pub fn rtmdet(epochs: usize, iters_per_epoch: usize, batch: usize) -> Self {
        LrSchedule {
            base_lr: 0.004 * batch as f64 / 256.0,
            warmup_iters: 1000,
            warmup_start_factor: 1e-5,
            cosine_begin: epochs / 2 * iters_per_epoch,
            total_iters: epochs * iters_per_epoch,
            min_lr_ratio: 0.05,
        }
    }

    /// Learning rate of iteration `t` (0-based).
    pub fn lr(&self, t: usize) -> f64 {
        let warm = if t < self.warmup_iters {
            self.warmup_start_factor + (1.0 - self.warmup_start_factor) * t as f64 / self.warmup_iters as f64
        } else {
            1.0
        };
        let eta_min = self.base_lr * self.min_lr_ratio;
        let lr = if t >= self.cosine_begin && self.total_iters > self.cosine_begin {
            let span = (self.total_iters - self.cosine_begin) as f64;
            let progress = ((t - self.cosine_begin) as f64 / span).min(1.0);
            eta_min + (self.base_lr - eta_min) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
        } else {
            self.base_lr
        };
        lr * warm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_flat_cosine() {
        // 300 epochs of 100 iterations at batch 32: lr 5e-4.
        let s = LrSchedule::rtmdet(300, 100, 32);
        assert!((s.base_lr - 5e-4).abs() < 1e-15);
        assert!((s.lr(0) - 5e-9).abs() < 1e-20);
        assert!((s.lr(500) - 5e-4 * (1e-5 + (1.0 - 1e-5) * 0.5)).abs() < 1e-15);
        assert_eq!(s.lr(1000), 5e-4);
        assert_eq!(s.lr(14_999), 5e-4);
        assert_eq!(s.lr(15_000), 5e-4);
        let mid = 2.5e-5 + (5e-4 - 2.5e-5) * 0.5;
        assert!((s.lr(22_500) - mid).abs() < 1e-15);
        assert!((s.lr(30_000) - 2.5e-5).abs() < 1e-15);
    }
}
