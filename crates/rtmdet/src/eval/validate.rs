//! Running a detector over a dataset with the evaluation settings and scoring it: the work
//! behind `rtmdet val` (and validation during training).

use std::time::Instant;

use serde::Serialize;

use super::coco::GroundTruth;
use super::coco::{CocoEval, DetBox, Masks, evaluate, evaluate_segm};
use super::coco_files::{ground_truth, ground_truth_masks, read_ground_truth, read_ground_truth_segm};
use super::confusion::ConfusionMatrix;
use super::dota::{self, ApMode, DotaEval, RotatedDetections};
use super::dota_files;
use crate::data::Dataset;
use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::image_io::{BgrImage, read_image};
use crate::postprocess::DetectParams;
use crate::structures::mask::Rle;
use crate::structures::{Detection, Instances};

/// Milliseconds per image of each stage.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Speed {
    pub preprocess: f64,
    pub inference: f64,
    pub postprocess: f64,
}

pub struct Validation {
    /// COCO results with the dataset's category ids.
    pub predictions: Vec<DetBox>,
    /// RTMDet-Ins: the mask of each prediction (empty otherwise).
    pub masks: Vec<Rle>,
    pub eval: CocoEval,
    /// RTMDet-Ins: mask mAP (`segm`) beside the box mAP in `eval`.
    pub segm: Option<CocoEval>,
    pub confusion: ConfusionMatrix,
    pub speed: Speed,
}

/// A detection as a COCO result: `[x, y, w, h]` computed in double from the float32 corners,
/// as mmdet's `CocoMetric` does.
pub fn to_coco(d: &Detection, image_id: u64, category_id: u64) -> DetBox {
    let b = d.bbox.map(f64::from);
    DetBox { image_id, category_id, bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]], score: d.score as f64 }
}

/// The model can be scored on `data`: a detection model (COCO box mAP) or a rotated model on
/// a DOTA dataset (DOTA mAP), predicting as many classes as the dataset has.
pub fn check_model(det: &Detector, data: &Dataset) -> Result<()> {
    use crate::config::Task;
    let task = det.config().task;
    let rotated_data = data.images.iter().flat_map(|i| &i.annotations).any(|a| a.rbox.is_some());
    match task {
        Task::Detect => {}
        Task::Rotated if rotated_data || data.report.annotations == 0 => {}
        Task::Rotated => {
            return Err(Error::Config(
                "a rotated model is scored with DOTA mAP on a DOTA folder (images/ + labelTxt/ or annfiles/); \
                 this dataset has axis-aligned boxes only"
                    .into(),
            ));
        }
        Task::Segment if data.images.iter().flat_map(|i| &i.annotations).all(|a| a.segmentation.is_some()) => {}
        Task::Segment => {
            return Err(Error::Config(
                "an instance segmentation model is scored with box and mask mAP: every annotation needs a \
                 `segmentation` (COCO polygons or RLE)"
                    .into(),
            ));
        }
    }
    if det.config().num_classes != data.categories.len() {
        return Err(Error::Config(format!(
            "the model predicts {} classes but the dataset has {} categories",
            det.config().num_classes,
            data.categories.len()
        )));
    }
    Ok(())
}

/// Every image's detections and the time per stage.
pub struct Predictions {
    /// One set per image of the dataset, in its order, in original image pixels.
    pub results: Vec<Instances>,
    pub speed: Speed,
}

/// Predicts every image of `data` with `params`, `batch` images per forward pass, calling
/// `progress(done, total)` as it goes.
pub fn predict_dataset(
    det: &Detector,
    data: &Dataset,
    params: &DetectParams,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Predictions> {
    check_model(det, data)?;
    det.check_input_size()?;
    let mut results = Vec::with_capacity(data.images.len());
    let (mut pre, mut inf, mut post) = (0f64, 0f64, 0f64);
    for chunk in data.images.chunks(batch.max(1)) {
        let t = Instant::now();
        let images: Vec<BgrImage> = chunk.iter().map(|e| read_image(&e.path)).collect::<Result<_>>()?;
        let (input, boxes) = det.preprocess(&images);
        pre += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let outputs = det.forward(&input, [images.len(), 3, det.input_size, det.input_size])?;
        inf += t.elapsed().as_secs_f64();
        let t = Instant::now();
        results.extend(det.postprocess(&outputs, &boxes, params));
        post += t.elapsed().as_secs_f64();
        progress(results.len(), data.images.len());
    }
    let n = data.images.len().max(1) as f64;
    let speed = Speed { preprocess: pre * 1e3 / n, inference: inf * 1e3 / n, postprocess: post * 1e3 / n };
    Ok(Predictions { results, speed })
}

/// Predicts every image of `data` with `params` (`DetectParams::eval_for_task` for COCO mAP)
/// and scores the boxes with COCO mAP and a confusion matrix, and an RTMDet-Ins model's masks
/// with mask mAP.
pub fn validate(
    det: &Detector,
    data: &Dataset,
    params: &DetectParams,
    batch: usize,
    progress: impl FnMut(usize, usize),
) -> Result<Validation> {
    let p = predict_dataset(det, data, params, batch, progress)?;
    let mut predictions = Vec::new();
    let mut masks = Vec::new();
    let mut confusion = ConfusionMatrix::new(data.categories.len());
    for (entry, dets) in data.images.iter().zip(&p.results) {
        predictions.extend(dets.iter().map(|d| to_coco(&d, entry.id, data.categories[d.label].id)));
        masks.extend(dets.masks.iter().cloned());
        let gts: Vec<([f64; 4], usize)> =
            entry.annotations.iter().filter(|a| !a.iscrowd).map(|a| (a.bbox, a.label)).collect();
        let ds: Vec<([f64; 4], f32, usize)> = dets.iter().map(|d| (d.bbox.map(f64::from), d.score, d.label)).collect();
        confusion.add(&gts, &ds);
    }
    let segm_task = det.config().task == crate::config::Task::Segment;
    let (gt, gt_masks) = evaluation_ground_truth(data, segm_task)?;
    let eval = evaluate(&gt, &predictions)?;
    let segm = if segm_task {
        // mmdet's results carry boxes, so pycocotools takes a detection's area as w·h.
        let det_areas: Vec<f64> = predictions.iter().map(|d| d.bbox[2] * d.bbox[3]).collect();
        Some(evaluate_segm(&gt, &predictions, Masks { gt: &gt_masks, dets: &masks, det_areas: &det_areas })?)
    } else {
        None
    };
    Ok(Validation { predictions, masks, eval, segm, confusion, speed: p.speed })
}

/// The ground truth (and, for `segm`, its masks) to score `data` against: a COCO file's own
/// annotations for the images that loaded, else the dataset's.
fn evaluation_ground_truth(data: &Dataset, with_masks: bool) -> Result<(GroundTruth, Vec<Rle>)> {
    let Some(file) = &data.coco_file else {
        let masks = if with_masks { ground_truth_masks(data)? } else { Vec::new() };
        return Ok((ground_truth(data), masks));
    };
    let (mut gt, mut masks) =
        if with_masks { read_ground_truth_segm(file)? } else { (read_ground_truth(file)?, Vec::new()) };
    let loaded: std::collections::HashSet<u64> = data.images.iter().map(|i| i.id).collect();
    gt.image_ids.retain(|id| loaded.contains(id));
    let keep: Vec<bool> = gt.boxes.iter().map(|b| loaded.contains(&b.image_id)).collect();
    let mut k = keep.iter();
    gt.boxes.retain(|_| *k.next().expect("one flag per box"));
    if with_masks {
        let mut k = keep.iter();
        masks.retain(|_| *k.next().expect("one flag per mask"));
    }
    Ok((gt, masks))
}

/// How DOTA mAP is computed: mmrotate `DOTAMetric`'s settings plus the difficulty rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DotaSettings {
    pub iou_thr: f32,
    pub mode: ApMode,
    /// Objects with a difficulty above this are ignored (see [`super::dota_files::read_ground_truth`]).
    pub diff_thr: u32,
}

impl Default for DotaSettings {
    fn default() -> Self {
        DotaSettings { iou_thr: 0.5, mode: ApMode::ElevenPoints, diff_thr: 0 }
    }
}

pub struct RotatedValidation {
    /// Detections per image (original pixels, with rotated boxes).
    pub results: Vec<Instances>,
    /// Image names (file stems), for DOTA result files.
    pub names: Vec<String>,
    pub eval: DotaEval,
    pub speed: Speed,
}

/// Predicts every image of a DOTA dataset with a rotated model and scores it with DOTA mAP.
pub fn validate_rotated(
    det: &Detector,
    data: &Dataset,
    params: &DetectParams,
    batch: usize,
    settings: DotaSettings,
    progress: impl FnMut(usize, usize),
) -> Result<RotatedValidation> {
    let p = predict_dataset(det, data, params, batch, progress)?;
    let gt = dota_files::ground_truth(data, settings.diff_thr);
    let dets: Vec<RotatedDetections> = p.results.iter().map(RotatedDetections::from).collect();
    let eval = dota::evaluate(&dets, &gt.gts, data.categories.len(), settings.iou_thr, settings.mode);
    Ok(RotatedValidation { results: p.results, names: gt.images, eval, speed: p.speed })
}
