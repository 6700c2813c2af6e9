//! COCO files as the evaluator reads them: a ground-truth JSON (no image files needed) and a
//! results JSON, for `rtmdet eval`; and the ground truth of a loaded [`Dataset`].

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::coco::{DetBox, GroundTruth, GtBox};
use crate::data::Dataset;
use crate::data::coco::{bad, parse, read_json};
use crate::error::Result;

/// The ground truth of a loaded dataset in the evaluator's terms (COCO `xywh`, the
/// dataset's own category ids).
pub fn ground_truth(data: &Dataset) -> GroundTruth {
    GroundTruth {
        image_ids: data.images.iter().map(|i| i.id).collect(),
        categories: data.categories.iter().map(|c| (c.id, c.name.clone())).collect(),
        boxes: data
            .images
            .iter()
            .flat_map(|img| {
                img.annotations.iter().map(move |a| GtBox {
                    id: a.id,
                    image_id: img.id,
                    category_id: data.categories[a.label].id,
                    bbox: [a.bbox[0], a.bbox[1], a.bbox[2] - a.bbox[0], a.bbox[3] - a.bbox[1]],
                    area: a.area,
                    iscrowd: a.iscrowd,
                })
            })
            .collect(),
    }
}

/// The ground truth of a COCO file, for evaluation (no image files needed).
pub fn read_ground_truth(path: &Path) -> Result<GroundTruth> {
    let raw = parse(path)?;
    let cats: HashSet<u64> = raw.categories.iter().map(|c| c.id).collect();
    let mut boxes = Vec::with_capacity(raw.annotations.len());
    let mut unknown = 0;
    for (i, a) in raw.annotations.iter().enumerate() {
        // pycocotools evaluates only the listed categories; say so instead of silently.
        if !cats.contains(&a.category_id) {
            if unknown == 0 {
                eprintln!(
                    "warning: {}: annotation #{i} has category_id {} which is not in `categories` (ignored)",
                    path.display(),
                    a.category_id
                );
            }
            unknown += 1;
            continue;
        }
        let bbox = [a.bbox[0], a.bbox[1], a.bbox[2], a.bbox[3]];
        boxes.push(GtBox {
            // pycocotools numbers annotations from 1 when ids are absent.
            id: a.id.unwrap_or(i as u64 + 1),
            image_id: a.image_id,
            category_id: a.category_id,
            bbox,
            area: a.area.unwrap_or(bbox[2] * bbox[3]),
            iscrowd: a.iscrowd != 0,
        });
    }
    Ok(GroundTruth {
        image_ids: raw.images.iter().map(|i| i.id).collect(),
        categories: raw.categories.into_iter().map(|c| (c.id, c.name)).collect(),
        boxes,
    })
}

#[derive(Deserialize)]
struct RawDet {
    image_id: u64,
    category_id: u64,
    bbox: Vec<f64>,
    score: f64,
}

/// A COCO results file `[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`.
pub fn read_results(path: &Path) -> Result<Vec<DetBox>> {
    let raw: Vec<RawDet> = read_json(path)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, d)| {
            if d.bbox.len() != 4 {
                return Err(bad(
                    path,
                    format!("result #{i}: bbox must have 4 numbers [x, y, w, h], got {}", d.bbox.len()),
                ));
            }
            Ok(DetBox {
                image_id: d.image_id,
                category_id: d.category_id,
                bbox: [d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]],
                score: d.score,
            })
        })
        .collect()
}
