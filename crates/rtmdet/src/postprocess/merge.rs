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
use crate::structures::boxes::{OverlapMode, overlap};
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
    let all = concat(parts);
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

/// How the detections of overlapping slices become one set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SliceMerge {
    /// Class-aware NMS: the best box of a cluster survives as it is.
    #[default]
    Nms,
    /// Weighted box fusion (Solovyev et al., `ensemble_boxes.weighted_boxes_fusion` with one
    /// model and `conf_type="avg"`): a cluster's boxes are averaged, weighted by score.
    Wbf,
}

impl SliceMerge {
    pub fn parse(s: &str) -> Result<SliceMerge> {
        match s {
            "nms" => Ok(SliceMerge::Nms),
            "wbf" => Ok(SliceMerge::Wbf),
            other => Err(Error::Config(format!("unknown merge '{other}': expected nms or wbf"))),
        }
    }
}

/// Weighted box fusion of already-translated detections of one image, per class, at IoU
/// `iou_thr`, as `ensemble_boxes` does it for one model: boxes in descending score join the
/// cluster whose fused box they overlap most (above the threshold) or start one; a fused box is
/// the score-weighted mean of its members and its score their mean. A fused detection keeps the
/// mask of its best member. Axis-aligned boxes only (rotated sets merge by rotated NMS).
pub fn fuse_sets(parts: &[Instances], iou_thr: f32) -> Instances {
    let all = concat(parts);
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| all.scores[b].total_cmp(&all.scores[a]));
    // Per cluster: (label, members, Σ score·box, Σ score, fused box).
    struct Cluster {
        label: usize,
        members: Vec<usize>,
        weighted: [f64; 4],
        weight: f64,
        fused: [f32; 4],
    }
    let mut clusters: Vec<Cluster> = Vec::new();
    for i in order {
        let (b, s, label) = (all.boxes[i], all.scores[i], all.labels[i]);
        let best = clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.label == label)
            .map(|(k, c)| (k, overlap(&c.fused, &b, OverlapMode::Iou, None)))
            .filter(|&(_, iou)| iou > iou_thr)
            .max_by(|x, y| x.1.total_cmp(&y.1))
            .map(|(k, _)| k);
        let k = best.unwrap_or_else(|| {
            clusters.push(Cluster { label, members: Vec::new(), weighted: [0.0; 4], weight: 0.0, fused: b });
            clusters.len() - 1
        });
        let c = &mut clusters[k];
        c.members.push(i);
        let w = f64::from(s);
        for (acc, v) in c.weighted.iter_mut().zip(b) {
            *acc += w * f64::from(v);
        }
        c.weight += w;
        c.fused = c.weighted.map(|v| (v / c.weight.max(f64::MIN_POSITIVE)) as f32);
    }
    let mut out = Instances::default();
    for c in &clusters {
        let score = c.members.iter().map(|&i| f64::from(all.scores[i])).sum::<f64>() / c.members.len() as f64;
        out.boxes.push(c.fused);
        out.scores.push(score as f32);
        out.labels.push(c.label);
        // Members are in descending score: the first is the best.
        if let Some(m) = all.masks.get(c.members[0]) {
            out.masks.push(m.clone());
        }
    }
    let mut keep: Vec<usize> = (0..out.len()).collect();
    keep.sort_by(|&a, &b| out.scores[b].total_cmp(&out.scores[a]));
    out.select(&keep)
}

/// All detections of the parts, in part order.
fn concat(parts: &[Instances]) -> Instances {
    let mut all = Instances::default();
    for p in parts {
        all.boxes.extend_from_slice(&p.boxes);
        all.rboxes.extend_from_slice(&p.rboxes);
        all.scores.extend_from_slice(&p.scores);
        all.labels.extend_from_slice(&p.labels);
        all.masks.extend_from_slice(&p.masks);
    }
    all
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

    fn boxes(rows: &[([f32; 4], f32, usize)]) -> Instances {
        rows.iter().map(|&(bbox, score, label)| crate::structures::Detection { bbox, score, label }).collect()
    }

    /// Hand-computed fusion: two boxes of class 0 (IoU 0.82) fuse into their score-weighted
    /// mean with the mean score; a class-1 box at the same place and a distant class-0 box stay.
    #[test]
    fn weighted_box_fusion_by_hand() {
        let a = boxes(&[([0.0, 0.0, 100.0, 100.0], 0.9, 0), ([0.0, 0.0, 100.0, 100.0], 0.5, 1)]);
        let b = boxes(&[([10.0, 0.0, 110.0, 100.0], 0.6, 0), ([300.0, 300.0, 340.0, 340.0], 0.4, 0)]);
        let f = fuse_sets(&[a, b], 0.55);
        assert_eq!(f.labels, vec![0, 1, 0]);
        // x1 = (0.9·0 + 0.6·10) / 1.5 = 4, x2 = (0.9·100 + 0.6·110) / 1.5 = 104.
        assert_eq!(f.boxes[0], [4.0, 0.0, 104.0, 100.0]);
        assert!((f.scores[0] - 0.75).abs() < 1e-7);
        assert_eq!((f.boxes[1], f.scores[1]), ([0.0, 0.0, 100.0, 100.0], 0.5));
        assert_eq!((f.boxes[2], f.scores[2]), ([300.0, 300.0, 340.0, 340.0], 0.4));
        // Below the threshold nothing fuses.
        let a = boxes(&[([0.0, 0.0, 100.0, 100.0], 0.9, 0)]);
        let b = boxes(&[([50.0, 0.0, 150.0, 100.0], 0.6, 0)]);
        assert_eq!(fuse_sets(&[a, b], 0.55).len(), 2);
    }

    /// A box joins the cluster it overlaps most, compared with the cluster's fused box.
    #[test]
    fn fusion_picks_the_best_overlapping_cluster() {
        let parts = [boxes(&[
            ([0.0, 0.0, 100.0, 100.0], 0.9, 0),
            ([60.0, 0.0, 160.0, 100.0], 0.8, 0),
            ([45.0, 0.0, 145.0, 100.0], 0.7, 0),
        ])];
        // IoU of the third with the first: 55/145 = 0.38; with the second: 85/115 = 0.74.
        let f = fuse_sets(&parts, 0.5);
        assert_eq!(f.len(), 2);
        assert_eq!(f.boxes[0], [0.0, 0.0, 100.0, 100.0]);
        let x1 = (0.8 * 60.0 + 0.7 * 45.0) / 1.5;
        assert!((f.boxes[1][0] - x1).abs() < 1e-4 && (f.scores[1] - 0.75).abs() < 1e-6, "{:?}", f.boxes[1]);
    }
}
