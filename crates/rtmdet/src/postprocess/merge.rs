//! Merging the detections of overlapping patches back into their source image, as
//! mmrotate's `DOTAMetric.merge_results` does: patches are grouped by source (the name before
//! the first `__`), rotated boxes are moved by the patch offset (`__X___Y` in the name) in
//! float32, and each class of each source image goes through rotated NMS on its own.

use std::collections::HashMap;

use crate::data::split::parse_patch_name;
use crate::structures::Instances;
use crate::structures::rotated::{enclosing_box, nms_rotated};

/// mmrotate's merge IoU (`DOTAMetric(iou_thr=0.1)`).
pub const MERGE_IOU: f32 = 0.1;

/// Moves every rotated box of `set` by `(dx, dy)`.
pub fn translate(set: &mut Instances, dx: f32, dy: f32) {
    for r in &mut set.rboxes {
        r[0] += dx;
        r[1] += dy;
    }
    set.boxes = set.rboxes.iter().map(enclosing_box).collect();
}

/// Merges already-translated rotated detections of one image (all its patches, in patch
/// order): per class, rotated NMS at `iou_thr`; classes in index order, each score-descending.
pub fn merge_sets(parts: &[Instances], iou_thr: f32) -> Instances {
    let mut all = Instances::default();
    for p in parts {
        all.rboxes.extend_from_slice(&p.rboxes);
        all.scores.extend_from_slice(&p.scores);
        all.labels.extend_from_slice(&p.labels);
    }
    let num_classes = all.labels.iter().max().map_or(0, |m| m + 1);
    let mut keep = Vec::new();
    for c in 0..num_classes {
        let idx: Vec<usize> = (0..all.labels.len()).filter(|&i| all.labels[i] == c).collect();
        let boxes: Vec<_> = idx.iter().map(|&i| all.rboxes[i]).collect();
        let scores: Vec<f32> = idx.iter().map(|&i| all.scores[i]).collect();
        keep.extend(nms_rotated(&boxes, &scores, iou_thr).into_iter().map(|k| idx[k]));
    }
    let mut out = Instances::default();
    for i in keep {
        out.rboxes.push(all.rboxes[i]);
        out.scores.push(all.scores[i]);
        out.labels.push(all.labels[i]);
    }
    out.boxes = out.rboxes.iter().map(enclosing_box).collect();
    out
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
        assert_eq!(m.labels, vec![0, 0, 1]);
        assert_eq!(m.scores, vec![0.9, 0.6, 0.8]);
        assert_eq!(m.rboxes[1], [834.0, 500.0, 30.0, 30.0, 0.0]);
    }
}
