//! Merging the detections of overlapping patches back into their source image, as
//! mmrotate's `DOTAMetric.merge_results` does: patches are grouped by source (the name before
//! the first `__`), rotated boxes are moved by the patch offset (`__X___Y` in the name) in
//! float32, and each class of each source image goes through rotated NMS on its own.
//! Axis-aligned detections (sliced inference with a detection model) merge the same way with
//! axis-aligned NMS.

use std::collections::HashMap;

use super::nms::batched_nms;
use crate::data::split::parse_patch_name;
use crate::error::{Error, Result};
use crate::structures::Instances;
use crate::structures::rotated::{enclosing_box, nms_rotated};

/// mmrotate's merge IoU (`DOTAMetric(iou_thr=0.1)`).
pub const MERGE_IOU: f32 = 0.1;

/// Moves every box of `set` by `(dx, dy)` (rotated boxes by their centre, in float32).
pub fn translate(set: &mut Instances, dx: f32, dy: f32) {
    if set.rboxes.is_empty() {
        for b in &mut set.boxes {
            *b = [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy];
        }
        return;
    }
    for r in &mut set.rboxes {
        r[0] += dx;
        r[1] += dy;
    }
    set.boxes = set.rboxes.iter().map(enclosing_box).collect();
}

/// Moves the masks of a patch's detections into the `height`×`width` source image whose
/// pixels the patch starts at `(x0, y0)` (patch padding beyond the image is dropped).
pub fn translate_masks(set: &mut Instances, (x0, y0): (usize, usize), height: usize, width: usize) -> Result<()> {
    for m in &mut set.masks {
        *m = crate::structures::mask::paste(m, (x0, y0), height, width).map_err(|e| Error::Other(e.to_string()))?;
    }
    Ok(())
}

/// Merges already-translated detections of one image (all its patches, in patch order):
/// per class, NMS at `iou_thr` (rotated NMS when the sets carry rotated boxes); the result is
/// score-descending, each class keeping its NMS order.
pub fn merge_sets(parts: &[Instances], iou_thr: f32) -> Instances {
    let mut all = Instances::default();
    for p in parts {
        all.boxes.extend_from_slice(&p.boxes);
        all.rboxes.extend_from_slice(&p.rboxes);
        all.scores.extend_from_slice(&p.scores);
        all.labels.extend_from_slice(&p.labels);
        all.masks.extend_from_slice(&p.masks);
    }
    let rotated = !all.rboxes.is_empty();
    let num_classes = all.labels.iter().max().map_or(0, |m| m + 1);
    let mut keep = Vec::new();
    for c in 0..num_classes {
        let idx: Vec<usize> = (0..all.labels.len()).filter(|&i| all.labels[i] == c).collect();
        let scores: Vec<f32> = idx.iter().map(|&i| all.scores[i]).collect();
        let kept = if rotated {
            nms_rotated(&idx.iter().map(|&i| all.rboxes[i]).collect::<Vec<_>>(), &scores, iou_thr)
        } else {
            let boxes: Vec<[f32; 4]> = idx.iter().map(|&i| all.boxes[i]).collect();
            batched_nms(&boxes, &scores, &vec![0; idx.len()], iou_thr)
        };
        keep.extend(kept.into_iter().map(|k| idx[k]));
    }
    // Stable, so each class keeps its NMS order (what mmrotate writes per class).
    keep.sort_by(|&a, &b| all.scores[b].total_cmp(&all.scores[a]));
    all.select(&keep)
}

/// Merges named patch results (`NAME__SIZE__X___Y`) into one result per source image, in
/// order of first appearance. Names without an offset are taken as whole images.
pub fn merge_patches(results: Vec<(String, Instances)>, iou_thr: f32) -> Vec<(String, Instances)> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<Instances>> = HashMap::new();
    for (name, mut set) in results {
        let source = match parse_patch_name(&name) {
            Some((source, x, y)) => {
                translate(&mut set, x, y);
                source
            }
            None => name,
        };
        if !groups.contains_key(&source) {
            order.push(source.clone());
        }
        groups.entry(source).or_default().push(set);
    }
    order
        .into_iter()
        .map(|name| {
            let merged = merge_sets(&groups[&name], iou_thr);
            (name, merged)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rboxes: Vec<[f32; 5]>, scores: Vec<f32>, labels: Vec<usize>) -> Instances {
        let boxes = rboxes.iter().map(enclosing_box).collect();
        Instances { boxes, scores, labels, rboxes, masks: Vec::new() }
    }

    #[test]
    fn overlapping_patches_merge_per_class() {
        // The same plane seen by two patches (offsets 0 and 824), a second class at the same
        // place survives, and a plane elsewhere stays.
        let a = set(vec![[900.0, 50.0, 40.0, 20.0, 0.1], [900.0, 50.0, 40.0, 20.0, 0.1]], vec![0.9, 0.8], vec![0, 1]);
        let b = set(vec![[76.5, 50.0, 40.0, 20.0, 0.1], [10.0, 500.0, 30.0, 30.0, 0.0]], vec![0.7, 0.6], vec![0, 0]);
        let merged = merge_patches(vec![("img__1024__0___0".into(), a), ("img__1024__824___0".into(), b)], MERGE_IOU);
        assert_eq!(merged.len(), 1);
        let (name, m) = &merged[0];
        assert_eq!(name, "img");
        assert_eq!(m.labels, vec![0, 1, 0]);
        assert_eq!(m.scores, vec![0.9, 0.8, 0.6]);
        assert_eq!(m.rboxes[2], [834.0, 500.0, 30.0, 30.0, 0.0]);
    }
}
