//! Generalised IoU loss `1 − GIoU` between aligned boxes (mmdet `bbox_overlaps(mode='giou',
//! is_aligned=True)`, eps 1e-6), spec §9.2.

use burn::tensor::Tensor;

/// `[N, 4]` xyxy predictions and targets → `[N]` unweighted losses.
pub fn giou_loss(pred: Tensor<2>, target: Tensor<2>, eps: f32) -> Tensor<1> {
    let [n, _] = pred.dims();
    let col = |t: &Tensor<2>, i: usize| t.clone().narrow(1, i, 1).reshape([n]);
    let (px1, py1, px2, py2) = (col(&pred, 0), col(&pred, 1), col(&pred, 2), col(&pred, 3));
    let (tx1, ty1, tx2, ty2) = (col(&target, 0), col(&target, 1), col(&target, 2), col(&target, 3));
    let area_p = (px2.clone() - px1.clone()) * (py2.clone() - py1.clone());
    let area_t = (tx2.clone() - tx1.clone()) * (ty2.clone() - ty1.clone());
    let w = (px2.clone().min_pair(tx2.clone()) - px1.clone().max_pair(tx1.clone())).clamp_min(0.0);
    let h = (py2.clone().min_pair(ty2.clone()) - py1.clone().max_pair(ty1.clone())).clamp_min(0.0);
    let overlap = w * h;
    let union = (area_p + area_t - overlap.clone()).clamp_min(eps);
    let ious = overlap / union.clone();
    let ew = (px2.max_pair(tx2) - px1.min_pair(tx1)).clamp_min(0.0);
    let eh = (py2.max_pair(ty2) - py1.min_pair(ty1)).clamp_min(0.0);
    let enclose = (ew * eh).clamp_min(eps);
    let gious = ious - (enclose.clone() - union) / enclose;
    gious.neg() + 1.0
}
