//! Detection confusion matrix (Ultralytics' definition): detections above a score are
//! matched to ground truth by IoU; unmatched ground truth counts as "background" predicted,
//! unmatched detections as background truth.

use crate::structures::boxes::{OverlapMode, overlap};

/// `[pred][true]`, `(num_classes + 1)²`, background last.
#[derive(Clone, Debug)]
pub struct ConfusionMatrix {
    pub matrix: Vec<Vec<f64>>,
    pub num_classes: usize,
    pub score_thr: f32,
    pub iou_thr: f64,
}

impl ConfusionMatrix {
    pub fn new(num_classes: usize) -> Self {
        ConfusionMatrix {
            matrix: vec![vec![0.0; num_classes + 1]; num_classes + 1],
            num_classes,
            score_thr: 0.25,
            iou_thr: 0.45,
        }
    }

    /// Adds one image: ground truth `(xyxy, label)` and detections `(xyxy, score, label)`.
    pub fn add(&mut self, gts: &[([f64; 4], usize)], dets: &[([f64; 4], f32, usize)]) {
        let bg = self.num_classes;
        let dets: Vec<&([f64; 4], f32, usize)> = dets.iter().filter(|d| d.1 >= self.score_thr).collect();
        // All (gt, det) pairs above the IoU threshold, best first; each side used once.
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (g, gt) in gts.iter().enumerate() {
            for (d, det) in dets.iter().enumerate() {
                let v = overlap(&gt.0, &det.0, OverlapMode::Iou, None);
                if v > self.iou_thr {
                    pairs.push((v, g, d));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut gt_used, mut det_used) = (vec![false; gts.len()], vec![false; dets.len()]);
        for (_, g, d) in pairs {
            if !gt_used[g] && !det_used[d] {
                gt_used[g] = true;
                det_used[d] = true;
                self.matrix[dets[d].2.min(bg)][gts[g].1.min(bg)] += 1.0;
            }
        }
        for (gt, _) in gts.iter().zip(&gt_used).filter(|(_, used)| !**used) {
            self.matrix[bg][gt.1.min(bg)] += 1.0;
        }
        for (det, _) in dets.iter().zip(&det_used).filter(|(_, used)| !**used) {
            self.matrix[det.2.min(bg)][bg] += 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_matches_misses_and_false_alarms() {
        let mut cm = ConfusionMatrix::new(2);
        let gts = [([0.0, 0.0, 10.0, 10.0], 0), ([20.0, 20.0, 30.0, 30.0], 1)];
        let dets =
            [([0.0, 0.0, 10.0, 9.0], 0.9, 1), ([50.0, 50.0, 60.0, 60.0], 0.8, 0), ([0.0, 0.0, 10.0, 10.0], 0.1, 0)];
        cm.add(&gts, &dets);
        assert_eq!(cm.matrix[1][0], 1.0); // class 0 predicted as 1
        assert_eq!(cm.matrix[2][1], 1.0); // class 1 missed
        assert_eq!(cm.matrix[0][2], 1.0); // false alarm of class 0
        assert_eq!(cm.matrix.iter().flatten().sum::<f64>(), 3.0); // the 0.1 detection is below 0.25
    }
}
