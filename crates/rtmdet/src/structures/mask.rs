//! Instance masks and COCO run-length encoding with pycocotools 2.0.x semantics
//! (`common/maskApi.c` + `_mask.pyx` + `COCO.annToRLE`), so that segm mAP can match
//! pycocotools exactly.
//!
//! * [`Bitmap`]: row-major `height x width` bytes, 0 = background, anything else = object.
//! * [`Rle`]: COCO RLE. Runs over the pixels in **column-major** (Fortran) order, starting
//!   with a run of zeros (possibly empty) and alternating: `counts = [bg, fg, bg, fg, ...]`.
//!
//! Every integer algorithm (encode, merge, IoU, bbox, polygon rasterisation, string codec)
//! is a step-by-step port of the C code, including its float64 rounding in `rleFrPoly`, so
//! the results are equal, not just close. Deviations, all on inputs that pycocotools
//! mishandles (crash, undefined behaviour or uninitialised memory), are listed on each
//! function; they return a [`MaskError`] instead.

use std::fmt;

use super::boxes::coco_iou;

/// A binary mask, row-major: pixel `(y, x)` is `data[y * width + x]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width` bytes, 0 or 1 (any non-zero byte counts as 1).
    pub data: Vec<u8>,
}

impl Bitmap {
    /// An all-background mask.
    pub fn zeros(height: usize, width: usize) -> Self {
        Bitmap { height, width, data: vec![0; height * width] }
    }

    /// Whether `(y, x)` is foreground; out-of-range pixels (or a short `data`) are background.
    pub fn get(&self, y: usize, x: usize) -> bool {
        y < self.height && x < self.width && self.data.get(y * self.width + x).is_some_and(|&v| v != 0)
    }
}

/// A COCO run-length encoded mask (column-major runs, first run = background).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rle {
    /// Rows of the mask (pycocotools `size[0]`).
    pub height: usize,
    /// Columns of the mask (pycocotools `size[1]`).
    pub width: usize,
    /// Run lengths over the column-major pixels: background, foreground, background, ...
    pub counts: Vec<u32>,
}

/// Why a mask could not be built or read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaskError {
    /// A compressed RLE string holds a byte outside `'0'..='o'` (48..=111).
    BadChar {
        /// Byte offset in the string.
        pos: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A compressed RLE string ends inside a number (its last byte has the "more" bit).
    Truncated,
    /// The runs do not add up to `height * width`.
    LengthMismatch {
        /// `height * width`.
        expected: u64,
        /// The sum of the runs.
        got: u64,
    },
    /// Masks of different sizes were combined.
    SizeMismatch,
    /// A polygon or box that cannot be rasterised (non-finite or out-of-range coordinate),
    /// or a COCO segmentation list in a form pycocotools rejects.
    BadPolygon(String),
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskError::BadChar { pos, byte } => write!(f, "RLE string: byte {byte} at {pos} is not in '0'..='o'"),
            MaskError::Truncated => write!(f, "RLE string ends inside a number"),
            MaskError::LengthMismatch { expected, got } => {
                write!(f, "RLE runs cover {got} pixels, the mask has {expected}")
            }
            MaskError::SizeMismatch => write!(f, "masks of different sizes"),
            MaskError::BadPolygon(why) => write!(f, "bad polygon: {why}"),
        }
    }
}

impl std::error::Error for MaskError {}

// ---------------------------------------------------------------------------------------
// Bitmap <-> RLE, area, bbox
// ---------------------------------------------------------------------------------------

/// `rleEncode`: runs of the column-major pixel sequence, starting with background.
/// An empty (0-pixel) mask gives `counts = [0]`, as in pycocotools. Unlike the C code,
/// which compares raw bytes (so 1 and 2 would start a new run), any non-zero byte is
/// foreground; for 0/1 data the two agree.
pub fn encode(mask: &Bitmap) -> Rle {
    let (h, w) = (mask.height, mask.width);
    let mut counts = Vec::new();
    let mut prev = false;
    let mut run = 0u32;
    let data = &mask.data;
    for x in 0..w {
        for y in 0..h {
            let v = data.get(y * w + x).is_some_and(|&b| b != 0);
            if v != prev {
                counts.push(run);
                run = 0;
                prev = v;
            }
            run = run.wrapping_add(1);
        }
    }
    counts.push(run);
    Rle { height: h, width: w, counts }
}

/// Run lengths built incrementally over column-major pixels (first run = background, possibly
/// empty; equal neighbours merge, empty stretches vanish).
pub(crate) struct RunBuilder {
    counts: Vec<u32>,
    value: bool,
    run: u32,
}

impl RunBuilder {
    pub(crate) fn new() -> Self {
        RunBuilder { counts: Vec::new(), value: false, run: 0 }
    }

    /// `n` more pixels of `value`.
    pub(crate) fn push(&mut self, value: bool, n: usize) {
        if n == 0 {
            return;
        }
        if value != self.value {
            self.counts.push(self.run);
            (self.value, self.run) = (value, 0);
        }
        self.run += n as u32;
    }

    pub(crate) fn finish(mut self, height: usize, width: usize) -> Rle {
        self.counts.push(self.run);
        Rle { height, width, counts: self.counts }
    }
}

/// `rle` placed with its top-left corner at `(x0, y0)` of a `height`×`width` canvas (a
/// patch's mask moved into its source image); what falls outside the canvas is dropped.
/// Built run by run, never as a canvas-sized bitmap.
pub fn paste(rle: &Rle, (x0, y0): (usize, usize), height: usize, width: usize) -> Result<Rle, MaskError> {
    let patch = decode(rle)?;
    let rows = patch.height.min(height.saturating_sub(y0));
    let mut runs = RunBuilder::new();
    for x in 0..width {
        let Some(px) = x.checked_sub(x0).filter(|&px| px < patch.width) else {
            runs.push(false, height);
            continue;
        };
        runs.push(false, y0.min(height));
        for y in 0..rows {
            runs.push(patch.data[y * patch.width + px] != 0, 1);
        }
        runs.push(false, height - y0.min(height) - rows);
    }
    Ok(runs.finish(height, width))
}

/// One image's instance-id map, row-major: pixel = 1 + the index of the first (best) mask
/// covering it, 0 for background. Masks of another size than `height`×`width` are skipped.
pub fn instance_ids(masks: &[Rle], height: usize, width: usize) -> Vec<u16> {
    let mut ids = vec![0u16; height * width];
    // Worst first, so the best instance keeps the pixels it shares.
    for (i, rle) in masks.iter().enumerate().rev() {
        if (rle.height, rle.width) != (height, width) {
            continue;
        }
        let mut k = 0usize;
        for (r, &run) in rle.counts.iter().enumerate() {
            if r % 2 == 1 {
                for p in k..(k + run as usize).min(height * width) {
                    ids[(p % height) * width + p / height] = (i + 1).min(u16::MAX as usize) as u16;
                }
            }
            k += run as usize;
        }
    }
    ids
}

/// `rleDecode` into a row-major bitmap. Errors when the runs do not cover exactly
/// `height * width` pixels (pycocotools rejects longer runs and leaves memory
/// uninitialised for shorter ones).
pub fn decode(rle: &Rle) -> Result<Bitmap, MaskError> {
    let (h, w) = (rle.height, rle.width);
    let got: u64 = rle.counts.iter().map(|&c| c as u64).sum();
    match (h as u64).checked_mul(w as u64) {
        Some(expected) if expected == got => {}
        expected => return Err(MaskError::LengthMismatch { expected: expected.unwrap_or(u64::MAX), got }),
    }
    let mut out = Bitmap::zeros(h, w);
    let mut pos = 0usize; // column-major index
    for (i, &c) in rle.counts.iter().enumerate() {
        let fg = i % 2 == 1;
        for p in pos..pos + c as usize {
            if fg {
                let (x, y) = (p / h, p % h);
                out.data[y * w + x] = 1;
            }
        }
        pos += c as usize;
    }
    Ok(out)
}

/// `rleArea`: the number of foreground pixels (sum of the odd-indexed runs).
pub fn area(rle: &Rle) -> u64 {
    rle.counts.iter().skip(1).step_by(2).map(|&c| c as u64).sum()
}

/// `rleToBbox` (pycocotools >= 2.0.2 version): `[x, y, w, h]` of the foreground, all zeros
/// for an RLE with fewer than two runs. Ported in `u32` with C's wrap-around, so an RLE whose
/// foreground runs are all empty gives pycocotools' `[w, h, 2^32 + 1 - w, 2^32 + 1 - h]`.
pub fn to_bbox(rle: &Rle) -> [f64; 4] {
    let h = rle.height as u32;
    let w = rle.width as u32;
    let m = rle.counts.len() / 2 * 2;
    if m == 0 || h == 0 {
        return [0.0; 4];
    }
    let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
    let mut cc = 0u32;
    for j in 0..m {
        let start = cc;
        cc = cc.wrapping_add(rle.counts[j]);
        if j % 2 == 0 || rle.counts[j] == 0 {
            continue; // background run, or empty foreground run
        }
        let (y_start, x_start) = (start % h, start / h);
        let last = cc.wrapping_sub(1);
        let (y_end, x_end) = (last % h, last / h);
        xs = xs.min(x_start);
        xe = xe.max(x_end);
        if x_start < x_end {
            // The run wraps over a column boundary: it covers every row.
            ys = 0;
            ye = h - 1;
        } else {
            ys = ys.min(y_start);
            ye = ye.max(y_end);
        }
    }
    [xs as f64, ys as f64, xe.wrapping_sub(xs).wrapping_add(1) as f64, ye.wrapping_sub(ys).wrapping_add(1) as f64]
}

// ---------------------------------------------------------------------------------------
// Merge and IoU
// ---------------------------------------------------------------------------------------

/// One stretch of the joint walk over two RLEs, during which neither mask changes.
#[derive(Clone, Copy)]
struct Stretch {
    len: u32,
    /// Foreground states of (a, b) during the stretch (what `rleIou` accounts).
    during: (bool, bool),
    /// Foreground states after the walk advanced past it (what `rleMerge` combines).
    after: (bool, bool),
    /// Whether both RLEs are exhausted.
    last: bool,
}

/// Walks two RLEs run by run with the state machine shared by `rleMerge` and `rleIou`
/// (one run advanced per mask and step, so empty runs produce empty stretches). Missing
/// counts read as 0. Where the C loop would spin forever (runs of unequal total length),
/// the walk stops.
fn walk_pair(a: &[u32], b: &[u32], mut step: impl FnMut(Stretch)) {
    let mut ca = a.first().copied().unwrap_or(0);
    let mut cb = b.first().copied().unwrap_or(0);
    let (mut va, mut vb) = (false, false);
    let (mut ia, mut ib) = (1usize, 1usize);
    loop {
        let c = ca.min(cb);
        let during = (va, vb);
        let mut advanced = false;
        ca -= c;
        if ca == 0 && ia < a.len() {
            ca = a[ia];
            ia += 1;
            va = !va;
            advanced = true;
        }
        cb -= c;
        if cb == 0 && ib < b.len() {
            cb = b[ib];
            ib += 1;
            vb = !vb;
            advanced = true;
        }
        let last = ca.wrapping_add(cb) == 0;
        step(Stretch { len: c, during, after: (va, vb), last });
        if last || (c == 0 && !advanced) {
            break;
        }
    }
}

/// `rleMerge` of two RLEs of the same size (union, or intersection when `intersect`).
fn merge_two(a: &[u32], b: &[u32], intersect: bool) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cc = 0u32;
    let mut v = false;
    walk_pair(a, b, |st| {
        cc = cc.wrapping_add(st.len);
        let vp = v;
        let (va, vb) = st.after;
        v = if intersect { va && vb } else { va || vb };
        if v != vp || st.last {
            out.push(cc);
            cc = 0;
        }
    });
    out
}

/// `rleMerge`: union (or intersection) of all masks. No masks give an empty 0x0 RLE and one
/// mask is returned as is, as in pycocotools. Masks of different sizes are an error
/// (pycocotools silently returns a 0x0 RLE).
pub fn merge(rles: &[Rle], intersect: bool) -> Result<Rle, MaskError> {
    let Some(first) = rles.first() else {
        return Ok(Rle { height: 0, width: 0, counts: Vec::new() });
    };
    let (h, w) = (first.height, first.width);
    let mut counts = first.counts.clone();
    for r in &rles[1..] {
        if r.height != h || r.width != w {
            return Err(MaskError::SizeMismatch);
        }
        counts = merge_two(&counts, &r.counts, intersect);
    }
    Ok(Rle { height: h, width: w, counts })
}

/// pycocotools `bbIou` on `[x, y, w, h]` boxes ([`coco_iou`] per pair): row-major
/// `[dt.len() x gt.len()]`; for a crowd gt the union is the detection's area. Pairs that do not
/// overlap get 0.
pub fn bbox_iou(dt: &[[f64; 4]], gt: &[[f64; 4]], iscrowd: &[bool]) -> Vec<f64> {
    dt.iter()
        .flat_map(|d| {
            gt.iter().enumerate().map(move |(g, gb)| coco_iou(d, gb, iscrowd.get(g).copied().unwrap_or(false)))
        })
        .collect()
}

/// Intersection and union pixel counts of two same-size RLEs (`rleIou`'s inner loop).
fn inter_union(a: &[u32], b: &[u32]) -> (u32, u32) {
    let (mut i, mut u) = (0u32, 0u32);
    walk_pair(a, b, |st| {
        let (va, vb) = st.during;
        if va || vb {
            u = u.wrapping_add(st.len);
            if va && vb {
                i = i.wrapping_add(st.len);
            }
        }
    });
    (i, u)
}

/// pycocotools `maskUtils.iou(dt, gt, iscrowd)` for RLEs (`rleIou`): row-major
/// `[dt.len() x gt.len()]`, as the `(m, n)` array pycocotools returns.
///
/// As in the C code, pairs whose bounding boxes do not overlap (per [`bbox_iou`]) are 0
/// without looking at pixels; masks of different sizes whose boxes overlap give -1; a crowd
/// gt divides the intersection by the detection's area. `iscrowd` should have one flag per
/// gt (pycocotools asserts it); missing flags read as `false`.
pub fn rle_iou(dt: &[Rle], gt: &[Rle], iscrowd: &[bool]) -> Vec<f64> {
    let dt_boxes: Vec<[f64; 4]> = dt.iter().map(to_bbox).collect();
    let gt_boxes: Vec<[f64; 4]> = gt.iter().map(to_bbox).collect();
    let mut out = bbox_iou(&dt_boxes, &gt_boxes, iscrowd);
    for (g, gr) in gt.iter().enumerate() {
        let crowd = iscrowd.get(g).copied().unwrap_or(false);
        for (d, dr) in dt.iter().enumerate() {
            let o = &mut out[d * gt.len() + g];
            let boxes_overlap = *o > 0.0;
            if !boxes_overlap {
                continue;
            }
            if dr.height != gr.height || dr.width != gr.width {
                *o = -1.0;
                continue;
            }
            let (i, mut u) = inter_union(&dr.counts, &gr.counts);
            if i == 0 {
                u = 1;
            } else if crowd {
                u = area(dr) as u32;
            }
            *o = i as f64 / u as f64;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Compressed string form
// ---------------------------------------------------------------------------------------

/// `rleToString`: COCO's compressed counts. Each count (minus the count two places before,
/// from the fourth on) is written as a signed LEB128-like number with 5 data bits per
/// character, bit 0x20 = "more follows", offset by 48 (so the characters are `'0'..='o'`).
pub fn to_compressed(rle: &Rle) -> String {
    let mut s = String::new();
    for (i, &c) in rle.counts.iter().enumerate() {
        let mut x = c as i64;
        if i > 2 {
            x -= rle.counts[i - 2] as i64;
        }
        loop {
            let mut ch = (x & 0x1f) as u8;
            x >>= 5;
            let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                ch |= 0x20;
            }
            s.push((ch + 48) as char);
            if !more {
                break;
            }
        }
    }
    s
}

/// `rleFrString`: parses [`to_compressed`]'s form for a `height x width` mask (the size is
/// not checked against the counts; [`decode`] checks it).
///
/// The arithmetic is that of the compiled C code, in `u32` with shift counts taken modulo 32:
/// maskApi.c shifts 32-bit `int`s by `5 * k`, which for numbers of 7 or more characters
/// (|delta| >= 2^29, i.e. masks of over half a gigapixel) is undefined behaviour that x86
/// resolves by masking the count. Up to 6 characters this is the plain signed LEB128-like
/// decoding. Errors on bytes outside `'0'..='o'` and on a string that ends inside a number,
/// where pycocotools would read past the end of the string.
pub fn from_compressed(s: &str, height: usize, width: usize) -> Result<Rle, MaskError> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let mut x = 0u32;
        let mut k = 0u32;
        loop {
            let Some(&byte) = bytes.get(p) else {
                return Err(MaskError::Truncated);
            };
            if !(48..=111).contains(&byte) {
                return Err(MaskError::BadChar { pos: p, byte });
            }
            let c = (byte - 48) as u32;
            x |= (c & 0x1f).wrapping_shl(k.wrapping_mul(5));
            p += 1;
            k += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= u32::MAX.wrapping_shl(k.wrapping_mul(5)); // sign extension
                }
                break;
            }
        }
        if counts.len() > 2 {
            x = x.wrapping_add(counts[counts.len() - 2]);
        }
        counts.push(x);
    }
    Ok(Rle { height, width, counts })
}

// ---------------------------------------------------------------------------------------
// Polygons and boxes
// ---------------------------------------------------------------------------------------

/// `rleFrPoly` upsamples by this factor before walking the edges.
const POLY_SCALE: f64 = 5.0;

/// The longest boundary walk (upsampled points) [`from_polygon`] accepts: 2^28 points, a
/// perimeter of about 5·10^7 px. pycocotools would allocate 8 bytes per point (2 GiB here)
/// and walk them all; such polygons only come from broken predictions.
pub const MAX_POLY_WALK: i64 = 1 << 28;

/// `(int)(scale * v + .5)` of the C code (truncation toward zero), refusing what C would
/// turn into undefined behaviour.
fn upsample(v: f64) -> Result<i64, MaskError> {
    let s = POLY_SCALE * v + 0.5;
    if !(s > i32::MIN as f64 - 1.0 && s < i32::MAX as f64 + 1.0) {
        return Err(MaskError::BadPolygon(format!("coordinate {v} is not finite or out of range")));
    }
    Ok(s as i64)
}

/// The dense boundary points of one polygon edge in the upsampled grid, in the order
/// `rleFrPoly` generates them (`u` = x, `v` = y): one point per step along the major axis,
/// the minor coordinate rounded as `(int)(start + slope * t + .5)`.
fn edge_points(x0: i64, y0: i64, x1: i64, y1: i64, mut emit: impl FnMut(i64, i64)) {
    let (mut xs, mut xe, mut ys, mut ye) = (x0, x1, y0, y1);
    let dx = (xe - xs).abs();
    let dy = (ys - ye).abs();
    let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if flip {
        std::mem::swap(&mut xs, &mut xe);
        std::mem::swap(&mut ys, &mut ye);
    }
    if dx >= dy {
        // dx == dy == 0 gives a NaN slope; that point's v is never read (its neighbours
        // share its u), so the value does not matter.
        let s = (ye - ys) as f64 / dx as f64;
        for d in 0..=dx {
            let t = if flip { dx - d } else { d };
            emit(t + xs, (ys as f64 + s * t as f64 + 0.5) as i64);
        }
    } else {
        let s = (xe - xs) as f64 / dy as f64;
        for d in 0..=dy {
            let t = if flip { dy - d } else { d };
            emit((xs as f64 + s * t as f64 + 0.5) as i64, t + ys);
        }
    }
}

/// The pixel `(x, y)` where the boundary between upsampled points `prev` and `cur` crosses
/// a pixel column centre, or `None`: `rleFrPoly`'s "points along y-boundary and downsample".
/// `y` is the first row inside the polygon below the crossing, clamped to `[0, h]`.
fn column_crossing(prev: (i64, i64), cur: (i64, i64), h: usize, w: usize) -> Option<(i64, i64)> {
    let ((u0, v0), (u1, v1)) = (prev, cur);
    if u1 == u0 {
        return None;
    }
    let xd = (if u1 < u0 { u1 } else { u1 - 1 }) as f64;
    let xd = (xd + 0.5) / POLY_SCALE - 0.5;
    // `w - 1` is unsigned in C: for w == 0 it wraps to the maximum.
    if xd.floor() != xd || xd < 0.0 || xd > w.wrapping_sub(1) as f64 {
        return None;
    }
    let yd = v0.min(v1) as f64;
    let mut yd = (yd + 0.5) / POLY_SCALE - 0.5;
    if yd < 0.0 {
        yd = 0.0;
    } else if yd > h as f64 {
        yd = h as f64;
    }
    Some((xd as i64, yd.ceil() as i64))
}

/// Turns sorted column-major boundary positions into counts: differences of consecutive
/// positions, where a zero difference (two boundaries at one pixel cancel) is dropped and
/// the next difference is added to the previous count, as `rleFrPoly` does.
fn counts_from_boundaries(mut a: Vec<u32>) -> Vec<u32> {
    a.sort_unstable();
    let mut prev = 0u32;
    for v in a.iter_mut() {
        let t = *v;
        *v = v.wrapping_sub(prev);
        prev = t;
    }
    let mut b = Vec::with_capacity(a.len());
    let mut j = 0;
    if let Some(&first) = a.first() {
        b.push(first);
        j = 1;
    }
    while j < a.len() {
        if a[j] > 0 {
            b.push(a[j]);
            j += 1;
        } else {
            j += 1;
            if j < a.len() {
                if let Some(last) = b.last_mut() {
                    *last = last.wrapping_add(a[j]);
                }
                j += 1;
            }
        }
    }
    b
}

/// `rleFrPoly`: rasterises one polygon `[x0, y0, x1, y1, ...]` (pixel coordinates, pixel
/// centres at integers) into a `height x width` RLE, exactly as pycocotools: the vertices are
/// scaled by 5 and rounded, the closed boundary is walked point by point, and each crossing
/// of a pixel column centre toggles the mask from that row down. Vertices outside the image
/// are allowed (clipped by the walk). An odd trailing coordinate is ignored, as
/// `frPoly` uses `len(poly) // 2` points. Errors on non-finite or huge (`|5v| >= 2^31`)
/// coordinates, where C's `(int)` cast is undefined, and on a perimeter over
/// [`MAX_POLY_WALK`] upsampled points.
pub fn from_polygon(poly: &[f64], height: usize, width: usize) -> Result<Rle, MaskError> {
    let k = poly.len() / 2;
    let mut xs = Vec::with_capacity(k);
    let mut ys = Vec::with_capacity(k);
    for j in 0..k {
        xs.push(upsample(poly[2 * j])?);
        ys.push(upsample(poly[2 * j + 1])?);
    }
    let walk: i64 = (0..k)
        .map(|j| {
            let n = (j + 1) % k;
            (xs[n] - xs[j]).abs().max((ys[n] - ys[j]).abs()) + 1
        })
        .sum();
    if walk > MAX_POLY_WALK {
        return Err(MaskError::BadPolygon(format!("boundary of {walk} upsampled points is too long")));
    }
    // Boundary positions `x * h + y` (column-major), then the end of the mask.
    let mut bounds: Vec<u32> = Vec::new();
    let mut prev: Option<(i64, i64)> = None;
    for j in 0..k {
        let (x1, y1) = if j + 1 < k { (xs[j + 1], ys[j + 1]) } else { (xs[0], ys[0]) };
        edge_points(xs[j], ys[j], x1, y1, |u, v| {
            if let Some(p) = prev
                && let Some((x, y)) = column_crossing(p, (u, v), height, width)
            {
                bounds.push(x.wrapping_mul(height as i64).wrapping_add(y) as u32);
            }
            prev = Some((u, v));
        });
    }
    bounds.push(height.wrapping_mul(width) as u32);
    Ok(Rle { height, width, counts: counts_from_boundaries(bounds) })
}

/// `rleFrBbox`: the box `[x, y, w, h]` as the polygon `(x, y), (x, y+h), (x+w, y+h),
/// (x+w, y)` through [`from_polygon`] (so fractional boxes round like polygons).
pub fn from_bbox(bbox: [f64; 4], height: usize, width: usize) -> Result<Rle, MaskError> {
    let [x, y, w, h] = bbox;
    let (xe, ye) = (x + w, y + h);
    from_polygon(&[x, y, x, ye, xe, ye, xe, y], height, width)
}

/// COCO's list-of-polygons segmentation as `COCO.annToRLE` reads it
/// (`frPyObjects` + `merge`): every part rasterised by [`from_polygon`], then their union.
///
/// Errors where pycocotools 2.0.x raises: an empty list, or a **first** part with 4 numbers
/// or fewer. (`frPyObjects` takes a list whose first part has exactly 4 numbers for a list of
/// `[x, y, w, h]` boxes, but then hands the Python list to `frBbox`, which only accepts a
/// numpy array: `TypeError`. So a 2-point polygon first in the list is unusable.) Later
/// parts may have any length, even 0.
pub fn from_polygons(polys: &[Vec<f64>], height: usize, width: usize) -> Result<Rle, MaskError> {
    let Some(first) = polys.first() else {
        return Err(MaskError::BadPolygon("empty polygon list".into()));
    };
    if first.len() <= 4 {
        return Err(MaskError::BadPolygon(format!(
            "first part has {} numbers; pycocotools needs more than 4",
            first.len()
        )));
    }
    let parts: Vec<Rle> = polys.iter().map(|p| from_polygon(p, height, width)).collect::<Result<_, _>>()?;
    merge(&parts, false)
}

/// The three COCO `segmentation` forms, as plain values (the JSON layer converts to these).
#[derive(Clone, Debug, PartialEq)]
pub enum Segmentation {
    /// `[[x0, y0, x1, y1, ...], ...]`: one or more polygon parts.
    Polygons(Vec<Vec<f64>>),
    /// `{"size": [h, w], "counts": [..]}`: uncompressed RLE (crowd annotations).
    Uncompressed { size: [usize; 2], counts: Vec<u32> },
    /// `{"size": [h, w], "counts": "..."}`: compressed RLE (results files).
    Compressed { size: [usize; 2], counts: String },
}

impl Segmentation {
    /// `COCO.annToRLE`: polygons are rasterised at the image size `height x width`; the RLE
    /// forms keep their own `size` (pycocotools does not compare it with the image).
    pub fn to_rle(&self, height: usize, width: usize) -> Result<Rle, MaskError> {
        match self {
            Segmentation::Polygons(p) => from_polygons(p, height, width),
            Segmentation::Uncompressed { size, counts } => {
                Ok(Rle { height: size[0], width: size[1], counts: counts.clone() })
            }
            Segmentation::Compressed { size, counts } => from_compressed(counts, size[0], size[1]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// COCO runs start with background (an empty run when the first pixel is foreground),
    /// alternate, merge equal neighbours and ignore empty stretches.
    #[test]
    fn runs_alternate_from_background() {
        let counts = |pushes: &[(bool, usize)]| {
            let mut r = RunBuilder::new();
            pushes.iter().for_each(|&(v, n)| r.push(v, n));
            r.finish(1, 1).counts
        };
        assert_eq!(counts(&[(true, 2), (false, 0), (true, 1), (false, 3), (false, 2), (true, 0)]), [0, 3, 5]);
        assert_eq!(counts(&[(false, 4)]), [4]);
        assert_eq!(counts(&[]), [0]);
    }

    fn bitmap(h: usize, w: usize, rows: &[&str]) -> Bitmap {
        let data = rows.iter().flat_map(|r| r.bytes().map(|b| (b == b'1') as u8)).collect();
        Bitmap { height: h, width: w, data }
    }

    /// `paste` equals placing the pixels in a canvas bitmap and encoding it, wherever the patch
    /// lands: inside, over each edge, wholly outside.
    #[test]
    fn paste_equals_placing_pixels_in_a_canvas() {
        let patch = bitmap(3, 4, &["1101", "0110", "1001"]);
        let rle = encode(&patch);
        for (x0, y0) in [(0, 0), (2, 1), (5, 3), (7, 0), (0, 5), (9, 9), (3, 4)] {
            let (h, w) = (6, 8);
            let mut canvas = Bitmap::zeros(h, w);
            for y in 0..patch.height {
                for x in 0..patch.width {
                    if y + y0 < h && x + x0 < w {
                        canvas.data[(y + y0) * w + x + x0] = patch.data[y * patch.width + x];
                    }
                }
            }
            assert_eq!(paste(&rle, (x0, y0), h, w).unwrap(), encode(&canvas), "at ({x0}, {y0})");
        }
    }

    #[test]
    fn encode_is_column_major_and_starts_with_background() {
        let m = bitmap(2, 3, &["110", "010"]);
        // Column-major: (0,0)=1 (1,0)=0 (0,1)=1 (1,1)=1 (0,2)=0 (1,2)=0.
        let r = encode(&m);
        assert_eq!(r.counts, vec![0, 1, 1, 2, 2]);
        assert_eq!(decode(&r).unwrap(), m);
        assert_eq!(area(&r), 3);
        assert_eq!(to_bbox(&r), [0.0, 0.0, 2.0, 2.0]);
    }

    #[test]
    fn empty_and_full_masks() {
        let e = encode(&Bitmap::zeros(3, 4));
        assert_eq!(e.counts, vec![12]);
        assert_eq!(to_bbox(&e), [0.0; 4]);
        let f = encode(&Bitmap { height: 3, width: 4, data: vec![1; 12] });
        assert_eq!(f.counts, vec![0, 12]);
        assert_eq!(to_bbox(&f), [0.0, 0.0, 4.0, 3.0]);
        assert_eq!(encode(&Bitmap::zeros(0, 5)).counts, vec![0]);
    }

    #[test]
    fn decode_rejects_wrong_lengths() {
        let r = Rle { height: 2, width: 2, counts: vec![1, 2] };
        assert_eq!(decode(&r), Err(MaskError::LengthMismatch { expected: 4, got: 3 }));
        let huge = Rle { height: usize::MAX, width: 3, counts: vec![1] };
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn compressed_strings_round_trip() {
        let r = Rle { height: 100, width: 100, counts: vec![0, 5, 1000, 3, 20, 4000, 4972, 0, 1] };
        let s = to_compressed(&r);
        assert_eq!(from_compressed(&s, 100, 100).unwrap(), r);
        // Known value: pycocotools encodes [12] as "<" and [0, 12] as "0<".
        assert_eq!(to_compressed(&Rle { height: 3, width: 4, counts: vec![0, 12] }), "0<");
    }

    #[test]
    fn compressed_string_errors() {
        assert_eq!(from_compressed("0 ", 1, 1), Err(MaskError::BadChar { pos: 1, byte: b' ' }));
        assert_eq!(from_compressed("0P", 1, 1), Err(MaskError::Truncated));
        // 7-character numbers follow C's 32-bit arithmetic on x86 (values checked with
        // pycocotools 2.0.11: its `area` of "0oooooo2" is 3221225471, and it re-encodes
        // "0000ooooooB" as "0000oooooo3", i.e. a last count of 2^32 - 1).
        assert_eq!(from_compressed("0oooooo2", 1, 1).unwrap().counts, vec![0, 3_221_225_471]);
        assert_eq!(from_compressed("0000ooooooB", 1, 1).unwrap().counts, vec![0, 0, 0, 0, u32::MAX]);
    }

    #[test]
    fn merge_union_and_intersection() {
        let a = encode(&bitmap(2, 2, &["10", "10"]));
        let b = encode(&bitmap(2, 2, &["11", "00"]));
        let u = merge(&[a.clone(), b.clone()], false).unwrap();
        assert_eq!(decode(&u).unwrap(), bitmap(2, 2, &["11", "10"]));
        let i = merge(&[a.clone(), b.clone()], true).unwrap();
        assert_eq!(decode(&i).unwrap(), bitmap(2, 2, &["10", "00"]));
        assert_eq!(merge(std::slice::from_ref(&a), false).unwrap(), a);
        assert_eq!(merge(&[], false).unwrap().counts, Vec::<u32>::new());
        let other = encode(&Bitmap::zeros(3, 2));
        assert_eq!(merge(&[a, other], false), Err(MaskError::SizeMismatch));
    }

    #[test]
    fn iou_plain_crowd_and_mismatch() {
        let a = encode(&bitmap(2, 2, &["11", "00"]));
        let b = encode(&bitmap(2, 2, &["10", "10"]));
        let iou = rle_iou(std::slice::from_ref(&a), &[b.clone(), b.clone()], &[false, true]);
        assert_eq!(iou, vec![1.0 / 3.0, 0.5]);
        let c = encode(&bitmap(3, 2, &["10", "10", "00"]));
        assert_eq!(rle_iou(&[a], &[c], &[false]), vec![-1.0]);
    }

    #[test]
    fn polygon_square_covers_its_pixels() {
        // The square with corners at pixel centres (1,1) and (3,3) covers columns 1..=2 and
        // rows 1..=2 under pycocotools' rule (a column counts when its centre is crossed).
        let r = from_polygon(&[1.0, 1.0, 3.0, 1.0, 3.0, 3.0, 1.0, 3.0], 5, 5).unwrap();
        let m = decode(&r).unwrap();
        assert_eq!(area(&r), 4);
        assert!(m.get(1, 1) && m.get(2, 2) && !m.get(3, 3) && !m.get(0, 0));
        assert_eq!(from_bbox([1.0, 1.0, 2.0, 2.0], 5, 5).unwrap(), r);
    }

    #[test]
    fn polygon_errors_and_degenerate_inputs() {
        assert!(from_polygon(&[f64::NAN, 0.0, 1.0, 1.0, 2.0, 0.0], 4, 4).is_err());
        assert!(from_polygon(&[1e12, 0.0, 1.0, 1.0, 2.0, 0.0], 4, 4).is_err());
        assert!(from_polygon(&[4e8, 0.0, 1.0, 1.0, 2.0, 0.0], 4, 4).is_err()); // walk too long
        // No points, one point, all points equal: an empty mask.
        for p in [&[][..], &[1.0, 1.0][..], &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0][..]] {
            assert_eq!(from_polygon(p, 4, 4).unwrap().counts, vec![16]);
        }
        assert!(from_polygons(&[], 4, 4).is_err());
        assert!(from_polygons(&[vec![1.0, 2.0]], 4, 4).is_err());
        assert!(from_polygons(&[vec![0.0, 0.0, 2.0, 2.0]], 4, 4).is_err());
        let later_empty = from_polygons(&[vec![0.0, 0.0, 2.0, 0.0, 2.0, 2.0], vec![]], 4, 4).unwrap();
        assert_eq!(later_empty, from_polygon(&[0.0, 0.0, 2.0, 0.0, 2.0, 2.0], 4, 4).unwrap());
    }

    #[test]
    fn segmentation_forms() {
        let unc = Segmentation::Uncompressed { size: [2, 2], counts: vec![1, 2, 1] };
        let r = unc.to_rle(9, 9).unwrap();
        assert_eq!((r.height, r.width), (2, 2));
        let comp = Segmentation::Compressed { size: [2, 2], counts: to_compressed(&r) };
        assert_eq!(comp.to_rle(9, 9).unwrap(), r);
        let poly = Segmentation::Polygons(vec![vec![0.0, 0.0, 2.0, 0.0, 2.0, 2.0]]);
        assert_eq!(poly.to_rle(3, 3).unwrap().height, 3);
    }
}
