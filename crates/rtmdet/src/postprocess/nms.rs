//! Class-aware NMS with mmcv's `batched_nms` semantics (spec §8.2, reference quirk 8).

use rayon::prelude::*;

use crate::structures::boxes::{OverlapMode, area, overlap_with_areas};

/// Boxes below this count share one NMS through per-class coordinate offsets; above it,
/// NMS runs per class (mmcv's `split_thr`).
pub const SPLIT_THR: usize = 10_000;

/// Indices sorted by descending score (stable: ties keep their input order).
fn order_by_score(scores: &[f32], idx: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut order: Vec<usize> = idx.collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Greedy NMS over `order` (already score-descending): a box is suppressed when its IoU with
/// a kept box is strictly greater than `thr`. Stops after `max_keep` boxes: any later one
/// ranks below them and cannot survive a top-`max_keep` cut.
///
/// The boxes are gathered in order as columns with their areas so the suppression scan is a
/// branch-free loop the compiler vectorises; the IoU is mmcv's float32 IoU without the +1
/// pixel convention and without an eps ([`overlap_with_areas`]).
fn greedy(boxes: &[[f32; 4]], order: &[usize], thr: f32, max_keep: usize) -> Vec<usize> {
    let n = order.len();
    let col = |k: usize| order.iter().map(|&i| boxes[i][k]).collect::<Vec<f32>>();
    let (x1, y1, x2, y2) = (col(0), col(1), col(2), col(3));
    let areas: Vec<f32> = (0..n).map(|i| area(&[x1[i], y1[i], x2[i], y2[i]])).collect();
    let mut suppressed = vec![false; n];
    let mut keep = Vec::new();
    for i in 0..n {
        if keep.len() == max_keep {
            break;
        }
        if suppressed[i] {
            continue;
        }
        keep.push(order[i]);
        let (a, aa) = ([x1[i], y1[i], x2[i], y2[i]], areas[i]);
        let rest = i + 1..n;
        for (((((s, &bx1), &by1), &bx2), &by2), &ba) in suppressed[rest.clone()]
            .iter_mut()
            .zip(&x1[rest.clone()])
            .zip(&y1[rest.clone()])
            .zip(&x2[rest.clone()])
            .zip(&y2[rest.clone()])
            .zip(&areas[rest])
        {
            *s |= overlap_with_areas(&a, &[bx1, by1, bx2, by2], aa, ba, OverlapMode::Iou, None) > thr;
        }
    }
    keep
}

/// Greedy NMS of each class on its own (classes never suppress each other), keeping at most
/// `max_keep` per class, merged by descending score (ties by index).
fn per_class(boxes: &[[f32; 4]], scores: &[f32], labels: &[usize], thr: f32, max_keep: usize) -> Vec<usize> {
    let num_labels = labels.iter().max().map_or(0, |m| m + 1);
    let mut classes: Vec<Vec<usize>> = vec![Vec::new(); num_labels];
    for (i, &l) in labels.iter().enumerate() {
        classes[l].push(i);
    }
    let kept: Vec<Vec<usize>> = classes
        .into_par_iter()
        .filter(|v| !v.is_empty())
        .map(|idx| greedy(boxes, &order_by_score(scores, idx.into_iter()), thr, max_keep))
        .collect();
    let mut keep: Vec<usize> = kept.into_iter().flatten().collect();
    keep.sort_unstable();
    let mut keep = order_by_score(scores, keep.into_iter());
    keep.truncate(max_keep);
    keep
}

/// Class-aware NMS; returns kept indices in descending score order.
pub fn batched_nms(boxes: &[[f32; 4]], scores: &[f32], labels: &[usize], thr: f32) -> Vec<usize> {
    batched_nms_top(boxes, scores, labels, thr, usize::MAX)
}

/// [`batched_nms`] followed by a cut to the best `max_keep`, computed without running NMS past
/// what the cut keeps.
pub fn batched_nms_top(boxes: &[[f32; 4]], scores: &[f32], labels: &[usize], thr: f32, max_keep: usize) -> Vec<usize> {
    if boxes.is_empty() {
        return Vec::new();
    }
    if boxes.len() < SPLIT_THR {
        // mmcv offsets each class by label * (max coordinate + 1) and runs one NMS; boxes of
        // different classes then never overlap, so running it class by class on the offset
        // boxes gives the same keep list (the IoUs are still computed on offset coordinates,
        // as mmcv rounds them).
        let max_coord = boxes.iter().flat_map(|b| b.iter().copied()).fold(f32::NEG_INFINITY, f32::max);
        let step = max_coord + 1.0;
        let shifted: Vec<[f32; 4]> = boxes
            .iter()
            .zip(labels)
            .map(|(b, &l)| {
                let o = l as f32 * step;
                [b[0] + o, b[1] + o, b[2] + o, b[3] + o]
            })
            .collect();
        per_class(&shifted, scores, labels, thr, max_keep)
    } else {
        per_class(boxes, scores, labels, thr, max_keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppresses_only_same_class_above_threshold() {
        let boxes = [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]];
        let scores = [0.9, 0.8, 0.7, 0.6];
        // box 1 overlaps box 0 with IoU 9/11 > 0.65; box 2 is identical but of another class.
        assert_eq!(batched_nms(&boxes, &scores, &[0, 0, 1, 0], 0.65), vec![0, 2, 3]);
        // IoU exactly at the threshold is kept (strict >).
        let b = [[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]]; // IoU 1/3
        assert_eq!(batched_nms(&b, &[0.9, 0.8], &[0, 0], 1.0 / 3.0), vec![0, 1]);
    }

    #[test]
    fn split_path_is_per_class_nms() {
        let (mut boxes, mut scores, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        let mut s = 1u32;
        for i in 0..SPLIT_THR + 10 {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            let (x, y) = ((s % 500) as f32, ((s / 500) % 500) as f32);
            boxes.push([x, y, x + 20.0 + (i % 7) as f32, y + 15.0]);
            scores.push(((s >> 8) % 100_000) as f32 / 100_000.0);
            labels.push(i % 3);
        }
        let split = batched_nms(&boxes, &scores, &labels, 0.5);
        let mut expected = Vec::new();
        for class in 0..3 {
            let idx: Vec<usize> = (0..boxes.len()).filter(|&i| labels[i] == class).collect();
            let b: Vec<[f32; 4]> = idx.iter().map(|&i| boxes[i]).collect();
            let sc: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
            assert!(b.len() < SPLIT_THR);
            expected.extend(batched_nms(&b, &sc, &vec![0; b.len()], 0.5).into_iter().map(|k| idx[k]));
        }
        assert!(split.len() < boxes.len() && split.len() == expected.len());
        let mut a = split.clone();
        a.sort_unstable();
        expected.sort_unstable();
        assert_eq!(a, expected);
        assert!(split.windows(2).all(|w| scores[w[0]] >= scores[w[1]]));
    }
}
