//! The training data pipeline: stage-1 (cached Mosaic → RandomResize → RandomCrop → HSV →
//! flip → pad → cached MixUp) and stage-2 (no Mosaic/MixUp) per spec §9.5–9.6, or RTMDet-R's
//! single stage (resize → h/v/d flip → rotate → pad, spec §11.5), run by worker threads that
//! decode and augment while the model trains.
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
use super::rotated_transforms::{self, RotatedSample};
use super::transforms::{
    Rng, Sample, SampleCache, cached_mixup, cached_mosaic, hflip, hsv_jitter, pad, random_crop, random_resize,
};
use crate::config::Size;
use crate::error::{Error, Result};
use crate::image_io::{BgrImage, read_image};
use crate::preprocess::normalize_into;
use crate::structures::Instances;
use crate::structures::rotated::RBox;

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
    /// RTMDet-R's pipeline instead of the detection one (absent in detection runs).
    #[serde(default)]
    pub rotated: Option<RotatedAug>,
}

/// RTMDet-R's augmentation (mmrotate `dota_rr`: `RandomFlip(0.75, h/v/d)`,
/// `RandomRotate(0.5, 180, rect_obj_labels)`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotatedAug {
    pub flip_prob: f64,
    pub rotate_prob: f64,
    /// Degrees: angles are drawn from U(−range, range).
    pub angle_range: f64,
    /// Classes whose boxes have no defined orientation (DOTA's storage-tank and roundabout):
    /// images with them rotate by right angles only.
    pub rect_classes: Vec<usize>,
}

impl RotatedAug {
    /// The official settings; `classes` are the dataset's names (for the rect classes).
    pub fn official(classes: &[String]) -> Self {
        let rect_classes = classes
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.as_str(), "storage-tank" | "roundabout"))
            .map(|(i, _)| i)
            .collect();
        RotatedAug { flip_prob: 0.75, rotate_prob: 0.5, angle_range: 180.0, rect_classes }
    }
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
            rotated: None,
        }
    }

    /// RTMDet-R's single stage at `imgsz` (1024 officially).
    pub fn rotated(size: Size, imgsz: usize, classes: &[String]) -> Self {
        PipelineConfig { strong: false, rotated: Some(RotatedAug::official(classes)), ..Self::stage1(size, imgsz) }
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
    /// Rotated objects (DOTA data), in the order of `labels`; empty otherwise.
    pub rboxes: Vec<RBox>,
}

/// mmdet's `FilterAnnotations(min_gt_bbox_wh=(1e-2, 1e-2))` of the rotated configs.
const MIN_RBOX_SIDE: f32 = 1e-2;

/// The trainable images of a dataset: with at least one object and both sides ≥ 32 px
/// (mmdet's `filter_empty_gt`, `min_size=32`). Rotated objects smaller than 0.01 px (the
/// degenerate quads a DOTA folder may hold) are left out, as mmrotate's pipeline does.
pub fn train_items(data: &Dataset) -> Vec<TrainItem> {
    data.images
        .iter()
        .filter(|i| i.width >= 32 && i.height >= 32)
        .map(|i| {
            let usable = |a: &&super::Annotation| match a.rbox {
                Some(r) => r[2] >= MIN_RBOX_SIDE && r[3] >= MIN_RBOX_SIDE,
                None => !a.iscrowd,
            };
            let objs: Vec<_> = i.annotations.iter().filter(usable).collect();
            TrainItem {
                path: i.path.clone(),
                boxes: objs.iter().map(|a| a.bbox.map(|v| v as f32)).collect(),
                labels: objs.iter().map(|a| a.label).collect(),
                rboxes: objs.iter().filter_map(|a| a.rbox).collect(),
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

    /// The augmented image of `items[index]` and its objects, for either pipeline.
    fn target(&mut self, items: &[TrainItem], index: usize) -> Result<(BgrImage, Instances)> {
        if let Some(aug) = self.cfg.rotated.clone() {
            let s = self.sample_rotated(&items[index], &aug)?;
            return Ok((s.image, Instances::rotated_targets(s.rboxes, s.labels)));
        }
        let s = self.sample(items, index)?;
        Ok((s.image, Instances::targets(s.boxes, s.labels)))
    }

    /// RTMDet-R: resize → flip → rotate → pad. A rotation can push every object out of the
    /// image; the sample is then kept without objects (all priors negative), as mmrotate does.
    fn sample_rotated(&mut self, item: &TrainItem, aug: &RotatedAug) -> Result<RotatedSample> {
        let s =
            RotatedSample { image: read_image(&item.path)?, rboxes: item.rboxes.clone(), labels: item.labels.clone() };
        let mut s = rotated_transforms::resize_keep_ratio(&s, self.cfg.imgsz);
        rotated_transforms::random_flip(&mut s, aug.flip_prob, &mut self.rng);
        rotated_transforms::random_rotate(&mut s, aug.rotate_prob, aug.angle_range, &aug.rect_classes, &mut self.rng);
        rotated_transforms::pad(&mut s, self.cfg.imgsz);
        Ok(s)
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
                        let samples: Vec<(BgrImage, Instances)> =
                            idx.iter().map(|&i| aug.target(&items, i)).collect::<Result<_>>()?;
                        let mut input = Vec::with_capacity(samples.len() * 3 * cfg.imgsz * cfg.imgsz);
                        for (image, _) in &samples {
                            normalize_into(image, &mut input);
                        }
                        let (images, targets) = samples.into_iter().unzip();
                        Ok(Batch { index: b, images, input, targets })
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
