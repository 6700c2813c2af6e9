//! Axis-aligned boxes `[x1, y1, x2, y2]` (pixels, no +1 convention) and the overlap family
//! every stage uses: NMS (mmcv), the assigner (mmdet `BboxOverlaps2D`), COCO evaluation
//! (pycocotools `bbIou`) and the confusion matrix.
//!
//! All of them compute, in this order and precision, `w = min(x2) − max(x1)`, `h` likewise,
//! `inter = max(w, 0)·max(h, 0)`, `union = area_a + area_b − inter` (IoF: `area_a`), and
//! `inter / max(union, eps)`; a pair without intersection has overlap 0. They differ only in
//! the float type, the `eps` clamp and where the areas come from, which are parameters here,
//! so one function serves all and each caller stays bit-exact with its original. [`giou`] is
//! the differentiable loss's definition on plain numbers; rotated boxes have their own
//! geometry in [`super::rotated`] with the same [`OverlapMode`].

use num_traits::Float;

/// `[x1, y1, x2, y2]` in pixels.
pub type Bbox = [f32; 4];

/// What the intersection is divided by (for axis-aligned and rotated boxes alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlapMode {
    /// Intersection over union.
    Iou,
    /// Intersection over the first box's area (pycocotools' crowd matching, mmdet `iof`).
    Iof,
}

/// `(x2 − x1)·(y2 − y1)`.
#[inline(always)]
pub fn area<T: Float>(b: &[T; 4]) -> T {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// `(intersection, union)` of `a` and `b` whose areas are given, the union clamped below by
/// `eps` when given.
#[inline(always)]
fn intersection_union<T: Float>(a: &[T; 4], b: &[T; 4], area_a: T, area_b: T, eps: Option<T>) -> (T, T) {
    let zero = T::zero();
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(zero);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(zero);
    let inter = w * h;
    let union = area_a + area_b - inter;
    (inter, eps.map_or(union, |e| union.max(e)))
}

/// The overlap of `a` and `b` whose areas are given (pycocotools multiplies `w·h` of its
/// `xywh` boxes, which is not always the product of the `xyxy` differences). `eps` clamps
/// the denominator from below (mmdet: 1e-6; mmcv NMS and pycocotools: none).
#[inline(always)]
pub fn overlap_with_areas<T: Float>(
    a: &[T; 4],
    b: &[T; 4],
    area_a: T,
    area_b: T,
    mode: OverlapMode,
    eps: Option<T>,
) -> T {
    let (inter, union) = intersection_union(a, b, area_a, area_b, eps);
    if inter <= T::zero() {
        return T::zero();
    }
    match mode {
        OverlapMode::Iou => inter / union,
        OverlapMode::Iof => inter / eps.map_or(area_a, |e| area_a.max(e)),
    }
}

/// Generalised IoU, `IoU − (enclosing area − union) / enclosing area`, with union and
/// enclosing area clamped below by `eps` (mmdet `bbox_overlaps(mode='giou')`).
pub fn giou<T: Float>(a: &[T; 4], b: &[T; 4], eps: T) -> T {
    let zero = T::zero();
    let (inter, union) = intersection_union(a, b, area(a), area(b), Some(eps));
    let ew = (a[2].max(b[2]) - a[0].min(b[0])).max(zero);
    let eh = (a[3].max(b[3]) - a[1].min(b[1])).max(zero);
    let enclose = (ew * eh).max(eps);
    inter / union - (enclose - union) / enclose
}

/// The overlap of two boxes.
#[inline(always)]
pub fn overlap<T: Float>(a: &[T; 4], b: &[T; 4], mode: OverlapMode, eps: Option<T>) -> T {
    overlap_with_areas(a, b, area(a), area(b), mode, eps)
}

/// Pairwise overlaps, row-major `[a.len(), b.len()]`.
pub fn overlaps<T: Float>(a: &[[T; 4]], b: &[[T; 4]], mode: OverlapMode, eps: Option<T>) -> Vec<T> {
    a.iter().flat_map(|x| b.iter().map(move |y| overlap(x, y, mode, eps))).collect()
}

/// Overlaps of aligned pairs `(a[i], b[i])`.
pub fn overlaps_aligned<T: Float>(a: &[[T; 4]], b: &[[T; 4]], mode: OverlapMode, eps: Option<T>) -> Vec<T> {
    a.iter().zip(b).map(|(x, y)| overlap(x, y, mode, eps)).collect()
}

/// pycocotools' `bbIou` of a detection and a ground truth given as `[x, y, w, h]`: a crowd
/// ground truth is matched by intersection over the detection's area; areas are `w·h` as
/// pycocotools multiplies them.
pub fn coco_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let mode = if crowd { OverlapMode::Iof } else { OverlapMode::Iou };
    overlap_with_areas(&xywh_to_xyxy(d), &xywh_to_xyxy(g), d[2] * d[3], g[2] * g[3], mode, None)
}

/// mmdet's `BboxOverlaps2D` IoU (union clamped at 1e-6), float32: the assigner's.
#[inline]
pub fn iou_mmdet(a: &Bbox, b: &Bbox) -> f32 {
    overlap(a, b, OverlapMode::Iou, Some(1e-6))
}

/// `[x, y, w, h]` → `[x1, y1, x2, y2]`.
pub fn xywh_to_xyxy<T: Float>(b: &[T; 4]) -> [T; 4] {
    [b[0], b[1], b[0] + b[2], b[1] + b[3]]
}

/// `[x1, y1, x2, y2]` → `[x, y, w, h]`.
pub fn xyxy_to_xywh<T: Float>(b: &[T; 4]) -> [T; 4] {
    [b[0], b[1], b[2] - b[0], b[3] - b[1]]
}

/// Width and height both strictly positive.
pub fn is_non_empty<T: Float>(b: &[T; 4]) -> bool {
    b[2] - b[0] > T::zero() && b[3] - b[1] > T::zero()
}

/// Scales x by `sx` and y by `sy` (rescaling to the original image).
pub fn scale<T: Float>(b: &mut [T; 4], sx: T, sy: T) {
    b[0] = b[0] * sx;
    b[1] = b[1] * sy;
    b[2] = b[2] * sx;
    b[3] = b[3] * sy;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_iof_giou_of_simple_pairs() {
        let a = [0.0f64, 0.0, 2.0, 2.0];
        let b = [1.0, 0.0, 3.0, 2.0];
        assert_eq!(overlap(&a, &b, OverlapMode::Iou, None), 2.0 / 6.0);
        assert_eq!(overlap(&a, &b, OverlapMode::Iof, None), 0.5);
        // Enclosing 3×2 = 6 = union: GIoU = IoU.
        assert_eq!(giou(&a, &b, 1e-6), 2.0 / 6.0);
        let far = [10.0, 10.0, 11.0, 11.0];
        assert_eq!(overlap(&a, &far, OverlapMode::Iou, None), 0.0);
        // GIoU of disjoint boxes is negative: 0 − (121 − 5) / 121.
        assert!((giou(&a, &far, 1e-6) + 116.0 / 121.0).abs() < 1e-12);
    }

    #[test]
    fn degenerate_boxes_give_zero_not_nan() {
        let p = [1.0f32, 1.0, 1.0, 1.0];
        assert_eq!(overlap(&p, &p, OverlapMode::Iou, None), 0.0);
        assert_eq!(overlap(&p, &p, OverlapMode::Iof, None), 0.0);
        assert_eq!(iou_mmdet(&p, &p), 0.0);
    }

    #[test]
    fn pairwise_layout_is_row_major() {
        let a = [[0.0f32, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]];
        let b = [[0.0f32, 0.0, 1.0, 1.0]];
        assert_eq!(overlaps(&a, &b, OverlapMode::Iou, None), vec![1.0, 0.25]);
        assert_eq!(overlaps_aligned(&a, &a, OverlapMode::Iou, None), vec![1.0, 1.0]);
    }
}
