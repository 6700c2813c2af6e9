//! COCO files as the evaluator reads them: a ground-truth JSON (no image files needed) and a
//! results JSON, for `rtmdet eval` (with their masks for `segm`); and the ground truth of a
//! loaded [`Dataset`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::coco::{DetBox, GroundTruth, GtBox};
use crate::data::Dataset;
use crate::data::coco::{bad, parse, read_json, segmentation};
use crate::error::Result;
use crate::structures::mask::{Rle, Segmentation, area, to_bbox};

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

/// The masks of a loaded dataset's annotations, aligned with [`ground_truth`]'s boxes (as
/// `annToRLE`: polygons rasterised at the image size). Every annotation needs a
/// `segmentation`; the error names the first that has none or a broken one.
pub fn ground_truth_masks(data: &Dataset) -> Result<Vec<Rle>> {
    let mut out = Vec::new();
    for img in &data.images {
        for a in &img.annotations {
            let fail = |why: String| {
                crate::error::Error::Other(format!(
                    "{}: annotation {} of image {}: {why}",
                    data.name,
                    a.id,
                    img.path.display()
                ))
            };
            let seg = a.segmentation.as_ref().ok_or_else(|| fail("no segmentation (segm mAP needs masks)".into()))?;
            out.push(mask_of(seg, Some((img.height, img.width))).map_err(fail)?);
        }
    }
    Ok(out)
}

/// The ground truth of a COCO file, for evaluation (no image files needed).
pub fn read_ground_truth(path: &Path) -> Result<GroundTruth> {
    Ok(read_gt(path, false)?.0)
}

/// The ground truth of a COCO file with every annotation's mask as pycocotools' `annToRLE`
/// makes it (polygons rasterised at the image's size, RLE as given), for `segm` evaluation.
pub fn read_ground_truth_segm(path: &Path) -> Result<(GroundTruth, Vec<Rle>)> {
    read_gt(path, true)
}

/// The mask of a `segmentation` value on an image of `size` (`None` when the image size is
/// unknown, which only polygons need).
fn mask_of(v: &Value, size: Option<(usize, usize)>) -> std::result::Result<Rle, String> {
    let seg = segmentation(v)?;
    let (h, w) = match (&seg, size) {
        (Segmentation::Polygons(_), None) => return Err("polygons need the image's width and height".into()),
        (_, s) => s.unwrap_or((0, 0)),
    };
    seg.to_rle(h, w).map_err(|e| e.to_string())
}

fn read_gt(path: &Path, with_masks: bool) -> Result<(GroundTruth, Vec<Rle>)> {
    let raw = parse(path)?;
    let sizes: HashMap<u64, (usize, usize)> =
        raw.images.iter().filter_map(|i| Some((i.id, (i.height? as usize, i.width? as usize)))).collect();
    let mut masks = Vec::new();
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
        if with_masks {
            let which = format!("annotation #{i} (id {})", a.id.map_or("none".to_string(), |v| v.to_string()));
            let seg = a
                .segmentation
                .as_ref()
                .ok_or_else(|| bad(path, format!("{which} has no segmentation (needed for segm)")))?;
            let m = mask_of(seg, sizes.get(&a.image_id).copied()).map_err(|e| bad(path, format!("{which}: {e}")))?;
            masks.push(m);
        }
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
    let gt = GroundTruth {
        image_ids: raw.images.iter().map(|i| i.id).collect(),
        categories: raw.categories.into_iter().map(|c| (c.id, c.name)).collect(),
        boxes,
    };
    Ok((gt, masks))
}

#[derive(Deserialize)]
struct RawDet {
    image_id: u64,
    category_id: u64,
    bbox: Vec<f64>,
    score: f64,
}

#[derive(Deserialize)]
struct RawSegmDet {
    image_id: u64,
    category_id: u64,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    score: f64,
    segmentation: Option<Value>,
}

/// A COCO results file with masks, for `segm` evaluation: `"segmentation"` as RLE or polygons
/// (rasterised at the image sizes of `gt_path`). As pycocotools' `loadRes`: when the first
/// result has a `bbox`, every result needs one and its area is `w·h`; otherwise the boxes and
/// areas come from the masks. Returns the detections, their masks and their areas.
pub fn read_results_segm(path: &Path, gt_path: &Path) -> Result<(Vec<DetBox>, Vec<Rle>, Vec<f64>)> {
    let sizes: HashMap<u64, (usize, usize)> =
        parse(gt_path)?.images.iter().filter_map(|i| Some((i.id, (i.height? as usize, i.width? as usize)))).collect();
    let raw: Vec<RawSegmDet> = read_json(path)?;
    let with_boxes = raw.first().is_some_and(|d| d.bbox.as_ref().is_some_and(|b| !b.is_empty()));
    let (mut dets, mut masks, mut areas) = (Vec::new(), Vec::new(), Vec::new());
    for (i, d) in raw.into_iter().enumerate() {
        let seg = d.segmentation.ok_or_else(|| bad(path, format!("result #{i} has no segmentation")))?;
        let m = mask_of(&seg, sizes.get(&d.image_id).copied()).map_err(|e| bad(path, format!("result #{i}: {e}")))?;
        let bbox = match (d.bbox, with_boxes) {
            (Some(b), true) if b.len() == 4 => [b[0], b[1], b[2], b[3]],
            (Some(b), true) => {
                return Err(bad(path, format!("result #{i}: bbox must have 4 numbers, got {}", b.len())));
            }
            (None, true) => return Err(bad(path, format!("result #{i} has no bbox although the first result has"))),
            (_, false) => to_bbox(&m),
        };
        areas.push(if with_boxes { bbox[2] * bbox[3] } else { area(&m) as f64 });
        if !d.score.is_finite() {
            return Err(bad(path, format!("result #{i}: score {} is not a finite number", d.score)));
        }
        dets.push(DetBox { image_id: d.image_id, category_id: d.category_id, bbox, score: d.score });
        masks.push(m);
    }
    Ok((dets, masks, areas))
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
