//! DynamicSoftLabelAssigner (spec §9.1, reference quirk 11): soft centre prior, soft
//! classification cost, log-IoU cost, dynamic k from the top-13 IoUs, conflicts resolved by
//! minimum cost. Computed in float32 on the host, per image, with the same operations as
//! mmdet so that decisions (top-k and argmin) agree exactly.

use crate::structures::boxes::iou_mmdet;

/// Result per prior, in mmdet's `AssignResult` conventions.
#[derive(Clone, Debug, PartialEq)]
pub struct AssignResult {
    /// 0: negative; `j + 1`: assigned to ground truth `j`.
    pub gt_inds: Vec<i64>,
    /// Class of positives, -1 otherwise.
    pub labels: Vec<i64>,
    /// IoU(prediction, assigned gt) of positives; -1e8 for others (0 everywhere when there
    /// is no ground truth or no candidate prior).
    pub max_overlaps: Vec<f32>,
}

impl AssignResult {
    fn empty(n: usize) -> Self {
        AssignResult { gt_inds: vec![0; n], labels: vec![-1; n], max_overlaps: vec![0.0; n] }
    }

    pub fn num_positives(&self) -> usize {
        self.gt_inds.iter().filter(|&&g| g > 0).count()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct DynamicSoftLabelAssigner {
    pub topk: usize,
    pub soft_center_radius: f32,
    pub iou_weight: f32,
}

impl Default for DynamicSoftLabelAssigner {
    fn default() -> Self {
        DynamicSoftLabelAssigner { topk: 13, soft_center_radius: 3.0, iou_weight: 3.0 }
    }
}

const EPS: f32 = 1e-7;
const NEG_INF: f32 = -1e8;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `binary_cross_entropy_with_logits(x, y)` as PyTorch computes it:
/// `(1 - y) * x - log_sigmoid(x)`.
pub fn bce_with_logits(x: f32, y: f32) -> f32 {
    let log_sigmoid = x.min(0.0) - (-x.abs()).exp().ln_1p();
    (1.0 - y) * x - log_sigmoid
}

impl DynamicSoftLabelAssigner {
    /// Assigns `priors` (`(x, y, stride, stride)`) with predicted class `logits`
    /// (`[N * num_classes]`, row-major) and decoded, unclamped `pred_boxes` to the ground
    /// truth (`gt_boxes` xyxy, `gt_labels`).
    pub fn assign(
        &self,
        priors: &[[f32; 4]],
        logits: &[f32],
        pred_boxes: &[[f32; 4]],
        gt_boxes: &[[f32; 4]],
        gt_labels: &[usize],
    ) -> AssignResult {
        let (n, g) = (priors.len(), gt_boxes.len());
        if n == 0 || g == 0 {
            return AssignResult::empty(n);
        }
        let c = logits.len() / n;
        // A prior is a candidate when its point is strictly inside some gt.
        let valid: Vec<usize> = (0..n)
            .filter(|&i| {
                let (px, py) = (priors[i][0], priors[i][1]);
                gt_boxes.iter().any(|b| (px - b[0]).min(py - b[1]).min(b[2] - px).min(b[3] - py) > 0.0)
            })
            .collect();
        if valid.is_empty() {
            return AssignResult::empty(n);
        }
        let v = valid.len();

        // [V][G] IoUs and costs.
        let mut ious = vec![0f32; v * g];
        let mut cost = vec![0f32; v * g];
        for (vi, &i) in valid.iter().enumerate() {
            let prior = &priors[i];
            let x = &logits[i * c..(i + 1) * c];
            let sig: Vec<f32> = x.iter().map(|&l| sigmoid(l)).collect();
            for (j, gt) in gt_boxes.iter().enumerate() {
                let iou = iou_mmdet(&pred_boxes[i], gt);
                ious[vi * g + j] = iou;
                let (cx, cy) = ((gt[0] + gt[2]) / 2.0, (gt[1] + gt[3]) / 2.0);
                let (dx, dy) = (prior[0] - cx, prior[1] - cy);
                let distance = (dx * dx + dy * dy).sqrt() / prior[2];
                let center = 10f32.powf(distance - self.soft_center_radius);
                let iou_cost = -(iou + EPS).ln() * self.iou_weight;
                let mut cls_cost = 0f32;
                for k in 0..c {
                    let y = if k == gt_labels[j] { iou } else { 0.0 };
                    let s = y - sig[k];
                    cls_cost += bce_with_logits(x[k], y) * (s.abs() * s.abs());
                }
                cost[vi * g + j] = cls_cost + iou_cost + center;
            }
        }

        // Dynamic k per gt from the sum of its top-k IoUs.
        let topk = self.topk.min(v);
        let mut matched_gt: Vec<Option<usize>> = vec![None; v];
        let mut matches: Vec<Vec<usize>> = vec![Vec::new(); v];
        for j in 0..g {
            let mut col: Vec<f32> = (0..v).map(|vi| ious[vi * g + j]).collect();
            col.sort_by(|a, b| b.total_cmp(a));
            let k = (col[..topk].iter().sum::<f32>() as i64).max(1) as usize;
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| cost[a * g + j].total_cmp(&cost[b * g + j]));
            for &vi in order.iter().take(k) {
                matches[vi].push(j);
            }
        }
        // A prior chosen by several gts keeps the one of minimal cost over all gts.
        for (vi, m) in matches.iter().enumerate() {
            matched_gt[vi] = match m.len() {
                0 => None,
                1 => Some(m[0]),
                _ => (0..g).min_by(|&a, &b| cost[vi * g + a].total_cmp(&cost[vi * g + b])),
            };
        }

        let mut out = AssignResult { gt_inds: vec![0; n], labels: vec![-1; n], max_overlaps: vec![NEG_INF; n] };
        for (vi, &i) in valid.iter().enumerate() {
            if let Some(j) = matched_gt[vi] {
                out.gt_inds[i] = j as i64 + 1;
                out.labels[i] = gt_labels[j] as i64;
                out.max_overlaps[i] = ious[vi * g + j];
            }
        }
        out
    }
}
