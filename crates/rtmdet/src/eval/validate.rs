//! Running a detector over a dataset with the evaluation settings and scoring it: the work
//! behind `rtmdet val` (and validation during training).

use std::time::Instant;

use serde::Serialize;

use super::coco::{CocoEval, DetBox, evaluate};
use super::coco_files::ground_truth;
use super::confusion::ConfusionMatrix;
use crate::data::Dataset;
use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::image_io::{BgrImage, read_image};
use crate::postprocess::DetectParams;
use crate::structures::Detection;

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
    pub eval: CocoEval,
    pub confusion: ConfusionMatrix,
    pub speed: Speed,
}

/// A detection as a COCO result: `[x, y, w, h]` computed in double from the float32 corners,
/// as mmdet's `CocoMetric` does.
pub fn to_coco(d: &Detection, image_id: u64, category_id: u64) -> DetBox {
    let b = d.bbox.map(f64::from);
    DetBox { image_id, category_id, bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]], score: d.score as f64 }
}

/// The model can be scored on `data`: a detection model (COCO box mAP) predicting as many
/// classes as the dataset has.
pub fn check_model(det: &Detector, data: &Dataset) -> Result<()> {
    if det.config().task != crate::config::Task::Detect {
        return Err(Error::Config(format!(
            "COCO box evaluation needs a detection model; this is a {} model (its evaluation is not supported yet)",
            det.config().task.name()
        )));
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

/// Predicts every image of `data` with `params` (`DetectParams::EVAL` for COCO mAP), `batch`
/// images per forward pass, calling `progress(done, total)` as it goes.
pub fn validate(
    det: &Detector,
    data: &Dataset,
    params: &DetectParams,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Validation> {
    check_model(det, data)?;
    det.check_input_size()?;
    let mut predictions = Vec::new();
    let mut confusion = ConfusionMatrix::new(data.categories.len());
    let (mut pre, mut inf, mut post) = (0f64, 0f64, 0f64);
    let mut done = 0;
    for chunk in data.images.chunks(batch.max(1)) {
        let t = Instant::now();
        let images: Vec<BgrImage> = chunk.iter().map(|e| read_image(&e.path)).collect::<Result<_>>()?;
        let (input, boxes) = det.preprocess(&images);
        pre += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let outputs = det.forward(&input, [images.len(), 3, det.input_size, det.input_size])?;
        inf += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let results = det.postprocess(&outputs, &boxes, params);
        post += t.elapsed().as_secs_f64();
        for (entry, dets) in chunk.iter().zip(results) {
            predictions.extend(dets.iter().map(|d| to_coco(&d, entry.id, data.categories[d.label].id)));
            let gts: Vec<([f64; 4], usize)> =
                entry.annotations.iter().filter(|a| !a.iscrowd).map(|a| (a.bbox, a.label)).collect();
            let ds: Vec<([f64; 4], f32, usize)> =
                dets.iter().map(|d| (d.bbox.map(f64::from), d.score, d.label)).collect();
            confusion.add(&gts, &ds);
        }
        done += chunk.len();
        progress(done, data.images.len());
    }
    let n = data.images.len().max(1) as f64;
    let speed = Speed { preprocess: pre * 1e3 / n, inference: inf * 1e3 / n, postprocess: post * 1e3 / n };
    let eval = evaluate(&ground_truth(data), &predictions)?;
    Ok(Validation { predictions, eval, confusion, speed })
}
