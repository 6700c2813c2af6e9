//! The training data pipeline: stage-1 (cached Mosaic → RandomResize → RandomCrop → HSV →
//! flip → pad → cached MixUp) and stage-2 (no Mosaic/MixUp) per spec §9.5–9.6, run by worker
//! threads that decode and augment while the model trains.
//!
//! Everything an epoch produces is a function of `(seed, epoch)`: the order is shuffled by
//! them, batch `b` is built by worker `b % workers` whose caches and random numbers start
//! afresh each epoch from `(seed, epoch, worker)`, and batches are delivered in order. An
//! interrupted epoch is therefore reproduced exactly by replaying its first batches.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::Dataset;
use super::transforms::{
    Rng, Sample, SampleCache, cached_mixup, cached_mosaic, hflip, hsv_jitter, pad, random_crop, random_resize,
};
use crate::config::Size;
use crate::error::{Error, Result};
use crate::image_io::{BgrImage, read_image};
use crate::preprocess::normalize_into;
use crate::structures::Instances;

/// Augmentation settings of one stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    pub imgsz: usize,
    pub strong: bool,
    pub mosaic_cache: usize,
    pub mixup_cache: usize,
    pub random_pop: bool,
    pub mixup_prob: f64,
    pub resize_ratio: (f64, f64),
    pub hsv: (f64, f64, f64),
    pub flip_prob: f64,
}

impl PipelineConfig {
    /// Stage 1 of the official recipe for a size (tiny has its own cache settings).
    pub fn stage1(size: Size, imgsz: usize) -> Self {
        let tiny = matches!(size, Size::Tiny | Size::Nano);
        PipelineConfig {
            imgsz,
            strong: true,
            mosaic_cache: if tiny { 20 } else { 40 },
            mixup_cache: if tiny { 10 } else { 20 },
            random_pop: !tiny,
            mixup_prob: if tiny { 0.5 } else { 1.0 },
            resize_ratio: if matches!(size, Size::M | Size::L | Size::X) { (0.1, 2.0) } else { (0.5, 2.0) },
            hsv: (5.0, 30.0, 30.0),
            flip_prob: 0.5,
        }
    }

    /// Stage 2: the same resize range at `imgsz` scale, no Mosaic or MixUp.
    pub fn stage2(size: Size, imgsz: usize) -> Self {
        PipelineConfig { strong: false, ..Self::stage1(size, imgsz) }
    }
}

/// A training image and its objects (crowd regions excluded).
#[derive(Clone, Debug)]
pub struct TrainItem {
    pub path: std::path::PathBuf,
    pub boxes: Vec<[f32; 4]>,
    pub labels: Vec<usize>,
}

/// The trainable images of a dataset: with at least one object and both sides ≥ 32 px
/// (mmdet's `filter_empty_gt`, `min_size=32`).
pub fn train_items(data: &Dataset) -> Vec<TrainItem> {
    data.images
        .iter()
        .filter(|i| i.width >= 32 && i.height >= 32)
        .map(|i| {
            let objs: Vec<_> = i.annotations.iter().filter(|a| !a.iscrowd).collect();
            TrainItem {
                path: i.path.clone(),
                boxes: objs.iter().map(|a| a.bbox.map(|v| v as f32)).collect(),
                labels: objs.iter().map(|a| a.label).collect(),
            }
        })
        .filter(|t| !t.boxes.is_empty())
        .collect()
}

/// A collated batch: padded BGR images, normalised NCHW input and the objects of each image
/// (input pixels).
pub struct Batch {
    pub index: usize,
    pub images: Vec<BgrImage>,
    pub input: Vec<f32>,
    pub targets: Vec<Instances>,
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64-style mixing of the three numbers into one stream seed.
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sample order of an epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = Rng::seed_from_u64(mix(seed, epoch as u64, u64::MAX));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// One worker's augmentation state.
struct Augmenter {
    cfg: PipelineConfig,
    rng: Rng,
    mosaic: SampleCache,
    mixup: SampleCache,
}

impl Augmenter {
    fn new(cfg: PipelineConfig, seed: u64) -> Self {
        let mosaic = SampleCache::new(cfg.mosaic_cache, cfg.random_pop);
        let mixup = SampleCache::new(cfg.mixup_cache, cfg.random_pop);
        Augmenter { rng: Rng::seed_from_u64(seed), cfg, mosaic, mixup }
    }

    fn load(item: &TrainItem) -> Result<Sample> {
        Ok(Sample { image: read_image(&item.path)?, boxes: item.boxes.clone(), labels: item.labels.clone() })
    }

    /// The augmented sample of `first`, re-drawing a random item when the crop loses every
    /// object (as mmdet's dataset does when a transform returns nothing).
    fn sample(&mut self, items: &[TrainItem], first: usize) -> Result<Sample> {
        let size = self.cfg.imgsz;
        let mut index = first;
        for _ in 0..50 {
            let mut s = Self::load(&items[index])?;
            if self.cfg.strong {
                s = cached_mosaic(s, &mut self.mosaic, size, 1.0, &mut self.rng);
            }
            let scale = if self.cfg.strong { 2 * size } else { size };
            s = random_resize(&s, scale, self.cfg.resize_ratio, &mut self.rng);
            if let Some(mut s) = random_crop(&s, size, &mut self.rng) {
                hsv_jitter(&mut s, self.cfg.hsv, &mut self.rng);
                if self.rng.random::<f64>() < self.cfg.flip_prob {
                    hflip(&mut s);
                }
                pad(&mut s, size);
                if self.cfg.strong {
                    s = cached_mixup(s, &mut self.mixup, size, self.cfg.mixup_prob, &mut self.rng);
                }
                return Ok(s);
            }
            index = self.rng.random_range(0..items.len());
        }
        Err(Error::Other("the augmentation kept no object in 50 attempts".into()))
    }
}

/// The batches of one epoch, produced by background workers, delivered in order.
pub struct EpochLoader {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    num_batches: usize,
}

impl EpochLoader {
    pub fn new(
        items: Arc<Vec<TrainItem>>,
        cfg: PipelineConfig,
        batch: usize,
        workers: usize,
        seed: u64,
        epoch: usize,
    ) -> Self {
        let order = Arc::new(epoch_order(items.len(), seed, epoch));
        let num_batches = items.len().div_ceil(batch.max(1));
        let workers = workers.clamp(1, num_batches.max(1));
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, rx) = sync_channel(2);
            let (items, order, cfg) = (items.clone(), order.clone(), cfg.clone());
            handles.push(std::thread::spawn(move || {
                let mut aug = Augmenter::new(cfg.clone(), mix(seed, epoch as u64, w as u64));
                for b in (w..num_batches).step_by(workers) {
                    let idx = &order[b * batch..((b + 1) * batch).min(order.len())];
                    let built = (|| {
                        let samples: Vec<Sample> = idx.iter().map(|&i| aug.sample(&items, i)).collect::<Result<_>>()?;
                        let mut input = Vec::with_capacity(samples.len() * 3 * cfg.imgsz * cfg.imgsz);
                        for s in &samples {
                            normalize_into(&s.image, &mut input);
                        }
                        let targets =
                            samples.iter().map(|s| Instances::targets(s.boxes.clone(), s.labels.clone())).collect();
                        Ok(Batch { index: b, images: samples.into_iter().map(|s| s.image).collect(), input, targets })
                    })();
                    if tx.send(built).is_err() {
                        return;
                    }
                }
            }));
            receivers.push(rx);
        }
        EpochLoader { receivers, handles, next: 0, num_batches }
    }

    pub fn num_batches(&self) -> usize {
        self.num_batches
    }
}

impl Iterator for EpochLoader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.num_batches {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        Some(self.receivers[w].recv().unwrap_or_else(|_| Err(Error::Other("a data worker stopped".into()))))
    }
}

impl Drop for EpochLoader {
    fn drop(&mut self) {
        // Dropping the receivers makes blocked workers stop; then wait for them.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
