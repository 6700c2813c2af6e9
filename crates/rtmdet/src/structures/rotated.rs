//! Rotated boxes `(cx, cy, w, h, t)` and the rotated overlap / NMS family of mmcv 2.0.1 (CPU)
//! and mmrotate 1.x, ported for bit-exact agreement.
//!
//! Conventions: pixels and radians, x to the right, y down; a positive `t` rotates the box's
//! w-axis from +x towards +y (clockwise on screen). Nothing here normalises angles or swaps
//! `w`/`h`: the kernel accepts any representation, negative sizes included, and so do we.
//!
//! The overlap is a literal port of mmcv's `box_iou_rotated_utils.hpp` (itself from
//! detectron2), because RTMDet-R's assigner, NMS and mAP all consume the kernel's values and
//! the kernel is *not* an exact polygon IoU (see "Kernel quirks" below). Every operation
//! keeps the C++ precision: `f32` arithmetic, except the centre shift (computed in `f64` and
//! rounded back), the vertex `cos`/`sin` (of the angle widened to `f64`, rounded to `f32`)
//! and the epsilon comparisons (the `f32` value widened to `f64`). No FMA is used, as in the
//! x86-64 build of mmcv. The convex hull sorts with a port of libstdc++'s `std::sort`
//! (introsort + insertion sort), since the kernel's comparator has a 1e-6 tolerance and is
//! not a strict weak order: another sorting algorithm gives other hulls on near-degenerate
//! inputs.
//!
//! # Kernel quirks (reproduced on purpose)
//! * The same box in another representation (w/h swapped and `t + pi/2`, or `t ± pi`) can
//!   get an IoU far below 1, because collinear edges are not recognised as parallel
//!   (reference case `rot_14_iou_quirk_coincident`).
//! * Absolute epsilons (1e-14 on areas and determinants, 1e-6 in the sort, 1e-8 on squared
//!   distances) make boxes of ~1e-3 px unreliable.
//! * An area `w·h < 1e-14` gives 0, so one negative size gives 0 but two give a positive area.
//! * The IoU is not exactly symmetric in its arguments (last bit).

/// A rotated box `[cx, cy, w, h, t]`: centre and size in pixels, angle in radians.
pub type RBox = [f32; 5];

/// IoU or IoF, the same choice as for axis-aligned boxes.
pub use super::boxes::OverlapMode;

/// The four corners in mmrotate `rbox2qbox` order: with `v1 = (w/2 cos t, w/2 sin t)` and
/// `v2 = (-h/2 sin t, h/2 cos t)`, `[c+v1+v2, c+v1-v2, c-v1-v2, c-v1+v2]`.
///
/// This is the geometric helper (visualisation, DOTA quads); the IoU kernel computes its own
/// corners with its own rounding, see [`rotated_overlap`].
pub fn corners(b: &RBox) -> [[f32; 2]; 4] {
    let [cx, cy, w, h, t] = *b;
    let (sin, cos) = (t as f64).sin_cos();
    let (cos, sin) = (cos as f32, sin as f32);
    let v1 = [w / 2.0 * cos, w / 2.0 * sin];
    let v2 = [-h / 2.0 * sin, h / 2.0 * cos];
    [
        [cx + v1[0] + v2[0], cy + v1[1] + v2[1]],
        [cx + v1[0] - v2[0], cy + v1[1] - v2[1]],
        [cx - v1[0] - v2[0], cy - v1[1] - v2[1]],
        [cx - v1[0] + v2[0], cy - v1[1] + v2[1]],
    ]
}

/// The smallest axis-aligned box `[x1, y1, x2, y2]` holding the rotated box's corners.
pub fn enclosing_box(b: &RBox) -> [f32; 4] {
    let c = corners(b);
    let (xs, ys) = (c.map(|p| p[0]), c.map(|p| p[1]));
    let min = |v: [f32; 4]| v.into_iter().fold(f32::INFINITY, f32::min);
    let max = |v: [f32; 4]| v.into_iter().fold(f32::NEG_INFINITY, f32::max);
    [min(xs), min(ys), max(xs), max(ys)]
}

/// mmrotate's `RotatedBoxes.rescale_((sx, sy))`: the centre scales per axis, `w` and `h` by
/// the length of the scaled axis vectors, and the angle becomes that of the scaled w-axis
/// (not re-normalised). Even at scale 1 this moves `w`, `h` and `t` by an ulp or so, which
/// the training pipeline's Resize does to every ground-truth box.
pub fn rescale(r: &RBox, sx: f32, sy: f32) -> RBox {
    let [cx, cy, w, h, t] = *r;
    let (sin, cos) = t.sin_cos();
    let sq = |v: f32| v * v;
    [
        cx * sx,
        cy * sy,
        w * (sq(sx * cos) + sq(sy * sin)).sqrt(),
        h * (sq(sx * sin) + sq(sy * cos)).sqrt(),
        (sx * sin).atan2(sy * cos),
    ]
}

/// mmcv's `clockwise=False`: the same box with the angle's sign flipped (the only column
/// `box_iou_rotated` / `nms_rotated` change for counter-clockwise angles).
pub fn clockwise_flip(b: &RBox) -> RBox {
    [b[0], b[1], b[2], b[3], -b[4]]
}

// ---------------------------------------------------------------------------------------
// The kernel: 2-D points and vectors in f32, as `Point<float>` in the C++ header.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Pt {
    x: f32,
    y: f32,
}

impl Pt {
    fn new(x: f32, y: f32) -> Self {
        Pt { x, y }
    }
    fn sub(self, o: Pt) -> Pt {
        Pt::new(self.x - o.x, self.y - o.y)
    }
    fn add(self, o: Pt) -> Pt {
        Pt::new(self.x + o.x, self.y + o.y)
    }
    fn scale(self, k: f32) -> Pt {
        Pt::new(self.x * k, self.y * k)
    }
}

fn dot(a: Pt, b: Pt) -> f32 {
    a.x * b.x + a.y * b.y
}

fn cross(a: Pt, b: Pt) -> f32 {
    a.x * b.y - b.x * a.y
}

/// Up to 4×4 edge crossings + 4 + 4 contained corners.
const MAX_PTS: usize = 24;

/// Kernel corners, starting at `c - v1 + v2` and going `c - v1 - v2`, `c + v1 - v2`,
/// `c + v1 + v2` (the order matters for the inside test, which uses edges 0 and 3).
/// `cos`/`sin` are taken in f64 of the f32 angle, rounded to f32, then halved.
fn kernel_vertices(cx: f32, cy: f32, w: f32, h: f32, a: f32) -> [Pt; 4] {
    let theta = a as f64;
    let cos2 = theta.cos() as f32 * 0.5;
    let sin2 = theta.sin() as f32 * 0.5;
    let p0 = Pt::new(cx - sin2 * h - cos2 * w, cy + cos2 * h - sin2 * w);
    let p1 = Pt::new(cx + sin2 * h - cos2 * w, cy - cos2 * h - sin2 * w);
    let p2 = Pt::new(2.0 * cx - p0.x, 2.0 * cy - p0.y);
    let p3 = Pt::new(2.0 * cx - p1.x, 2.0 * cy - p1.y);
    [p0, p1, p2, p3]
}

/// Pushes the corners of `inner` that lie inside (inclusively) the rectangle `outer`, by
/// projecting on `outer`'s edges 0 (AB) and 3 (DA).
fn push_inside_corners(inner: &[Pt; 4], outer: &[Pt; 4], out: &mut [Pt; MAX_PTS], n: &mut usize) {
    let ab = outer[1].sub(outer[0]);
    let da = outer[0].sub(outer[3]);
    let ab_ab = dot(ab, ab);
    let ad_ad = dot(da, da);
    for &p in inner {
        let ap = p.sub(outer[0]);
        let ap_ab = dot(ap, ab);
        let ap_ad = -dot(ap, da);
        if ap_ab >= 0.0 && ap_ad >= 0.0 && ap_ab <= ab_ab && ap_ad <= ad_ad && *n < MAX_PTS {
            out[*n] = p;
            *n += 1;
        }
    }
}

/// All edge/edge crossings (parallel when `|det| <= 1e-14`, parameters inclusive in [0, 1]),
/// then the corners of each box inside the other. Duplicates are kept, as in the kernel.
fn intersection_points(p1: &[Pt; 4], p2: &[Pt; 4], out: &mut [Pt; MAX_PTS]) -> usize {
    let edge = |p: &[Pt; 4], i: usize| p[(i + 1) % 4].sub(p[i]);
    let mut n = 0;
    for i in 0..4 {
        let v1 = edge(p1, i);
        for j in 0..4 {
            let v2 = edge(p2, j);
            let det = cross(v2, v1);
            if (det.abs() as f64) <= 1e-14 {
                continue;
            }
            let v12 = p2[j].sub(p1[i]);
            let t1 = cross(v2, v12) / det;
            let t2 = cross(v1, v12) / det;
            if (0.0..=1.0).contains(&t1) && (0.0..=1.0).contains(&t2) && n < MAX_PTS {
                out[n] = p1[i].add(v1.scale(t1));
                n += 1;
            }
        }
    }
    push_inside_corners(p1, p2, out, &mut n);
    push_inside_corners(p2, p1, out, &mut n);
    n
}

/// The kernel's angular order around the start point (at the origin): counter-clockwise
/// first (`cross > 0`), and by squared distance when `|cross| < 1e-6`. Not a strict weak
/// order, hence the faithful `std::sort` port below.
fn hull_less(a: &Pt, b: &Pt) -> bool {
    let c = cross(*a, *b);
    if (c.abs() as f64) < 1e-6 { dot(*a, *a) < dot(*b, *b) } else { c > 0.0 }
}

/// Convex hull by Graham scan, translated so that the lowest (then leftmost) point is the
/// origin (`shift_to_zero = true` in the kernel). Returns the number of hull points in `q`.
fn convex_hull_graham(p: &[Pt; MAX_PTS], n: usize, q: &mut [Pt; MAX_PTS]) -> usize {
    let mut t = 0;
    for i in 1..n {
        if p[i].y < p[t].y || (p[i].y == p[t].y && p[i].x < p[t].x) {
            t = i;
        }
    }
    let start = p[t];
    for i in 0..n {
        q[i] = p[i].sub(start);
    }
    q.swap(0, t);
    // q[0] is exactly (0, 0): `hull_less(x, q[0])` is always false, which is what stops the
    // unguarded insertions of std::sort in the C++ kernel (and our guards below mimic it).
    libstdcxx_sort(&mut q[1..n], hull_less);

    let dist = |p: Pt| dot(p, p);
    // The first point after the start that is not (almost) the start itself.
    let Some(k) = (1..n).find(|&k| dist(q[k]) as f64 > 1e-8) else {
        q[0] = p[t];
        return 1;
    };
    q[1] = q[k];
    let mut m = 2;
    for i in (k + 1)..n {
        while m > 1 && cross(q[i].sub(q[m - 2]), q[m - 1].sub(q[m - 2])) >= 0.0 {
            m -= 1;
        }
        q[m] = q[i];
        m += 1;
    }
    m
}

/// Fan-triangulated area of a convex polygon; the halving is done in f64 as in the kernel.
fn polygon_area(q: &[Pt; MAX_PTS], m: usize) -> f32 {
    if m <= 2 {
        return 0.0;
    }
    let mut area = 0.0f32;
    for i in 1..m - 1 {
        area += cross(q[i].sub(q[0]), q[i + 1].sub(q[0])).abs();
    }
    (area as f64 / 2.0) as f32
}

/// Intersection area of two (centre-shifted) kernel boxes.
fn intersection_area(b1: &RBox, b2: &RBox) -> f32 {
    let p1 = kernel_vertices(b1[0], b1[1], b1[2], b1[3], b1[4]);
    let p2 = kernel_vertices(b2[0], b2[1], b2[2], b2[3], b2[4]);
    let mut pts = [Pt::default(); MAX_PTS];
    let n = intersection_points(&p1, &p2, &mut pts);
    if n <= 2 {
        return 0.0;
    }
    let mut hull = [Pt::default(); MAX_PTS];
    let m = convex_hull_graham(&pts, n, &mut hull);
    polygon_area(&hull, m)
}

/// Overlap of two rotated boxes, bit-exact with mmcv 2.0.1's CPU `box_iou_rotated`
/// (`single_box_iou_rotated<float>`, clockwise angles). `Iou`: `inter / (area1 + area2 -
/// inter)`, `Iof`: `inter / area1`; 0 when either `w·h < 1e-14`.
pub fn rotated_overlap(a: &RBox, b: &RBox, mode: OverlapMode) -> f32 {
    // Shift both centres by their midpoint (in f64, rounded back) for precision.
    let shift_x = (a[0] + b[0]) as f64 / 2.0;
    let shift_y = (a[1] + b[1]) as f64 / 2.0;
    let b1: RBox = [(a[0] as f64 - shift_x) as f32, (a[1] as f64 - shift_y) as f32, a[2], a[3], a[4]];
    let b2: RBox = [(b[0] as f64 - shift_x) as f32, (b[1] as f64 - shift_y) as f32, b[2], b[3], b[4]];
    let area1 = b1[2] * b1[3];
    let area2 = b2[2] * b2[3];
    if (area1 as f64) < 1e-14 || (area2 as f64) < 1e-14 {
        return 0.0;
    }
    let inter = intersection_area(&b1, &b2);
    let base = match mode {
        OverlapMode::Iou => area1 + area2 - inter,
        OverlapMode::Iof => area1,
    };
    inter / base
}

/// Pairwise overlaps, row-major `[a.len() x b.len()]` (`box_iou_rotated(a, b)`).
pub fn rotated_overlaps(a: &[RBox], b: &[RBox], mode: OverlapMode) -> Vec<f32> {
    a.iter().flat_map(|x| b.iter().map(move |y| rotated_overlap(x, y, mode))).collect()
}

/// Overlaps of the pairs `(a[i], b[i])` (`aligned=True`); the shorter length wins (mmcv
/// asserts equal lengths).
pub fn rotated_overlaps_aligned(a: &[RBox], b: &[RBox], mode: OverlapMode) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| rotated_overlap(x, y, mode)).collect()
}

/// mmrotate 1.0.0rc1's clamps before the kernel (as f32, in place on a copy): `w, h >= 1e-3`
/// and `cx, cy` into `[-1e7, 1e7]`. NaN stays NaN, like `torch.clamp_`.
fn clamp_for_rbbox_overlaps(b: &RBox) -> RBox {
    let at_least = |v: f32, lo: f32| if v < lo { lo } else { v };
    let within = |v: f32| v.clamp(-1e7, 1e7); // NaN stays NaN
    [within(b[0]), within(b[1]), at_least(b[2], 1e-3), at_least(b[3], 1e-3), b[4]]
}

/// mmrotate 1.0.0rc1 `rbbox_overlaps`, used by `RBboxOverlaps2D` (the assigner; the mAP
/// evaluation calls the plain kernel instead): clamps `w`, `h` to at least 1e-3 and the centre to
/// ±1e7, then [`rotated_overlaps`] (or the aligned variant). Row-major
/// `[a.len() x b.len()]`, or `[n]` when `aligned`. The size clamp keeps thin boxes from being
/// zeroed by the kernel's area epsilon, at the price of IoUs slightly above 1 for very thin
/// ones (1.00007 observed); the centre clamp keeps the kernel's f32 arithmetic finite.
pub fn rbbox_overlaps(a: &[RBox], b: &[RBox], mode: OverlapMode, aligned: bool) -> Vec<f32> {
    let a: Vec<RBox> = a.iter().map(clamp_for_rbbox_overlaps).collect();
    let b: Vec<RBox> = b.iter().map(clamp_for_rbbox_overlaps).collect();
    if aligned { rotated_overlaps_aligned(&a, &b, mode) } else { rotated_overlaps(&a, &b, mode) }
}

// ---------------------------------------------------------------------------------------
// NMS
// ---------------------------------------------------------------------------------------

/// Indices sorted by descending score, ties in index order (stable). torch's CPU sort is not
/// stable, so for exact score ties mmcv may order differently (reference README, quirk 9);
/// the reference runs' ties happen to agree with the stable order. NaN scores come first, as
/// torch sorts NaN above every number.
fn order_by_score_desc(scores: &[f32]) -> Vec<usize> {
    use std::cmp::Ordering;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| {
        let (a, b) = (scores[i], scores[j]);
        match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        }
    });
    order
}

/// Greedy rotated NMS with mmcv 2.0.1 CPU semantics (`nms_rotated_cpu_kernel`):
/// boxes in descending score order; a kept box suppresses every later box whose kernel IoU
/// (kept box first) is `>= iou_thr`. Note `>=`, unlike mmcv's horizontal NMS (`>`).
/// Returns kept indices into `boxes`, in descending score order. The CPU kernel ignores
/// `labels`, so there is no labelled variant: use [`batched_nms_rotated`] for class-aware
/// NMS. Lengths: `scores.len()` is used; extra boxes are ignored, missing ones give `[]`.
pub fn nms_rotated(boxes: &[RBox], scores: &[f32], iou_thr: f32) -> Vec<usize> {
    if boxes.len() < scores.len() {
        return Vec::new();
    }
    let order = order_by_score_desc(scores);
    let mut suppressed = vec![false; scores.len()];
    let mut keep = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[pos + 1..] {
            if !suppressed[j] && rotated_overlap(&boxes[i], &boxes[j], OverlapMode::Iou) >= iou_thr {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// mmcv `batched_nms` switches to one NMS per class from this many boxes on.
pub const BATCHED_NMS_SPLIT_THR: usize = 10_000;

/// The class offsets mmcv's `batched_nms` adds to rotated boxes (centre only), in f32:
/// `max_coordinate = max(cx, cy over all boxes) + max(w, h over all boxes)` and
/// `offset[i] = label[i] * (max_coordinate + 1)`. Returns `(max_coordinate, offsets)`;
/// `max_coordinate` is `-inf` for no boxes.
pub fn batched_nms_offsets(boxes: &[RBox], labels: &[usize]) -> (f32, Vec<f32>) {
    // torch's max() propagates NaN; `f32::max` would drop it, so fold by hand.
    let nan_max = |acc: f32, v: f32| if v.is_nan() || v > acc { v } else { acc };
    let max_xy = boxes.iter().flat_map(|b| [b[0], b[1]]).fold(f32::NEG_INFINITY, nan_max);
    let max_wh = boxes.iter().flat_map(|b| [b[2], b[3]]).fold(f32::NEG_INFINITY, nan_max);
    let max_coordinate = max_xy + max_wh;
    let step = max_coordinate + 1.0;
    let offsets = labels.iter().map(|&l| l as f32 * step).collect();
    (max_coordinate, offsets)
}

/// Class-aware rotated NMS as mmcv 2.0.1 `batched_nms(boxes, scores, labels,
/// dict(type='nms_rotated', iou_threshold=iou_thr))`: boxes are moved apart per class by
/// [`batched_nms_offsets`] (centre only), then [`nms_rotated`] runs on the moved boxes, whose
/// IoUs may differ from the unmoved ones in the last bits (that is mmcv's behaviour). With
/// [`BATCHED_NMS_SPLIT_THR`] boxes or more, mmcv instead runs NMS per class (still on the
/// moved boxes) and merges the kept ones by descending score. Returns kept indices into
/// `boxes`, by descending score. Mismatched lengths give `[]`.
pub fn batched_nms_rotated(boxes: &[RBox], scores: &[f32], labels: &[usize], iou_thr: f32) -> Vec<usize> {
    if boxes.len() != scores.len() || boxes.len() != labels.len() {
        return Vec::new();
    }
    let (_, offsets) = batched_nms_offsets(boxes, labels);
    let moved: Vec<RBox> = boxes.iter().zip(&offsets).map(|(b, &o)| [b[0] + o, b[1] + o, b[2], b[3], b[4]]).collect();
    if boxes.len() < BATCHED_NMS_SPLIT_THR {
        return nms_rotated(&moved, scores, iou_thr);
    }
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut kept = Vec::new();
    for c in classes {
        let members: Vec<usize> = (0..boxes.len()).filter(|&i| labels[i] == c).collect();
        let sub_boxes: Vec<RBox> = members.iter().map(|&i| moved[i]).collect();
        let sub_scores: Vec<f32> = members.iter().map(|&i| scores[i]).collect();
        kept.extend(nms_rotated(&sub_boxes, &sub_scores, iou_thr).into_iter().map(|k| members[k]));
    }
    // mmcv collects the kept ones in index order (a mask), then sorts by score.
    kept.sort_unstable();
    let kept_scores: Vec<f32> = kept.iter().map(|&i| scores[i]).collect();
    order_by_score_desc(&kept_scores).into_iter().map(|k| kept[k]).collect()
}

// ---------------------------------------------------------------------------------------
// libstdc++ std::sort (GCC >= 4.9): introsort with median-of-three, then insertion sort.
// ---------------------------------------------------------------------------------------

/// `_S_threshold` of libstdc++.
const SORT_THRESHOLD: usize = 16;

/// A port of libstdc++'s `std::sort` control flow, so that a comparator that is not a strict
/// weak order permutes elements exactly like the C++ kernel. Where C++ relies on the
/// comparator to stop an unguarded scan, the scans here are bounded by the slice: below
/// index 0 the kernel would meet the start point (0, 0), which stops every scan anyway.
fn libstdcxx_sort<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], less: F) {
    let n = v.len();
    if n == 0 {
        return;
    }
    let depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
    introsort_loop(v, 0, n, depth, &less);
    final_insertion_sort(v, &less);
}

fn introsort_loop<T: Copy, F: Fn(&T, &T) -> bool>(
    v: &mut [T],
    first: usize,
    mut last: usize,
    mut depth: usize,
    less: &F,
) {
    while last - first > SORT_THRESHOLD {
        if depth == 0 {
            // libstdc++ heap-sorts here; with at most 23 elements each round removes one,
            // so 8 rounds are never needed. The final insertion sort still sorts the range.
            return;
        }
        depth -= 1;
        let cut = partition_pivot(v, first, last, less);
        introsort_loop(v, cut, last, depth, less);
        last = cut;
    }
}

fn move_median_to_first<T: Copy, F: Fn(&T, &T) -> bool>(
    v: &mut [T],
    result: usize,
    a: usize,
    b: usize,
    c: usize,
    less: &F,
) {
    let pick = if less(&v[a], &v[b]) {
        if less(&v[b], &v[c]) {
            b
        } else if less(&v[a], &v[c]) {
            c
        } else {
            a
        }
    } else if less(&v[a], &v[c]) {
        a
    } else if less(&v[b], &v[c]) {
        c
    } else {
        b
    };
    v.swap(result, pick);
}

fn partition_pivot<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], first: usize, last: usize, less: &F) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(v, first, first + 1, mid, last - 1, less);
    unguarded_partition(v, first + 1, last, first, less)
}

fn unguarded_partition<T: Copy, F: Fn(&T, &T) -> bool>(
    v: &mut [T],
    mut lo: usize,
    mut hi: usize,
    pivot: usize,
    less: &F,
) -> usize {
    loop {
        while lo < v.len() && less(&v[lo], &v[pivot]) {
            lo += 1;
        }
        hi -= 1;
        while hi > 0 && less(&v[pivot], &v[hi]) {
            hi -= 1;
        }
        if lo >= hi {
            return lo;
        }
        v.swap(lo, hi);
        lo += 1;
    }
}

fn final_insertion_sort<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], less: &F) {
    let n = v.len();
    if n > SORT_THRESHOLD {
        insertion_sort(&mut v[..SORT_THRESHOLD], less);
        for i in SORT_THRESHOLD..n {
            unguarded_linear_insert(v, i, less);
        }
    } else {
        insertion_sort(v, less);
    }
}

fn insertion_sort<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], less: &F) {
    for i in 1..v.len() {
        if less(&v[i], &v[0]) {
            let val = v[i];
            v.copy_within(0..i, 1);
            v[0] = val;
        } else {
            unguarded_linear_insert(v, i, less);
        }
    }
}

fn unguarded_linear_insert<T: Copy, F: Fn(&T, &T) -> bool>(v: &mut [T], mut i: usize, less: &F) {
    let val = v[i];
    while i > 0 && less(&val, &v[i - 1]) {
        v[i] = v[i - 1];
        i -= 1;
    }
    v[i] = val;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::{FRAC_PI_2, FRAC_PI_4, PI};

    fn iou(a: RBox, b: RBox) -> f32 {
        rotated_overlap(&a, &b, OverlapMode::Iou)
    }

    #[test]
    fn corners_follow_rbox2qbox_order() {
        let c = corners(&[10.0, 20.0, 4.0, 2.0, 0.0]);
        assert_eq!(c, [[12.0, 21.0], [12.0, 19.0], [8.0, 19.0], [8.0, 21.0]]);
        // +90°: the w-axis points down (+y).
        let c = corners(&[0.0, 0.0, 4.0, 2.0, FRAC_PI_2]);
        assert!((c[0][0] - -1.0).abs() < 1e-6 && (c[0][1] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn identical_axis_aligned_boxes_have_iou_one() {
        assert_eq!(iou([5.0, 5.0, 4.0, 2.0, 0.0], [5.0, 5.0, 4.0, 2.0, 0.0]), 1.0);
    }

    #[test]
    fn half_shifted_square() {
        // Overlap 1x2 of two 2x2 squares: 2 / (4 + 4 - 2).
        let v = iou([0.0, 0.0, 2.0, 2.0, 0.0], [1.0, 0.0, 2.0, 2.0, 0.0]);
        assert!((v - 1.0 / 3.0).abs() < 1e-6);
        let f = rotated_overlap(&[0.0, 0.0, 2.0, 2.0, 0.0], &[1.0, 0.0, 2.0, 2.0, 0.0], OverlapMode::Iof);
        assert!((f - 0.5).abs() < 1e-6);
    }

    #[test]
    fn disjoint_and_degenerate_give_zero() {
        assert_eq!(iou([0.0, 0.0, 2.0, 2.0, 0.3], [10.0, 0.0, 2.0, 2.0, 0.0]), 0.0);
        assert_eq!(iou([0.0, 0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 2.0, 2.0, 0.0]), 0.0);
        assert_eq!(iou([0.0, 0.0, -2.0, 2.0, 0.0], [0.0, 0.0, 2.0, 2.0, 0.0]), 0.0);
    }

    #[test]
    fn square_rotated_45_inside_square() {
        // A unit-diagonal diamond: the 2x2 square rotated by 45° vs the same square.
        // Intersection = octagon of area 8(sqrt2 - 1); union = 8 - that.
        let v = iou([0.0, 0.0, 2.0, 2.0, 0.0], [0.0, 0.0, 2.0, 2.0, FRAC_PI_4]);
        let inter = 8.0 * (2f32.sqrt() - 1.0);
        assert!((v - inter / (8.0 - inter)).abs() < 1e-5);
    }

    #[test]
    fn overlaps_are_row_major() {
        let a = [[0.0, 0.0, 2.0, 2.0, 0.0], [50.0, 0.0, 2.0, 2.0, 0.0]];
        let b = [[0.0, 0.0, 2.0, 2.0, 0.0], [1.0, 0.0, 2.0, 2.0, 0.0], [50.0, 0.0, 2.0, 2.0, PI]];
        let m = rotated_overlaps(&a, &b, OverlapMode::Iou);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0], 1.0);
        assert_eq!(m[3], 0.0);
        assert_eq!(rotated_overlaps_aligned(&a, &b, OverlapMode::Iou), vec![m[0], m[4]]);
    }

    #[test]
    fn rbbox_overlaps_clamps_thin_boxes() {
        let a = [[0.0, 0.0, 0.0, 2.0, 0.0]];
        assert_eq!(rotated_overlaps(&a, &a, OverlapMode::Iou)[0], 0.0);
        assert!(rbbox_overlaps(&a, &a, OverlapMode::Iou, false)[0] > 0.9);
        // Centres beyond ±1e7 are clamped: both boxes land on the same spot.
        let far = [[3e7, 0.0, 2.0, 2.0, 0.0]];
        let edge = [[1e7, 0.0, 2.0, 2.0, 0.0]];
        assert_eq!(
            rbbox_overlaps(&far, &edge, OverlapMode::Iou, false),
            rotated_overlaps(&edge, &edge, OverlapMode::Iou)
        );
    }

    #[test]
    fn nms_suppresses_at_equal_iou() {
        // IoU of these two is exactly 1/3.
        let boxes = [[0.0, 0.0, 2.0, 2.0, 0.0], [1.0, 0.0, 2.0, 2.0, 0.0], [9.0, 9.0, 1.0, 1.0, 0.0]];
        let thr = iou(boxes[0], boxes[1]);
        assert_eq!(nms_rotated(&boxes, &[0.5, 0.9, 0.7], thr), vec![1, 2]);
        let above = f32::from_bits(thr.to_bits() + 1);
        assert_eq!(nms_rotated(&boxes, &[0.5, 0.9, 0.7], above), vec![1, 2, 0]);
        assert!(nms_rotated(&[], &[], 0.5).is_empty());
    }

    #[test]
    fn batched_nms_keeps_overlapping_boxes_of_other_classes() {
        let boxes = [[0.0, 0.0, 2.0, 2.0, 0.0], [0.0, 0.0, 2.0, 2.0, 0.0], [0.1, 0.0, 2.0, 2.0, 0.0]];
        let scores = [0.9, 0.8, 0.7];
        assert_eq!(batched_nms_rotated(&boxes, &scores, &[0, 1, 0], 0.5), vec![0, 1]);
        let (maxc, off) = batched_nms_offsets(&boxes, &[0, 1, 0]);
        assert_eq!(maxc, 2.1);
        assert_eq!(off, vec![0.0, 3.1, 0.0]);
    }

    #[test]
    fn sort_port_sorts_a_consistent_order() {
        let mut v: Vec<i32> = (0..23).map(|i| (i * 7919) % 23).collect();
        libstdcxx_sort(&mut v, |a, b| a < b);
        assert_eq!(v, (0..23).collect::<Vec<_>>());
        let mut w = vec![3, 1, 2];
        libstdcxx_sort(&mut w, |a, b| a < b);
        assert_eq!(w, vec![1, 2, 3]);
    }
}
