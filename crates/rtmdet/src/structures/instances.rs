//! A set of object instances: boxes with scores and labels, the shared currency of
//! post-processing (detections), training (targets), evaluation and visualisation, in the
//! spirit of detectron2's `Instances`. Task outputs (masks, rotated boxes) join as further
//! columns of the same set.

use serde::{Deserialize, Serialize};

use super::boxes::Bbox;
use super::mask::Rle;
use super::rotated::RBox;

/// One detected object: the row view of an [`Instances`] set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `x1, y1, x2, y2` in pixels of the original image (or the network input when not
    /// rescaled).
    pub bbox: Bbox,
    pub score: f32,
    pub label: usize,
}

/// Instances as columns of equal length. Optional columns are empty when a task does not
/// produce them: ground truth has no scores, only RTMDet-R fills `rboxes` (then `boxes` holds
/// their enclosing axis-aligned boxes) and only RTMDet-Ins fills `masks`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Instances {
    /// `[x1, y1, x2, y2]` per instance.
    pub boxes: Vec<Bbox>,
    /// Confidence per instance (detections), or empty (ground truth).
    pub scores: Vec<f32>,
    /// Contiguous class index per instance.
    pub labels: Vec<usize>,
    /// Rotated boxes `(cx, cy, w, h, θ)` per instance, or empty.
    pub rboxes: Vec<RBox>,
    /// Instance masks (COCO RLE, image size) per instance, or empty.
    pub masks: Vec<Rle>,
}

impl Instances {
    /// Ground-truth objects (no scores).
    pub fn targets(boxes: Vec<Bbox>, labels: Vec<usize>) -> Self {
        Instances { boxes, labels, ..Default::default() }
    }

    /// Rotated ground-truth objects (RTMDet-R), with their enclosing boxes as `boxes`.
    pub fn rotated_targets(rboxes: Vec<RBox>, labels: Vec<usize>) -> Self {
        let boxes = rboxes.iter().map(super::rotated::enclosing_box).collect();
        Instances { boxes, labels, rboxes, ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// Appends a box-only row (sets without rotated boxes or masks).
    pub fn push(&mut self, d: Detection) {
        debug_assert!(self.rboxes.is_empty() && self.masks.is_empty(), "a box-only row in a set with task columns");
        self.boxes.push(d.bbox);
        self.scores.push(d.score);
        self.labels.push(d.label);
    }

    /// Row `i` (score NaN for ground truth).
    pub fn get(&self, i: usize) -> Detection {
        Detection { bbox: self.boxes[i], score: self.scores.get(i).copied().unwrap_or(f32::NAN), label: self.labels[i] }
    }

    /// The rows in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Detection> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Keeps the rows where `keep` is true, in order.
    pub fn retain(&mut self, keep: &[bool]) {
        debug_assert_eq!(keep.len(), self.len());
        fn filter<T>(v: &mut Vec<T>, keep: &[bool]) {
            if !v.is_empty() {
                let mut k = keep.iter();
                v.retain(|_| *k.next().expect("one flag per row"));
            }
        }
        filter(&mut self.boxes, keep);
        filter(&mut self.scores, keep);
        filter(&mut self.labels, keep);
        filter(&mut self.rboxes, keep);
        filter(&mut self.masks, keep);
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        self.boxes.truncate(n);
        self.scores.truncate(n);
        self.labels.truncate(n);
        self.rboxes.truncate(n);
        self.masks.truncate(n);
    }

    /// The rows at `indices`, in that order (empty columns stay empty).
    pub fn select(&self, indices: &[usize]) -> Instances {
        fn pick<T: Clone>(v: &[T], indices: &[usize]) -> Vec<T> {
            if v.is_empty() { Vec::new() } else { indices.iter().map(|&i| v[i].clone()).collect() }
        }
        Instances {
            boxes: pick(&self.boxes, indices),
            scores: pick(&self.scores, indices),
            labels: pick(&self.labels, indices),
            rboxes: pick(&self.rboxes, indices),
            masks: pick(&self.masks, indices),
        }
    }
}

impl FromIterator<Detection> for Instances {
    fn from_iter<I: IntoIterator<Item = Detection>>(iter: I) -> Self {
        let mut out = Instances::default();
        for d in iter {
            out.push(d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_select_and_rows_keep_columns_aligned() {
        let mut set: Instances = (0..4)
            .map(|i| Detection { bbox: [i as f32, 0.0, i as f32 + 1.0, 1.0], score: 1.0 - i as f32 / 10.0, label: i })
            .collect();
        set.retain(&[true, false, true, true]);
        assert_eq!(set.labels, vec![0, 2, 3]);
        let picked = set.select(&[2, 0]);
        assert_eq!(picked.get(0), Detection { bbox: [3.0, 0.0, 4.0, 1.0], score: 0.7, label: 3 });
        let gt = Instances::targets(vec![[0.0; 4]], vec![5]);
        assert!(gt.get(0).score.is_nan());
        assert_eq!(gt.select(&[0]).scores.len(), 0);
        // Task columns follow their rows.
        let mut rotated = set.clone();
        rotated.rboxes = (0..3).map(|i| [i as f32, 0.0, 1.0, 1.0, 0.0]).collect();
        rotated.retain(&[false, true, true]);
        assert_eq!(rotated.rboxes.iter().map(|r| r[0]).collect::<Vec<_>>(), vec![1.0, 2.0]);
        assert_eq!(rotated.select(&[1]).rboxes[0][0], 2.0);
        assert!(rotated.masks.is_empty() && rotated.select(&[0]).masks.is_empty());
    }
}
