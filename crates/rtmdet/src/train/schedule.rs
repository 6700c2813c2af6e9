//! RTMDet's learning-rate schedule (spec §9.3): linear warm-up from 1e-5·lr, flat, then cosine
//! from the middle epoch to 0.05·lr at the end — and the defaults that make it work from a
//! handful of images to COCO.
//!
//! **Learning rate.** A recipe's base lr applies as is, whatever the batch ([`LrPolicy::Recipe`]),
//! as in mmdetection, whose `auto_scale_lr` is disabled in every RTMDet config (spec §9.3), and
//! in Ultralytics, which never scales `lr0` with the batch. Linear scaling is the rule for SGD;
//! AdamW's step is normalised by the gradient's running magnitude, so its size is about `lr`
//! at any batch, and scaling 0.004 down to a small fine-tuning batch (6e-5 at batch 4) leaves
//! the model where it started. [`LrPolicy::Scaled`] (`--scale-lr`) is mmdet's
//! `auto_scale_lr=True`, with the batch the recipe was tuned at as `base_batch_size` (mmdet
//! would take the 16 that RTMDet inherits from the 1x schedule, 16× too much at 8 × 32).
//!
//! **Warm-up.** The recipe's 1000 iterations are 2 of COCO's 300 epochs at batch 256, but longer
//! than a whole run on a small dataset. The default is three epochs' worth (Ultralytics'
//! `warmup_epochs=3`), at least 100 iterations (Ultralytics' floor), at most the recipe's 1000,
//! and never more than a third of the run: exactly 1000 for the official recipe.

use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, Size, Task};

/// The recipe's warm-up (spec §9.3: `LinearLR`, iterations 0–1000).
pub const RECIPE_WARMUP_ITERS: usize = 1000;
/// Ultralytics' `warmup_epochs` and its floor in iterations (`max(round(3 · nb), 100)`).
const WARMUP_EPOCHS: usize = 3;
const MIN_WARMUP_ITERS: usize = 100;
/// The lr starts at this fraction of the base lr (`LinearLR(start_factor=1e-5)`).
const WARMUP_START_FACTOR: f64 = 1e-5;

/// The base learning rate a published recipe was tuned with, and the total batch it was tuned at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecipeLr {
    pub lr: f64,
    pub batch: usize,
}

impl RecipeLr {
    /// `rtmdet_{tiny,s,m,l,x}_8xb32-300e_coco` and `rtmdet-ins_{tiny,s,m,l}`: 0.004 at 8 × 32.
    pub const COCO: RecipeLr = RecipeLr { lr: 0.004, batch: 256 };
    /// `rtmdet-ins_x_8xb16-300e_coco`: 0.002 at 8 × 16 (spec §1.2, §9.3).
    pub const INS_X: RecipeLr = RecipeLr { lr: 0.002, batch: 128 };
    /// `rotated_rtmdet_*-3x-dota`: 0.004 / 16 at 8 images (spec §11.5).
    pub const DOTA: RecipeLr = RecipeLr { lr: 2.5e-4, batch: 8 };

    /// The recipe a model trains with.
    pub fn of(model: &ModelConfig) -> Self {
        match (model.task, model.size) {
            (Task::Rotated, _) => RecipeLr::DOTA,
            (Task::Segment, Size::X) => RecipeLr::INS_X,
            _ => RecipeLr::COCO,
        }
    }

    /// The lr scaled linearly to total batch `batch` (`--scale-lr`, mmdet's `auto_scale_lr`).
    pub fn scaled_to(&self, batch: usize) -> f64 {
        self.lr * batch as f64 / self.batch as f64
    }
}

/// Where a run's base learning rate came from (see the module documentation for why `Recipe`
/// is the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrPolicy {
    /// The recipe's lr as is, whatever the batch (mmdet with `auto_scale_lr` disabled).
    Recipe,
    /// Scaled linearly by batch / the recipe's batch (`--scale-lr`, mmdet's `auto_scale_lr`).
    Scaled,
    /// Given by the user (`--lr`).
    Given,
}

/// The default warm-up of a run of `epochs` epochs of `iters_per_epoch` iterations: three
/// epochs' worth, 100 to 1000 iterations, and at most a third of the run.
pub fn default_warmup_iters(epochs: usize, iters_per_epoch: usize) -> usize {
    (WARMUP_EPOCHS * iters_per_epoch).clamp(MIN_WARMUP_ITERS, RECIPE_WARMUP_ITERS).min(epochs * iters_per_epoch / 3)
}

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
    /// Flat-cosine over `epochs` epochs of `iters_per_epoch` iterations: warm-up, the base lr
    /// until the middle epoch, then cosine to `min_lr_ratio` × the base lr.
    pub fn flat_cosine(
        base_lr: f64,
        warmup_iters: usize,
        epochs: usize,
        iters_per_epoch: usize,
        min_lr_ratio: f64,
    ) -> Self {
        LrSchedule {
            base_lr,
            warmup_iters,
            warmup_start_factor: WARMUP_START_FACTOR,
            cosine_begin: Self::cosine_begin_epoch(epochs) * iters_per_epoch,
            total_iters: epochs * iters_per_epoch,
            min_lr_ratio,
        }
    }

    /// The (0-based) epoch where the cosine part begins: half-way (150 of 300).
    pub fn cosine_begin_epoch(epochs: usize) -> usize {
        epochs / 2
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
        // 300 epochs of 100 iterations at batch 32, lr scaled (5e-4) and the recipe's warm-up.
        let lr = RecipeLr::COCO.scaled_to(32);
        let s = LrSchedule::flat_cosine(lr, RECIPE_WARMUP_ITERS, 300, 100, 0.05);
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

    /// The official recipe (spec §9.3): COCO train2017's 117,266 images with objects at batch
    /// 256 are 459 iterations per epoch; lr 0.004, warm-up exactly 1000 iterations, cosine
    /// from epoch 150 to 2e-4.
    #[test]
    fn official_recipe_is_unchanged() {
        let ipe = 117_266usize.div_ceil(256);
        assert_eq!(default_warmup_iters(300, ipe), 1000);
        // Scaled or not, the recipe's batch gets the recipe's lr.
        for recipe in [RecipeLr::COCO, RecipeLr::INS_X, RecipeLr::DOTA] {
            assert_eq!(recipe.scaled_to(recipe.batch), recipe.lr);
        }
        let s = LrSchedule::flat_cosine(0.004, default_warmup_iters(300, ipe), 300, ipe, 0.05);
        assert_eq!((s.warmup_iters, s.cosine_begin, s.total_iters), (1000, 150 * 459, 300 * 459));
        assert_eq!(s.lr(1000), 0.004);
        assert_eq!(s.lr(150 * 459), 0.004);
        assert!((s.lr(300 * 459) - 2e-4).abs() < 1e-15);
        // RTMDet-R's 3x on DOTA-v1.0 trainval (15,749 patches at batch 8) also warms up 1000.
        assert_eq!(default_warmup_iters(36, 15_749usize.div_ceil(8)), 1000);
    }

    #[test]
    fn warmup_fits_small_runs() {
        // coco8 (4 training images) at batch 4 for 30 epochs: 30 iterations, a third warms up.
        assert_eq!(default_warmup_iters(30, 1), 10);
        // 3 epochs' worth between the floor and the recipe's length.
        assert_eq!(default_warmup_iters(300, 50), 150);
        assert_eq!(default_warmup_iters(300, 10), 100);
        assert_eq!(default_warmup_iters(2, 1), 0);
        assert_eq!(RecipeLr::COCO.scaled_to(4), 6.25e-5);
        let s = LrSchedule::flat_cosine(0.004, 0, 1, 1, 0.05);
        assert_eq!(s.lr(0), 0.004, "no warm-up: the first step at the full lr");
    }
}
