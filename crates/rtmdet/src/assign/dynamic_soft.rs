//! DynamicSoftLabelAssigner (spec §9.1, reference quirk 11): soft centre prior, soft
//! classification cost, log-IoU cost, dynamic k from the top-13 IoUs, conflicts resolved by
//! minimum cost. Computed in float32 on the host, per image, with the same operations as
//! mmdet so that decisions (top-k and argmin) agree exactly.

use crate::structures::boxes::{Bbox, iou_mmdet};
use crate::structures::rotated::{OverlapMode, RBox, rbbox_overlaps};

/// What the assigner needs of a box type: axis-aligned boxes (RTMDet) and rotated boxes
/// (RTMDet-R) share the whole algorithm and differ only here.
pub trait AssignBox: Copy {
    /// The centre of a ground truth, for the soft centre prior.
    fn centre(&self) -> [f32; 2];
    /// Whether prior point `p` is a candidate for this ground truth.
    fn holds(&self, p: [f32; 2]) -> bool;
    /// The overlap of a prediction (`self`) with a ground truth, as the assigner's overlap
    /// calculator computes it.
    fn iou(&self, gt: &Self) -> f32;
}

impl AssignBox for Bbox {
    fn centre(&self) -> [f32; 2] {
        [(self[0] + self[2]) / 2.0, (self[1] + self[3]) / 2.0]
    }

    /// Strictly inside (mmdet: all four distances > 0).
    fn holds(&self, [px, py]: [f32; 2]) -> bool {
        (px - self[0]).min(py - self[1]).min(self[2] - px).min(self[3] - py) > 0.0
    }

    /// `BboxOverlaps2D` (union clamped at 1e-6).
    fn iou(&self, gt: &Self) -> f32 {
        iou_mmdet(self, gt)
    }
}

impl AssignBox for RBox {
    fn centre(&self) -> [f32; 2] {
        [self[0], self[1]]
    }

    /// mmrotate's `RotatedBoxes.find_inside_points` (eps 0.01): the point, rotated into the
    /// box frame, lies at least 0.01 px inside both half-sizes.
    fn holds(&self, [px, py]: [f32; 2]) -> bool {
        let [cx, cy, w, h, t] = *self;
        let (sin, cos) = t.sin_cos();
        let (ox, oy) = (px - cx, py - cy);
        let (dx, dy) = (cos * ox + sin * oy, -sin * ox + cos * oy);
        // |d| ≤ half − eps is mmrotate's `d ≤ half − eps && d ≥ −half + eps` exactly (negation
        // is exact in floating point).
        dx.abs() <= w / 2.0 - 0.01 && dy.abs() <= h / 2.0 - 0.01
    }

    /// `RBboxOverlaps2D`: sizes clamped to 1e-3, then mmcv's rotated IoU.
    fn iou(&self, gt: &Self) -> f32 {
        rbbox_overlaps(std::slice::from_ref(self), std::slice::from_ref(gt), OverlapMode::Iou, false)[0]
    }
}

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
    /// truth (`gt_boxes`, axis-aligned xyxy or rotated, and `gt_labels`).
    pub fn assign<B: AssignBox>(
        &self,
        priors: &[[f32; 4]],
        logits: &[f32],
        pred_boxes: &[B],
        gt_boxes: &[B],
        gt_labels: &[usize],
    ) -> AssignResult {
        let (n, g) = (priors.len(), gt_boxes.len());
        if n == 0 || g == 0 {
            return AssignResult::empty(n);
        }
        let c = logits.len() / n;
        // A prior is a candidate when its point is inside some gt.
        let valid: Vec<usize> =
            (0..n).filter(|&i| gt_boxes.iter().any(|b| b.holds([priors[i][0], priors[i][1]]))).collect();
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
                let iou = pred_boxes[i].iou(gt);
                ious[vi * g + j] = iou;
                let [cx, cy] = gt.centre();
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
