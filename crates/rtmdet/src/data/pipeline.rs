//! The training data pipeline: stage-1 (cached Mosaic → RandomResize → RandomCrop → HSV →
//! flip → pad → cached MixUp) and stage-2 (no Mosaic/MixUp) per spec §9.5–9.6; for RTMDet-R
//! either mmrotate's single stage (resize → h/v/d flip → rotate → pad) or its "aug" recipe
//! (the detection stages with a rotation before the crop and h/v/d flips, spec §11.5). Worker
//! threads decode and augment while the model trains.
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
    BoxGeometry, Rng, Sample, SampleCache, Segmented, cached_mixup, cached_mosaic, hflip, hsv_jitter, pad, random_crop,
    random_resize, rasterise,
};
use crate::config::Size;
use crate::error::{Error, Result};
use crate::image_io::{BgrImage, read_image};
use crate::preprocess::normalize_into;
use crate::structures::Instances;
use crate::structures::boxes::Bbox;
use crate::structures::mask::Segmentation;
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
    /// RTMDet-Ins: objects carry their polygon masks through the pipeline (objects without a
    /// polygon are left out, as mmdet ignores them), boxes under 1 px are dropped
    /// (`FilterAnnotations(min_gt_bbox_wh=(1, 1))`) and the masks are rasterised at the end.
    #[serde(default)]
    pub masks: bool,
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
    /// The "aug" recipe: RandomResize → rotate → RandomCrop → HSV → flip → pad (with cached
    /// Mosaic and MixUp when the stage is `strong`) instead of resize → flip → rotate → pad.
    #[serde(default)]
    pub random_resize_crop: bool,
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
        RotatedAug { flip_prob: 0.75, rotate_prob: 0.5, angle_range: 180.0, rect_classes, random_resize_crop: false }
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
            masks: false,
        }
    }

    /// The stage with RTMDet-Ins's instance masks.
    pub fn with_masks(self) -> Self {
        PipelineConfig { masks: true, ..self }
    }

    /// RTMDet-R's single stage at `imgsz` (1024 officially).
    pub fn rotated(size: Size, imgsz: usize, classes: &[String]) -> Self {
        PipelineConfig { strong: false, rotated: Some(RotatedAug::official(classes)), ..Self::stage1(size, imgsz) }
    }

    /// Stage 1 of RTMDet-R's "aug" recipe (mmrotate `rotated_rtmdet_l-100e-aug-dota`):
    /// detection's stage 1 of the size (for l: Mosaic cache 40, MixUp cache 20, random pop,
    /// MixUp always, resize ratio 0.1–2 at twice `imgsz`) with a rotation before the crop and
    /// h/v/d flips.
    pub fn rotated_aug(size: Size, imgsz: usize, classes: &[String]) -> Self {
        let aug = RotatedAug { random_resize_crop: true, ..RotatedAug::official(classes) };
        PipelineConfig { rotated: Some(aug), ..Self::stage1(size, imgsz) }
    }

    /// Stage 2: the same resize range at `imgsz` scale, no Mosaic or MixUp.
    pub fn stage2(size: Size, imgsz: usize) -> Self {
        Self::stage1(size, imgsz).weak()
    }

    /// The same pipeline without Mosaic and MixUp (the stage-2 switch).
    pub fn weak(self) -> Self {
        PipelineConfig { strong: false, ..self }
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
    /// Polygon masks per object (`[x1, y1, ...]` per part, pixels), in the order of `labels`;
    /// an object without a polygon segmentation has none.
    pub polygons: Vec<Vec<Vec<f32>>>,
}

/// mmdet's `FilterAnnotations(min_gt_bbox_wh=(1e-2, 1e-2))` of the rotated configs.
const MIN_RBOX_SIDE: f32 = 1e-2;

/// `FilterAnnotations(min_gt_bbox_wh=(1, 1))` of the Ins configs.
const MIN_MASK_BOX_SIDE: f32 = 1.0;

/// Keeps the objects whose box is wider and taller than `min` (mmdet compares strictly).
fn retain_min_size(s: &mut Sample<Segmented>, min: f32) {
    let keep: Vec<bool> = s.boxes.iter().map(|o| o.bbox[2] - o.bbox[0] > min && o.bbox[3] - o.bbox[1] > min).collect();
    let mut k = keep.iter();
    s.boxes.retain(|_| *k.next().expect("one flag per object"));
    let mut k = keep.iter();
    s.labels.retain(|_| *k.next().expect("one flag per object"));
}

/// The trainable images of a dataset: with at least one object and both sides ≥ 32 px
/// (mmdet's `filter_empty_gt`, `min_size=32`). Rotated objects smaller than 0.01 px (the
/// degenerate quads a DOTA folder may hold) are left out, as mmrotate's pipeline does.
pub fn train_items(data: &Dataset) -> Vec<TrainItem> {
    data.images
        .iter()
        .filter(|i| trainable_image(i))
        .map(|i| {
            let objs: Vec<_> = i.annotations.iter().filter(|a| trainable_object(a)).collect();
            TrainItem {
                path: i.path.clone(),
                boxes: objs.iter().map(|a| a.bbox.map(|v| v as f32)).collect(),
                labels: objs.iter().map(|a| a.label).collect(),
                rboxes: objs.iter().filter_map(|a| a.rbox).collect(),
                polygons: objs.iter().map(|a| polygons_of(a.segmentation.as_ref())).collect(),
            }
        })
        .filter(|t| !t.boxes.is_empty())
        .collect()
}

/// mmdet's `min_size=32`: images with a side under 32 px are not trained on.
const MIN_IMAGE_SIDE: usize = 32;

fn trainable_image(i: &super::ImageEntry) -> bool {
    i.width >= MIN_IMAGE_SIDE && i.height >= MIN_IMAGE_SIDE
}

/// Crowd regions are ignored (never assigned), degenerate rotated objects dropped.
fn trainable_object(a: &super::Annotation) -> bool {
    match a.rbox {
        Some(r) => r[2] >= MIN_RBOX_SIDE && r[3] >= MIN_RBOX_SIDE,
        None => !a.iscrowd,
    }
}

/// The objects of a dataset that [`train_items`] leaves out, by reason (`2 crowd regions
/// (iscrowd), 3 objects in images under 32 px`); empty when it keeps them all.
pub fn left_out_objects(data: &Dataset) -> String {
    let (mut small_image, mut crowd, mut degenerate) = (0, 0, 0);
    for i in &data.images {
        for a in &i.annotations {
            if !trainable_image(i) {
                small_image += 1;
            } else if !trainable_object(a) {
                if a.rbox.is_some() { degenerate += 1 } else { crowd += 1 }
            }
        }
    }
    [
        (crowd, "crowd regions (iscrowd)"),
        (small_image, "objects in images under 32 px"),
        (degenerate, "rotated boxes under 0.01 px"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The polygons of a COCO `segmentation` (RLE and malformed parts give none).
fn polygons_of(seg: Option<&serde_json::Value>) -> Vec<Vec<f32>> {
    match seg.map(super::coco::segmentation) {
        Some(Ok(Segmentation::Polygons(parts))) => parts
            .into_iter()
            .filter(|p| p.len() >= 6 && p.len().is_multiple_of(2))
            .map(|p| p.into_iter().map(|v| v as f32).collect())
            .collect(),
        _ => Vec::new(),
    }
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

/// One worker's augmentation state for objects of type `B`.
struct Augmenter<B> {
    cfg: PipelineConfig,
    rng: Rng,
    mosaic: SampleCache<B>,
    mixup: SampleCache<B>,
}

impl<B: BoxGeometry> Augmenter<B> {
    fn new(cfg: PipelineConfig, seed: u64) -> Self {
        let mosaic = SampleCache::new(cfg.mosaic_cache, cfg.random_pop);
        let mixup = SampleCache::new(cfg.mixup_cache, cfg.random_pop);
        Augmenter { rng: Rng::seed_from_u64(seed), cfg, mosaic, mixup }
    }

    /// The augmented sample of `first` through [Mosaic →] RandomResize → `rotate` →
    /// RandomCrop → HSV → `flip` → Pad [→ MixUp], re-drawing a random item when the crop
    /// keeps no object (as mmdet's dataset does when a transform returns nothing) — except
    /// with masks: the Ins configs crop with `allow_negative_crop=True`, and the sample goes on
    /// (MixUp may add objects; see `Worker::target`).
    fn jittered(
        &mut self,
        items: &[TrainItem],
        first: usize,
        load: impl Fn(&TrainItem) -> Result<Sample<B>>,
        rotate: impl Fn(&mut Sample<B>, &mut Rng),
        flip: impl Fn(&mut Sample<B>, &mut Rng),
    ) -> Result<Sample<B>> {
        let size = self.cfg.imgsz;
        let mut index = first;
        for _ in 0..50 {
            let mut s = load(&items[index])?;
            if self.cfg.strong {
                s = cached_mosaic(s, &mut self.mosaic, size, 1.0, &mut self.rng);
            }
            let scale = if self.cfg.strong { 2 * size } else { size };
            s = random_resize(&s, scale, self.cfg.resize_ratio, &mut self.rng);
            rotate(&mut s, &mut self.rng);
            let mut s = random_crop(&s, size, &mut self.rng);
            if s.boxes.is_empty() && !self.cfg.masks {
                index = self.rng.random_range(0..items.len());
                continue;
            }
            hsv_jitter(&mut s, self.cfg.hsv, &mut self.rng);
            flip(&mut s, &mut self.rng);
            pad(&mut s, size);
            if self.cfg.strong {
                s = cached_mixup(s, &mut self.mixup, size, self.cfg.mixup_prob, &mut self.rng);
            }
            return Ok(s);
        }
        Err(Error::Other("the augmentation kept no object in 50 attempts".into()))
    }
}

fn load_boxes(item: &TrainItem) -> Result<Sample> {
    Ok(Sample { image: read_image(&item.path)?, boxes: item.boxes.clone(), labels: item.labels.clone() })
}

/// The objects of an item with polygon masks (the others are left out).
fn load_segmented(item: &TrainItem) -> Result<Sample<Segmented>> {
    let (mut boxes, mut labels) = (Vec::new(), Vec::new());
    for ((b, &l), polys) in item.boxes.iter().zip(&item.labels).zip(&item.polygons) {
        if !polys.is_empty() {
            boxes.push(Segmented { bbox: *b, polygons: polys.clone() });
            labels.push(l);
        }
    }
    Ok(Sample { image: read_image(&item.path)?, boxes, labels })
}

fn load_rotated(item: &TrainItem) -> Result<RotatedSample> {
    Ok(RotatedSample { image: read_image(&item.path)?, boxes: item.rboxes.clone(), labels: item.labels.clone() })
}

/// A worker's augmenter: detection (axis-aligned boxes) or RTMDet-R (rotated boxes).
enum Worker {
    Boxes(Augmenter<Bbox>),
    Masks(Augmenter<Segmented>),
    Rotated(Augmenter<RBox>, RotatedAug),
}

impl Worker {
    fn new(cfg: PipelineConfig, seed: u64) -> Self {
        match cfg.rotated.clone() {
            Some(aug) => Worker::Rotated(Augmenter::new(cfg, seed), aug),
            None if cfg.masks => Worker::Masks(Augmenter::new(cfg, seed)),
            None => Worker::Boxes(Augmenter::new(cfg, seed)),
        }
    }

    /// The augmented image of `items[index]` and its objects.
    fn target(&mut self, items: &[TrainItem], index: usize) -> Result<(BgrImage, Instances)> {
        match self {
            Worker::Boxes(a) => {
                let flip_prob = a.cfg.flip_prob;
                let flip = |s: &mut Sample, rng: &mut Rng| {
                    if rng.random::<f64>() < flip_prob {
                        hflip(s);
                    }
                };
                let s = a.jittered(items, index, load_boxes, |_, _| {}, flip)?;
                Ok((s.image, Instances::targets(s.boxes, s.labels)))
            }
            Worker::Masks(a) => {
                let flip_prob = a.cfg.flip_prob;
                let flip = |s: &mut Sample<Segmented>, rng: &mut Rng| {
                    if rng.random::<f64>() < flip_prob {
                        hflip(s);
                    }
                };
                // `FilterAnnotations(keep_empty=True)`: a sample left without objects is redrawn.
                let mut index = index;
                for _ in 0..50 {
                    let mut s = a.jittered(items, index, load_segmented, |_, _| {}, flip)?;
                    retain_min_size(&mut s, MIN_MASK_BOX_SIDE);
                    if !s.boxes.is_empty() {
                        let masks = rasterise(&s.boxes, s.image.height, s.image.width);
                        let mut t = Instances::targets(s.boxes.iter().map(|o| o.bbox).collect(), s.labels);
                        t.masks = masks;
                        return Ok((s.image, t));
                    }
                    index = a.rng.random_range(0..items.len());
                }
                Err(Error::Other("the augmentation kept no object with a mask in 50 attempts".into()))
            }
            Worker::Rotated(a, aug) if aug.random_resize_crop => {
                let rotate = |s: &mut RotatedSample, rng: &mut Rng| {
                    rotated_transforms::random_rotate(s, aug.rotate_prob, aug.angle_range, &aug.rect_classes, rng);
                };
                let flip = |s: &mut RotatedSample, rng: &mut Rng| {
                    rotated_transforms::random_flip(s, aug.flip_prob, rng);
                };
                let s = a.jittered(items, index, load_rotated, rotate, flip)?;
                Ok((s.image, Instances::rotated_targets(s.boxes, s.labels)))
            }
            Worker::Rotated(a, aug) => {
                let s = resize_flip_rotate(a, &items[index], aug)?;
                Ok((s.image, Instances::rotated_targets(s.boxes, s.labels)))
            }
        }
    }
}

/// mmrotate's `dota_rr` pipeline: resize → flip → rotate → pad. A rotation can push every
/// object out of the image; the sample is then kept without objects (all priors negative),
/// as mmrotate does.
fn resize_flip_rotate(a: &mut Augmenter<RBox>, item: &TrainItem, aug: &RotatedAug) -> Result<RotatedSample> {
    let mut s = rotated_transforms::resize_keep_ratio(&load_rotated(item)?, a.cfg.imgsz);
    rotated_transforms::random_flip(&mut s, aug.flip_prob, &mut a.rng);
    rotated_transforms::random_rotate(&mut s, aug.rotate_prob, aug.angle_range, &aug.rect_classes, &mut a.rng);
    rotated_transforms::pad(&mut s, a.cfg.imgsz);
    Ok(s)
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
                let mut aug = Worker::new(cfg.clone(), mix(seed, epoch as u64, w as u64));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structures::rotated::corners;

    fn image(w: usize, h: usize, seed: usize) -> BgrImage {
        BgrImage { width: w, height: h, data: (0..w * h * 3).map(|i| ((i * 7 + seed) % 251) as u8).collect() }
    }

    /// Objects well inside images of assorted shapes, as axis-aligned boxes and as the same
    /// boxes in rotated form (θ = 0).
    fn items() -> Vec<(BgrImage, Vec<Bbox>)> {
        (0..12)
            .map(|k| {
                let (w, h) = (200 + 37 * (k % 4), 160 + 53 * (k % 3));
                let boxes = (0..3)
                    .map(|j| {
                        let (x, y) = (20.0 + 50.0 * j as f32 + k as f32, 30.0 + 30.0 * j as f32);
                        [x, y, x + 25.0 + 3.0 * j as f32, y + 18.0 + k as f32]
                    })
                    .collect();
                (image(w, h, k), boxes)
            })
            .collect()
    }

    /// Training items standing for `items()` by index (their path is the index).
    fn indexed_items(n: usize) -> Vec<TrainItem> {
        (0..n)
            .map(|i| TrainItem {
                path: format!("{i}").into(),
                boxes: vec![],
                labels: vec![],
                rboxes: vec![],
                polygons: vec![],
            })
            .collect()
    }

    fn index_of(t: &TrainItem) -> usize {
        t.path.to_str().and_then(|s| s.parse().ok()).expect("index path")
    }

    fn as_rbox(b: &Bbox) -> RBox {
        [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, b[2] - b[0], b[3] - b[1], 0.0]
    }

    /// An axis-aligned box carried through the augmentations twice: as itself and as the
    /// rotated box it equals (θ = 0), noting whether clipping ever changed it.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Both {
        h: Bbox,
        r: RBox,
        cut: bool,
    }

    impl BoxGeometry for Both {
        fn rescale(&self, sx: f32, sy: f32) -> Self {
            Both { h: self.h.rescale(sx, sy), r: self.r.rescale(sx, sy), cut: self.cut }
        }
        fn translate(&self, dx: f32, dy: f32) -> Self {
            Both { h: self.h.translate(dx, dy), r: self.r.translate(dx, dy), cut: self.cut }
        }
        fn hflip(&self, width: f32) -> Self {
            Both { h: self.h.hflip(width), r: self.r.hflip(width), cut: self.cut }
        }
        fn clip(&self, w: f32, h: f32) -> Self {
            let c = self.h.clip(w, h);
            Both { h: c, r: self.r.clip(w, h), cut: self.cut || c != self.h }
        }
        fn is_inside(&self, w: f32, h: f32) -> bool {
            self.h.is_inside(w, h)
        }
    }

    /// The Mosaic → RandomResize → RandomCrop → HSV → flip → Pad → MixUp chain moves a
    /// rotated box exactly as the axis-aligned box it equals: every object that clipping
    /// never touched comes out as the same rectangle (to f32 rounding of the centre/size
    /// form: 1e-3 relative covers 2048-px coordinates at a few ulp), with θ still 0.
    #[test]
    fn rotated_boxes_follow_the_detection_augmentations_exactly() {
        let data = items();
        let cfg = PipelineConfig::rotated_aug(Size::L, 128, &[]);
        let train = indexed_items(data.len());
        let load = |t: &TrainItem| {
            let (img, b) = &data[index_of(t)];
            let boxes = b.iter().map(|h| Both { h: *h, r: as_rbox(h), cut: false }).collect();
            Ok(Sample { image: img.clone(), boxes, labels: vec![0; b.len()] })
        };
        let flip = |s: &mut Sample<Both>, rng: &mut Rng| {
            if rng.random::<f64>() < 0.5 {
                hflip(s)
            }
        };
        let mut a = Augmenter::<Both>::new(cfg, 7);
        let (mut compared, mut cut) = (0, 0);
        for step in 0..40 {
            let s = a.jittered(&train, step % train.len(), load, |_, _| {}, flip).expect("sample");
            for b in &s.boxes {
                if b.cut {
                    cut += 1;
                    continue;
                }
                let want = as_rbox(&b.h);
                for c in 0..4 {
                    let tol = 1e-3 * want[c].abs().max(1.0);
                    assert!((want[c] - b.r[c]).abs() <= tol, "step {step}: {want:?} vs {:?}", b.r);
                }
                assert!(b.r[4].abs() < 1e-6, "step {step}: θ {}", b.r[4]);
                compared += 1;
            }
        }
        assert!(compared > 60 && cut > 5, "the chain was exercised: {compared} boxes compared, {cut} cut");
    }

    /// mmrotate's `RotatedBoxes`: never clipped, inside while the centre is (closed).
    #[test]
    fn rotated_boxes_are_not_clipped_and_inside_by_centre() {
        let r: RBox = [-1.0, 5.0, 30.0, 4.0, 0.3];
        assert_eq!(r.clip(10.0, 10.0), r);
        assert!(!r.is_inside(10.0, 10.0));
        assert!([0.0, 10.0, 30.0, 4.0, 0.3].is_inside(10.0, 10.0));
        assert!(![10.5, 10.0, 30.0, 4.0, 0.3].is_inside(10.0, 10.0));
        assert_eq!(r.hflip(10.0), [11.0, 5.0, 30.0, 4.0, -0.3]);
    }

    /// With rotation and h/v/d flips, the "aug" recipe yields `imgsz` images whose rotated
    /// objects keep their centres inside; corners of a rotated box stay a rectangle.
    #[test]
    fn rotated_aug_keeps_centres_inside() {
        let data = items();
        let cfg = PipelineConfig::rotated_aug(Size::Tiny, 96, &[]);
        let aug = cfg.rotated.clone().expect("rotated settings");
        let train = indexed_items(data.len());
        let load = |t: &TrainItem| {
            let (img, b) = &data[index_of(t)];
            Ok(RotatedSample { image: img.clone(), boxes: b.iter().map(as_rbox).collect(), labels: vec![0; b.len()] })
        };
        let mut a = Augmenter::<RBox>::new(cfg, 3);
        for step in 0..30 {
            let rotate = |s: &mut RotatedSample, rng: &mut Rng| {
                rotated_transforms::random_rotate(s, 1.0, aug.angle_range, &[], rng);
            };
            let flip = |s: &mut RotatedSample, rng: &mut Rng| {
                rotated_transforms::random_flip(s, aug.flip_prob, rng);
            };
            let s = a.jittered(&train, step % train.len(), load, rotate, flip).expect("sample");
            assert_eq!((s.image.width, s.image.height), (96, 96));
            assert!(!s.boxes.is_empty());
            for b in &s.boxes {
                assert!(b.is_inside(96.0, 96.0), "step {step}: {b:?}");
                let c = corners(b);
                let d = |p: [f32; 2], q: [f32; 2]| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
                assert!((d(c[0], c[2]) - d(c[1], c[3])).abs() < 1e-3, "equal diagonals");
            }
        }
    }

    /// Instance masks as polygons through the detection chain (Mosaic → resize → crop → HSV →
    /// flip → pad → MixUp): the box stays the bounds of the polygons (clamping, scaling,
    /// flipping and translating keep bounds; the crop recomputes the box from the intersected
    /// polygons), every point stays inside the image, and the rasterised masks have the
    /// image's size.
    #[test]
    fn polygon_masks_follow_the_augmentations() {
        use super::super::transforms::{Segmented, rasterise};
        let data = items();
        let cfg = PipelineConfig::stage1(Size::Tiny, 128);
        let train = indexed_items(data.len());
        // A diamond inside each box (its bounds are the box).
        let load = |t: &TrainItem| {
            let (img, b) = &data[index_of(t)];
            let boxes = b
                .iter()
                .map(|b| {
                    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                    Segmented { bbox: *b, polygons: vec![vec![cx, b[1], b[2], cy, cx, b[3], b[0], cy]] }
                })
                .collect();
            Ok(Sample { image: img.clone(), boxes, labels: vec![0; b.len()] })
        };
        let flip = |s: &mut Sample<Segmented>, rng: &mut Rng| {
            if rng.random::<f64>() < 0.5 {
                hflip(s)
            }
        };
        let mut a = Augmenter::<Segmented>::new(cfg, 11);
        let mut checked = 0;
        for step in 0..30 {
            let s = a.jittered(&train, step % train.len(), load, |_, _| {}, flip).expect("sample");
            for o in &s.boxes {
                let pts: Vec<f32> = o.polygons.concat();
                if pts.is_empty() {
                    continue;
                }
                let (xs, ys): (Vec<f32>, Vec<f32>) = pts.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
                let lo = |v: &[f32]| v.iter().cloned().fold(f32::INFINITY, f32::min);
                let hi = |v: &[f32]| v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let bounds = [lo(&xs), lo(&ys), hi(&xs), hi(&ys)];
                for k in 0..4 {
                    assert!(
                        (bounds[k] - o.bbox[k]).abs() <= 1e-3,
                        "step {step}: box {:?} vs polygon bounds {bounds:?}",
                        o.bbox
                    );
                }
                assert!(
                    xs.iter().chain(&ys).all(|&v| (0.0..=128.0).contains(&v)),
                    "step {step}: a point left the image"
                );
                checked += 1;
            }
            let masks = rasterise(&s.boxes, s.image.height, s.image.width);
            assert!(masks.iter().all(|m| (m.height, m.width) == (s.image.height, s.image.width)));
        }
        assert!(checked > 40, "{checked} objects checked");
    }
}
