//! Quadrilaterals: DOTA's `x1 y1 x2 y2 x3 y3 x4 y4` annotations (mmrotate's `QuadriBoxes`).
//!
//! Two conversions matter for agreement with mmrotate:
//! * [`quad_to_rbox`] is `qbox2rbox`, i.e. OpenCV's `cv2.minAreaRect` (4.x semantics: the
//!   angle in `(0°, 90°]`, 90° for axis-aligned boxes) in radians. The convex hull and the
//!   rotating calipers are ported with OpenCV's float precision and tie-breaking, because
//!   which side of a rectangle becomes `w` (and therefore the angle) depends on them.
//! * [`window_iof`] is `img_split.py`'s `bbox_overlaps_iof`: the area of the quad inside a
//!   horizontal window over the quad's area, in f64 (shapely's precision).

use super::rotated::RBox;

/// A quadrilateral `[x1, y1, x2, y2, x3, y3, x4, y4]` in pixels.
pub type Quad = [f32; 8];

/// The four points of a quad.
pub fn points(q: &Quad) -> [[f32; 2]; 4] {
    [[q[0], q[1]], [q[2], q[3]], [q[4], q[5]], [q[6], q[7]]]
}

/// A quad from four corners (e.g. [`super::rotated::corners`]).
pub fn from_points(p: &[[f32; 2]; 4]) -> Quad {
    [p[0][0], p[0][1], p[1][0], p[1][1], p[2][0], p[2][1], p[3][0], p[3][1]]
}

/// OpenCV's `RotatedRect`: centre, size and angle in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinAreaRect {
    pub center: [f32; 2],
    pub size: [f32; 2],
    pub angle_deg: f32,
}

/// mmrotate's `qbox2rbox`: `cv2.minAreaRect` of the four points, the angle converted to
/// radians in f64 (`angle / 180 * pi`) and stored as f32.
pub fn quad_to_rbox(q: &Quad) -> RBox {
    let r = min_area_rect(&points(q));
    let t = (r.angle_deg as f64 / 180.0 * std::f64::consts::PI) as f32;
    [r.center[0], r.center[1], r.size[0], r.size[1], t]
}

/// Whether the quad is a simple polygon of positive area: no two opposite edges cross and
/// the points are not all on one line. Shapely (and so mmrotate's split tool) fails on
/// self-intersecting quads; we reject them with a message instead.
pub fn is_valid(q: &Quad) -> bool {
    let p = points(q).map(|v| [v[0] as f64, v[1] as f64]);
    let cross = |o: [f64; 2], a: [f64; 2], b: [f64; 2]| (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    let crosses = |a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]| {
        let (d1, d2) = (cross(a, b, c), cross(a, b, d));
        let (d3, d4) = (cross(c, d, a), cross(c, d, b));
        d1 * d2 < 0.0 && d3 * d4 < 0.0
    };
    !crosses(p[0], p[1], p[2], p[3]) && !crosses(p[1], p[2], p[3], p[0]) && polygon_area(&p) > 0.0
}

/// The absolute shoelace area of a polygon.
pub fn polygon_area(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    let twice: f64 = (0..n).map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1]).sum();
    twice.abs() / 2.0
}

/// The part of a simple polygon inside the axis-aligned window `[x1, y1, x2, y2]`
/// (Sutherland–Hodgman; exact for any simple polygon against a convex window, up to
/// zero-area slivers that do not change the area).
pub fn clip_to_window(poly: &[[f64; 2]], window: [f64; 4]) -> Vec<[f64; 2]> {
    // Each half-plane: (axis, bound, keep the side where value >= bound when `lower`).
    let planes = [(0, window[0], true), (1, window[1], true), (0, window[2], false), (1, window[3], false)];
    let mut out = poly.to_vec();
    for (axis, bound, lower) in planes {
        if out.is_empty() {
            break;
        }
        let inside = |p: &[f64; 2]| if lower { p[axis] >= bound } else { p[axis] <= bound };
        let input = std::mem::take(&mut out);
        for i in 0..input.len() {
            let (cur, prev) = (input[i], input[(i + input.len() - 1) % input.len()]);
            let cut = || {
                let t = (bound - prev[axis]) / (cur[axis] - prev[axis]);
                let mut p = [prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])];
                p[axis] = bound;
                p
            };
            match (inside(&prev), inside(&cur)) {
                (true, true) => out.push(cur),
                (true, false) => out.push(cut()),
                (false, true) => {
                    out.push(cut());
                    out.push(cur);
                }
                (false, false) => {}
            }
        }
    }
    out
}

/// `img_split.py`'s `bbox_overlaps_iof` of one quad and one window: the intersection area
/// (0 when the quad's bounding box does not overlap the window with positive area) over the
/// quad's area rounded to f32 and clamped at 1e-6.
pub fn window_iof(q: &Quad, window: [f64; 4]) -> f64 {
    let p = points(q).map(|v| [v[0] as f64, v[1] as f64]);
    let (xs, ys) = (p.map(|v| v[0]), p.map(|v| v[1]));
    let lo = |v: [f64; 4]| v.into_iter().fold(f64::INFINITY, f64::min);
    let hi = |v: [f64; 4]| v.into_iter().fold(f64::NEG_INFINITY, f64::max);
    let w = (hi(xs).min(window[2]) - lo(xs).max(window[0])).max(0.0);
    let h = (hi(ys).min(window[3]) - lo(ys).max(window[1])).max(0.0);
    let union = (polygon_area(&p) as f32).max(1e-6) as f64;
    if w * h == 0.0 {
        return 0.0;
    }
    polygon_area(&clip_to_window(&p, window)) / union
}

// ---------------------------------------------------------------------------------------
// OpenCV's convexHull (Sklansky) and minAreaRect (rotating calipers), float points.
// ---------------------------------------------------------------------------------------

fn sign(v: f64) -> i32 {
    (v > 0.0) as i32 - (v < 0.0) as i32
}

/// OpenCV's `Sklansky_`: one monotone chain of the sorted points from `start` towards `end`,
/// as indices into `pts`; returns the chain length.
fn sklansky(pts: &[[f32; 2]], start: usize, end: usize, stack: &mut [isize], nsign: i32, sign2: i32) -> usize {
    let incr: isize = if end > start { 1 } else { -1 };
    let (start, end) = (start as isize, end as isize);
    let at = |i: isize| pts[i as usize];
    if start == end || (at(start)[0] == at(end)[0] && at(start)[1] == at(end)[1]) {
        stack[0] = start;
        return 1;
    }
    let (mut pprev, mut pcur, mut pnext) = (start, start + incr, start + 2 * incr);
    stack[0] = pprev;
    stack[1] = pcur;
    stack[2] = pnext;
    let mut size = 3usize;
    let after_end = end + incr;
    while pnext != after_end {
        let cury = at(pcur)[1];
        let nexty = at(pnext)[1];
        let by = nexty - cury;
        if sign(by as f64) != nsign {
            let ax = at(pcur)[0] - at(pprev)[0];
            let bx = at(pnext)[0] - at(pcur)[0];
            let ay = cury - at(pprev)[1];
            let convexity = ay as f64 * bx as f64 - ax as f64 * by as f64;
            if sign(convexity) == sign2 && (ax != 0.0 || ay != 0.0) {
                pprev = pcur;
                pcur = pnext;
                pnext += incr;
                stack[size] = pnext;
                size += 1;
            } else if pprev == start {
                pcur = pnext;
                stack[1] = pcur;
                pnext += incr;
                stack[2] = pnext;
            } else {
                stack[size - 2] = pnext;
                pcur = pprev;
                pprev = stack[size - 4];
                size -= 1;
            }
        } else {
            pnext += incr;
            stack[size - 1] = pnext;
        }
    }
    size - 1
}

/// OpenCV's `convexHull(points, clockwise, returnPoints=true)` for float points, with its
/// output order (which vertex comes first matters to the calipers' tie-breaking).
pub fn convex_hull(input: &[[f32; 2]], clockwise: bool) -> Vec<[f32; 2]> {
    let total = input.len();
    if total == 0 {
        return Vec::new();
    }
    // Sorted by (x, y); `order[k]` is the input index of the k-th point.
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by(|&a, &b| {
        let (p, q) = (input[a], input[b]);
        p[0].partial_cmp(&q[0])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(p[1].partial_cmp(&q[1]).unwrap_or(std::cmp::Ordering::Equal))
    });
    let pts: Vec<[f32; 2]> = order.iter().map(|&i| input[i]).collect();
    let (mut miny, mut maxy) = (0, 0);
    for i in 1..total {
        let y = pts[i][1];
        if pts[miny][1] > y {
            miny = i;
        }
        if pts[maxy][1] < y {
            maxy = i;
        }
    }
    let mut hull: Vec<usize> = Vec::new();
    if pts[0] == pts[total - 1] {
        hull.push(order[0]);
    } else {
        let mut stack = vec![0isize; total + 2];
        let mut stack2 = vec![0isize; total + 2];
        // Upper half.
        let tl = sklansky(&pts, 0, maxy, &mut stack, -1, 1);
        let tr = sklansky(&pts, total - 1, maxy, &mut stack2, -1, -1);
        let (mut a, mut an, mut b, mut bn) = (&stack, tl, &stack2, tr);
        if !clockwise {
            std::mem::swap(&mut a, &mut b);
            std::mem::swap(&mut an, &mut bn);
        }
        for &i in &a[..an.saturating_sub(1)] {
            hull.push(order[i as usize]);
        }
        for k in (1..bn).rev() {
            hull.push(order[b[k] as usize]);
        }
        let stop = if bn > 2 {
            Some(b[1])
        } else if an > 2 {
            Some(a[an - 2])
        } else {
            None
        };
        // Lower half.
        let mut stack3 = vec![0isize; total + 2];
        let mut stack4 = vec![0isize; total + 2];
        let mut bl = sklansky(&pts, 0, miny, &mut stack3, 1, -1);
        let mut br = sklansky(&pts, total - 1, miny, &mut stack4, 1, 1);
        let (mut c, mut d) = (&stack3, &stack4);
        if clockwise {
            std::mem::swap(&mut c, &mut d);
            std::mem::swap(&mut bl, &mut br);
        }
        if let Some(stop) = stop {
            let check = if bl > 2 {
                Some(c[1])
            } else if bl + br > 2 {
                Some(d[2 - bl])
            } else {
                None
            };
            if let Some(check) = check
                && (check == stop || pts[check as usize] == pts[stop as usize])
            {
                // All points on one line: the lower chain mirrors the upper one.
                bl = bl.min(2);
                br = br.min(2);
            }
        }
        for &i in &c[..bl.saturating_sub(1)] {
            hull.push(order[i as usize]);
        }
        for k in (1..br).rev() {
            hull.push(order[d[k] as usize]);
        }
        cyclic_shift_to_monotone(&mut hull);
    }
    hull.into_iter().map(|i| input[i]).collect()
}

/// OpenCV's last step: rotate the hull so that its input indices ascend (or descend) when
/// a rotation can make them do so.
fn cyclic_shift_to_monotone(hull: &mut [usize]) {
    let n = hull.len();
    if n < 3 {
        return;
    }
    let (mut min_idx, mut max_idx, mut lt) = (0usize, 0usize, 0usize);
    for i in 1..n {
        let idx = hull[i];
        lt += (hull[i - 1] < idx) as usize;
        if lt > 1 && lt + 2 <= i {
            break;
        }
        if idx < hull[min_idx] {
            min_idx = i;
        }
        if idx > hull[max_idx] {
            max_idx = i;
        }
    }
    let mmdist = min_idx.abs_diff(max_idx);
    if (mmdist == 1 || mmdist == n - 1) && (lt <= 1 || lt + 2 >= n) {
        let ascending = (max_idx + 1) % n == min_idx;
        let i0 = if ascending { min_idx } else { max_idx };
        if i0 > 0 {
            let mut rotated = Vec::with_capacity(n);
            let mut j = i0;
            for i in 0..n {
                let cur = hull[j];
                let next_j = if j + 1 < n { j + 1 } else { 0 };
                rotated.push(cur);
                if i < n - 1 && (ascending != (cur < hull[next_j])) {
                    return;
                }
                j = next_j;
            }
            hull.copy_from_slice(&rotated);
        }
    }
}

/// "Is `v1` to the right of (clockwise from) `v2`": OpenCV's `firstVecIsRight`.
fn first_vec_is_right(v1: [f32; 2], v2: [f32; 2]) -> bool {
    let r = [v1[1], -v1[0]];
    r[0] * v2[0] + r[1] * v2[1] < 0.0
}

/// OpenCV's `rotatingCalipers(CALIPERS_MINAREARECT)` on hull vertices: corner, first side
/// vector, second side vector.
fn rotating_calipers(pts: &[[f32; 2]]) -> [[f32; 2]; 3] {
    let n = pts.len();
    let mut vect = vec![[0f32; 2]; n];
    let mut inv_len = vec![0f32; n];
    let (mut left, mut bottom, mut right, mut top) = (0, 0, 0, 0);
    let mut pt0 = pts[0];
    let (mut left_x, mut right_x, mut top_y, mut bottom_y) = (pt0[0], pt0[0], pt0[1], pt0[1]);
    for i in 0..n {
        if pt0[0] < left_x {
            left_x = pt0[0];
            left = i;
        }
        if pt0[0] > right_x {
            right_x = pt0[0];
            right = i;
        }
        if pt0[1] > top_y {
            top_y = pt0[1];
            top = i;
        }
        if pt0[1] < bottom_y {
            bottom_y = pt0[1];
            bottom = i;
        }
        let pt = pts[if i + 1 < n { i + 1 } else { 0 }];
        let (dx, dy) = (pt[0] as f64 - pt0[0] as f64, pt[1] as f64 - pt0[1] as f64);
        vect[i] = [dx as f32, dy as f32];
        inv_len[i] = (1.0 / (dx * dx + dy * dy).sqrt()) as f32;
        pt0 = pt;
    }
    // OpenCV also derives the hull's orientation here and seeds the caliper base with it,
    // but since 4.5.1 the first rotation overwrites the base before it is read.
    let mut seq = [bottom, right, top, left];
    let mut minarea = f32::MAX;
    let mut best = (0usize, 0f32, 0f32, 0f32, 0f32, 0usize);
    for _ in 0..n {
        // The caliper side making the smallest angle with its edge, by the sign of a cross
        // product of the edges rotated into the first side's frame.
        let rot = [
            vect[seq[0]],
            [vect[seq[1]][1], -vect[seq[1]][0]],
            [-vect[seq[2]][0], -vect[seq[2]][1]],
            [-vect[seq[3]][1], vect[seq[3]][0]],
        ];
        let mut main = 0;
        for i in 1..4 {
            if first_vec_is_right(rot[i], rot[main]) {
                main = i;
            }
        }
        let p = seq[main];
        let (lead_x, lead_y) = (vect[p][0] * inv_len[p], vect[p][1] * inv_len[p]);
        let (base_a, base_b) = match main {
            0 => (lead_x, lead_y),
            1 => (lead_y, -lead_x),
            2 => (-lead_x, -lead_y),
            _ => (-lead_y, lead_x),
        };
        seq[main] = if seq[main] + 1 == n { 0 } else { seq[main] + 1 };

        let (dx, dy) = (pts[seq[1]][0] - pts[seq[3]][0], pts[seq[1]][1] - pts[seq[3]][1]);
        let width = dx * base_a + dy * base_b;
        let (dx, dy) = (pts[seq[2]][0] - pts[seq[0]][0], pts[seq[2]][1] - pts[seq[0]][1]);
        let height = -dx * base_b + dy * base_a;
        let area = width * height;
        if area <= minarea {
            minarea = area;
            best = (seq[3], base_a, width, base_b, height, seq[0]);
        }
    }
    let (li, a1, width, b1, height, bi) = best;
    let (a2, b2) = (-b1, a1);
    let c1 = a1 * pts[li][0] + pts[li][1] * b1;
    let c2 = a2 * pts[bi][0] + pts[bi][1] * b2;
    let idet = 1.0 / (a1 * b2 - a2 * b1);
    let px = (c1 * b2 - c2 * b1) * idet;
    let py = (a1 * c2 - a2 * c1) * idet;
    [[px, py], [a1 * width, b1 * width], [a2 * height, b2 * height]]
}

/// OpenCV's `minAreaRect` of a point set.
pub fn min_area_rect(points: &[[f32; 2]]) -> MinAreaRect {
    // OpenCV 4.x runs the calipers on the counter-clockwise hull (4.5.1 changed this and the
    // caliper choice, which moved the angle range to (0°, 90°]).
    let hull = convex_hull(points, false);
    let mut r = MinAreaRect { center: [0.0; 2], size: [0.0; 2], angle_deg: 0.0 };
    let mut angle = 0f32;
    match hull.len() {
        0 => {}
        1 => r.center = hull[0],
        2 => {
            r.center = [(hull[0][0] + hull[1][0]) * 0.5, (hull[0][1] + hull[1][1]) * 0.5];
            let (dx, dy) = (hull[1][0] as f64 - hull[0][0] as f64, hull[1][1] as f64 - hull[0][1] as f64);
            r.size = [(dx * dx + dy * dy).sqrt() as f32, 0.0];
            angle = dy.atan2(dx) as f32;
        }
        _ => {
            let [o, v1, v2] = rotating_calipers(&hull);
            r.center = [o[0] + (v1[0] + v2[0]) * 0.5, o[1] + (v1[1] + v2[1]) * 0.5];
            let len = |v: [f32; 2]| ((v[0] as f64) * v[0] as f64 + (v[1] as f64) * v[1] as f64).sqrt() as f32;
            r.size = [len(v1), len(v2)];
            angle = (v1[1] as f64).atan2(v1[0] as f64) as f32;
        }
    }
    // `angle * 180` is a float product in OpenCV; only the division by CV_PI is in double.
    r.angle_deg = ((angle * 180.0) as f64 / std::f64::consts::PI) as f32;
    r
}
