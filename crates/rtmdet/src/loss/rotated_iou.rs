//! Differentiable IoU of aligned pairs of rotated boxes and mmrotate's `RotatedIoULoss`
//! (`mode='linear'`), RTMDet-R's box loss (spec §11.3, reference quirk 11).
//!
//! mmcv's `diff_iou_rotated_2d` collects every candidate vertex (contained corners, all 16
//! edge crossings), sorts them by angle in a CUDA-only kernel and takes the shoelace area in
//! absolute coordinates, which costs it a few 1e-6 relative. Here the intersection is the
//! exact polygon: its combinatorial structure (which corner or edge crossing each vertex is,
//! in convex order) is found on the host in `f64` from the detached boxes, by clipping box A
//! with the four half-planes of box B. Those vertices are then rebuilt as burn expressions of
//! the box parameters (corners gathered by index, crossings by the line-intersection
//! formula), so the shoelace area and its gradient are those of the exact area wherever the
//! structure is locally constant, i.e. everywhere except on a null set of kinks.
//!
//! Degenerate configurations are decided on the host, where `f64` makes them unambiguous:
//! no overlap, touching boxes and zero-size boxes give 0 with zero gradient; a point within
//! 1e-9 (relative) of a clipping line counts as inside, so identical boxes and shared edges
//! keep the corners instead of creating crossings of parallel lines; a crossing of two
//! lines less than 1e-6 rad from parallel (whose `f32` position would be noise) becomes a
//! constant vertex at its exact position, which keeps the value exact and the gradient finite.

use burn::tensor::{Int, Tensor, TensorData};

use crate::model::params::to_vec;

/// Below this relative distance a corner counts as lying on a clipping line.
const ON_LINE: f64 = 1e-9;
/// Crossings of lines closer than this to parallel (|sin| of their angle) are held constant.
const PARALLEL: f64 = 1e-6;
/// Corner signs along the box's w- and h-axes, in mmrotate `rbox2qbox` order (edge `k` runs
/// from corner `k` to corner `k + 1`).
const SIGN_W: [f64; 4] = [1.0, 1.0, -1.0, -1.0];
const SIGN_H: [f64; 4] = [1.0, -1.0, -1.0, 1.0];

/// Where a vertex of the intersection polygon comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Source {
    /// Corner `k` of A (`k < 4`) or `k − 4` of B.
    Corner(usize),
    /// Edge `i` of A crossing edge `j` of B.
    Crossing(usize, usize),
    /// A crossing too close to parallel to differentiate in `f32`: its exact position.
    Fixed([f64; 2]),
}

#[derive(Clone, Copy, Debug)]
struct Vertex {
    p: [f64; 2],
    src: Source,
}

/// The intersection polygon of two boxes, in the frame centred on A's centre.
#[derive(Clone, Debug)]
struct Polygon {
    /// In boundary order; consecutive duplicates are allowed (they add no area).
    vertices: Vec<Vertex>,
    /// Signed shoelace area (the orientation of A's corner order).
    signed_area: f64,
}

fn cross(a: [f64; 2], b: [f64; 2]) -> f64 {
    a[0] * b[1] - a[1] * b[0]
}

fn sub(a: [f64; 2], b: [f64; 2]) -> [f64; 2] {
    [a[0] - b[0], a[1] - b[1]]
}

/// Corners of a box centred at `(cx, cy)` with the tensor side's construction.
fn corners(cx: f64, cy: f64, w: f64, h: f64, t: f64) -> [[f64; 2]; 4] {
    let (sin, cos) = t.sin_cos();
    std::array::from_fn(|k| {
        let (a, b) = (SIGN_W[k] * w * 0.5, SIGN_H[k] * h * 0.5);
        [cx + a * cos - b * sin, cy + a * sin + b * cos]
    })
}

/// The intersection polygon of `a` and `b` (both `(cx, cy, w, h, θ)`), or `None` when the
/// boxes do not overlap in a set of positive area.
fn intersection(a: &[f64; 5], b: &[f64; 5]) -> Option<Polygon> {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let scale = a[2].abs().max(a[3].abs()).max(b[2].abs()).max(b[3].abs()) + dx.abs().max(dy.abs());
    if [a[2], a[3], b[2], b[3]].iter().any(|s| s.abs() <= 1e-12 * scale) || !scale.is_finite() {
        return None;
    }
    // Lines 0..4 are A's edges, 4..8 B's: all corners as 0..8.
    let ca = corners(0.0, 0.0, a[2], a[3], a[4]);
    let cb = corners(dx, dy, b[2], b[3], b[4]);
    let all: [[f64; 2]; 8] = std::array::from_fn(|k| if k < 4 { ca[k] } else { cb[k - 4] });
    let edge = |line: usize| {
        let (box0, k) = (line / 4 * 4, line % 4);
        (all[box0 + k], all[box0 + (k + 1) % 4])
    };
    let tol = ON_LINE * scale;

    // Sutherland–Hodgman: each vertex carries the line its outgoing edge lies on.
    let mut poly: Vec<(Vertex, usize)> = (0..4).map(|k| (Vertex { p: ca[k], src: Source::Corner(k) }, k)).collect();
    for j in 0..4 {
        let line = 4 + j;
        let (q0, q1) = edge(line);
        let dir = sub(q1, q0);
        let len = dir[0].hypot(dir[1]);
        // Signed distance, positive on B's side.
        let orient = cross(dir, sub([dx, dy], q0)).signum();
        let dist = |p: [f64; 2]| orient * cross(dir, sub(p, q0)) / len;
        let mut out = Vec::with_capacity(poly.len() + 1);
        for m in 0..poly.len() {
            let (cur, e) = poly[m];
            let next = poly[(m + 1) % poly.len()].0;
            let (dc, dn) = (dist(cur.p), dist(next.p));
            let (cur_in, next_in) = (dc >= -tol, dn >= -tol);
            let crossing = || {
                let s = dc / (dc - dn);
                let p = [cur.p[0] + s * (next.p[0] - cur.p[0]), cur.p[1] + s * (next.p[1] - cur.p[1])];
                Vertex { p, src: crossing_source(e, j, p, &edge) }
            };
            match (cur_in, next_in) {
                (true, true) => out.push((cur, e)),
                (true, false) => {
                    out.push((cur, e));
                    out.push((crossing(), line));
                }
                (false, true) => out.push((crossing(), e)),
                (false, false) => {}
            }
        }
        poly = out;
        if poly.is_empty() {
            return None;
        }
    }
    let vertices: Vec<Vertex> = poly.into_iter().map(|(v, _)| v).collect();
    let n = vertices.len();
    let signed_area = (0..n).map(|k| cross(vertices[k].p, vertices[(k + 1) % n].p)).sum::<f64>() / 2.0;
    if n < 3 || signed_area.abs() <= 1e-12 * scale * scale {
        return None;
    }
    Some(Polygon { vertices, signed_area })
}

/// What the crossing of polygon edge line `e` with B's edge `j` is, for the tensor side.
fn crossing_source(e: usize, j: usize, p: [f64; 2], edge: &impl Fn(usize) -> ([f64; 2], [f64; 2])) -> Source {
    if e >= 4 {
        // Two of B's edges meet at B's corner; opposite edges are parallel and cannot cross.
        let k = e - 4;
        return if (k + 1) % 4 == j {
            Source::Corner(4 + j)
        } else if (j + 1) % 4 == k {
            Source::Corner(4 + k)
        } else {
            Source::Fixed(p)
        };
    }
    let (a0, a1) = edge(e);
    let (b0, b1) = edge(4 + j);
    let (u, v) = (sub(a1, a0), sub(b1, b0));
    let sin = cross(u, v).abs() / (u[0].hypot(u[1]) * v[0].hypot(v[1]));
    if sin < PARALLEL { Source::Fixed(p) } else { Source::Crossing(e, j) }
}

/// The exact IoU of two rotated boxes `(cx, cy, w, h, θ)` in `f64`, as
/// [`rotated_iou_aligned`] computes it: intersection over `w₁h₁ + w₂h₂ − intersection`, with
/// the signed size products of mmcv's `diff_iou_rotated_2d`; 0 without overlap or when that
/// union is not positive (possible only with exactly one negative size, where mmcv's value is
/// meaningless too).
pub fn rotated_iou_exact(a: &[f64; 5], b: &[f64; 5]) -> f64 {
    match intersection(a, b) {
        Some(poly) => {
            let inter = poly.signed_area.abs();
            let union = a[2] * a[3] + b[2] * b[3] - inter;
            if union > 0.0 { inter / union } else { 0.0 }
        }
        None => 0.0,
    }
}

/// IoU of the aligned pairs `(a[i], b[i])` of `[K, 5]` rotated boxes `(cx, cy, w, h, θ)` → `[K]`,
/// differentiable in both. The value is the exact polygon IoU up to `f32` rounding, and the
/// gradient that of the exact area (see the module notes for degenerate pairs).
pub fn rotated_iou_aligned(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let [k, _] = a.dims();
    let device = a.device();
    if k == 0 {
        return Tensor::zeros([0], &device);
    }
    let (ha, hb) = (to_vec(&a), to_vec(&b));
    let row = |v: &[f32], i: usize| -> [f64; 5] { std::array::from_fn(|c| v[i * 5 + c] as f64) };
    let polys: Vec<Option<Polygon>> = (0..k)
        .map(|i| {
            let (pa, pb) = (row(&ha, i), row(&hb, i));
            intersection(&pa, &pb).filter(|p| pa[2] * pa[3] + pb[2] * pb[3] - p.signed_area.abs() > 0.0)
        })
        .collect();
    let slots = polys.iter().flatten().map(|p| p.vertices.len()).max().unwrap_or(1);

    // Per slot: the edge P0→P1 of A the vertex lies on and B's edge Q0→Q1 it crosses (as
    // corner indices 0..8), whether it is a crossing, and the constant of a fixed vertex.
    let n = k * slots;
    let (mut p0, mut p1, mut q0, mut q1) = (vec![0i64; n], vec![0i64; n], vec![0i64; n], vec![0i64; n]);
    let (mut is_cross, mut is_fixed) = (vec![0f32; n], vec![0f32; n]);
    let (mut fixed_x, mut fixed_y) = (vec![0f32; n], vec![0f32; n]);
    // The shoelace is translation invariant: centring it on the polygon keeps the f32 products
    // at the polygon's size.
    let (mut origin_x, mut origin_y) = (vec![0f32; k], vec![0f32; k]);
    let (mut sign, mut valid) = (vec![0f32; k], vec![0f32; k]);
    for (i, poly) in polys.iter().enumerate() {
        let Some(poly) = poly else { continue };
        let m = poly.vertices.len();
        let (sx, sy) = poly.vertices.iter().fold((0.0, 0.0), |(x, y), v| (x + v.p[0], y + v.p[1]));
        (origin_x[i], origin_y[i]) = ((sx / m as f64) as f32, (sy / m as f64) as f32);
        sign[i] = poly.signed_area.signum() as f32;
        valid[i] = 1.0;
        for s in 0..slots {
            // Padding repeats the last vertex: zero-area shoelace terms.
            let v = poly.vertices[s.min(m - 1)];
            let at = i * slots + s;
            match v.src {
                Source::Corner(c) => (p0[at], p1[at]) = (c as i64, c as i64),
                Source::Crossing(e, j) => {
                    (p0[at], p1[at]) = (e as i64, ((e + 1) % 4) as i64);
                    (q0[at], q1[at]) = ((4 + j) as i64, (4 + (j + 1) % 4) as i64);
                    is_cross[at] = 1.0;
                }
                Source::Fixed(p) => {
                    (fixed_x[at], fixed_y[at]) = (p[0] as f32, p[1] as f32);
                    is_fixed[at] = 1.0;
                }
            }
        }
    }
    let idx = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [k, slots]), &device);
    let slot_f = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [k, slots]), &device);
    let pair_f = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [k]), &device);

    // Corners [K, 8] relative to A's centre: A's four, then B's.
    let col = |t: &Tensor<2>, c: usize| t.clone().narrow(1, c, 1);
    let signs = |s: [f64; 4]| {
        Tensor::<2>::from_data(TensorData::new(s.map(|v| v as f32).to_vec(), [1, 4]), &device).expand([k, 4])
    };
    let (sw, sh) = (signs(SIGN_W), signs(SIGN_H));
    let box_corners = |t: &Tensor<2>| {
        let (cos, sin) = (col(t, 4).cos(), col(t, 4).sin());
        let (hw, hh) = (col(t, 2).mul_scalar(0.5), col(t, 3).mul_scalar(0.5));
        let (ux, uy) = ((cos.clone() * hw.clone()).expand([k, 4]), (sin.clone() * hw).expand([k, 4]));
        let (vx, vy) = ((sin.neg() * hh.clone()).expand([k, 4]), (cos * hh).expand([k, 4]));
        (ux * sw.clone() + vx * sh.clone(), uy * sw.clone() + vy * sh.clone())
    };
    let (ax, ay) = box_corners(&a);
    let (bx, by) = box_corners(&b);
    let (ox, oy) = ((col(&b, 0) - col(&a, 0)).expand([k, 4]), (col(&b, 1) - col(&a, 1)).expand([k, 4]));
    let cx = Tensor::cat(vec![ax, bx + ox], 1);
    let cy = Tensor::cat(vec![ay, by + oy], 1);

    // Vertex = P0 + t·(P1 − P0), t = cross(Q0 − P0, dQ) / cross(dP, dQ) for crossings and 0
    // otherwise (the mask keeps the division finite for non-crossings).
    let gather = |c: &Tensor<2>, i: &Vec<i64>| c.clone().gather(1, idx(i.clone()));
    let (px0, py0, px1, py1) = (gather(&cx, &p0), gather(&cy, &p0), gather(&cx, &p1), gather(&cy, &p1));
    let (qx0, qy0, qx1, qy1) = (gather(&cx, &q0), gather(&cy, &q0), gather(&cx, &q1), gather(&cy, &q1));
    let (dpx, dpy) = (px1 - px0.clone(), py1 - py0.clone());
    let (dqx, dqy) = (qx1 - qx0.clone(), qy1 - qy0.clone());
    let num = (qx0 - px0.clone()) * dqy.clone() - (qy0 - py0.clone()) * dqx.clone();
    let den = dpx.clone() * dqy - dpy.clone() * dqx;
    let m = slot_f(is_cross);
    let t = (num * m.clone()) / (den * m.clone() + m.neg() + 1.0);
    let f = slot_f(is_fixed);
    let keep = f.clone().neg() + 1.0;
    let origin = |o: Vec<f32>| pair_f(o).reshape([k, 1]).expand([k, slots]);
    let vx = (px0 + t.clone() * dpx) * keep.clone() + slot_f(fixed_x) * f.clone() - origin(origin_x);
    let vy = (py0 + t * dpy) * keep + slot_f(fixed_y) * f - origin(origin_y);

    // Shoelace over the closed polygon, oriented by the host's sign.
    let next = |v: &Tensor<2>| Tensor::cat(vec![v.clone().narrow(1, 1, slots - 1), v.clone().narrow(1, 0, 1)], 1);
    let (nx, ny) = (next(&vx), next(&vy));
    let twice = (vx * ny - vy * nx).sum_dim(1).reshape([k]);
    let inter = twice * pair_f(sign).mul_scalar(0.5);
    let area = |t: &Tensor<2>| (col(t, 2) * col(t, 3)).reshape([k]);
    let union = area(&a) + area(&b) - inter.clone();
    // Pairs without overlap divide 0 by 1, so neither value nor gradient can become NaN.
    let valid = pair_f(valid);
    inter / (union * valid.clone() + valid.neg() + 1.0)
}

/// mmrotate `RotatedIoULoss(mode='linear')` per pair, unweighted: `1 − max(IoU, eps)`
/// (RTMDet-R uses eps 1e-6).
pub fn rotated_iou_loss(pred: Tensor<2>, target: Tensor<2>, eps: f32) -> Tensor<1> {
    rotated_iou_aligned(pred, target).clamp_min(eps).neg() + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(a: [f64; 5], b: [f64; 5]) -> Vec<Source> {
        intersection(&a, &b).map(|p| p.vertices.iter().map(|v| v.src).collect()).unwrap_or_default()
    }

    #[test]
    fn polygon_vertices_know_where_they_come_from() {
        // Half-shifted squares: two corners of A, and A's edges cut by B's left edge (B's
        // corners on A's edges are found as crossings, since A is the polygon being clipped).
        let s = sources([0.0, 0.0, 2.0, 2.0, 0.0], [1.0, 0.0, 2.0, 2.0, 0.0]);
        assert_eq!(s.iter().filter(|v| matches!(v, Source::Corner(k) if *k < 4)).count(), 2, "{s:?}");
        assert_eq!(s.iter().filter(|v| matches!(v, Source::Crossing(..))).count(), 2, "{s:?}");
        // B inside A: B's corners, where B's clipping lines meet.
        let mut s = sources([0.0, 0.0, 10.0, 10.0, 0.0], [1.0, 1.0, 2.0, 2.0, 0.5]);
        s.sort_by_key(|v| if let Source::Corner(k) = v { *k } else { 99 });
        assert_eq!(s, (4..8).map(Source::Corner).collect::<Vec<_>>());
        // Octagon: eight crossings.
        let s = sources([0.0, 0.0, 2.0, 2.0, 0.0], [0.0, 0.0, 2.0, 2.0, 0.7]);
        assert_eq!(s.len(), 8);
        assert!(s.iter().all(|v| matches!(v, Source::Crossing(..))), "{s:?}");
        // Identical boxes: A's corners, no crossing of coincident lines.
        let s = sources([3.0, 1.0, 5.0, 2.0, 0.4], [3.0, 1.0, 5.0, 2.0, 0.4]);
        assert_eq!(s, (0..4).map(Source::Corner).collect::<Vec<_>>());
        // Nearly collinear edges: their crossing is held at its exact position.
        let s = sources([0.0, 0.0, 10.0, 4.0, 0.0], [3.0, 4.0, 10.0, 4.0, 5e-7]);
        assert!(s.iter().any(|v| matches!(v, Source::Fixed(p) if (p[0] - 3.0).abs() < 1e-6)), "{s:?}");
        // Apart, touching: nothing.
        assert!(sources([0.0, 0.0, 2.0, 2.0, 0.0], [2.0, 0.0, 2.0, 2.0, 0.0]).is_empty());
        assert!(sources([0.0, 0.0, 2.0, 2.0, 0.0], [9.0, 0.0, 2.0, 2.0, 0.0]).is_empty());
    }
}
