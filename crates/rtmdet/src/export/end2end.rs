//! mmdeploy's end-to-end interface inside the graph, with our post-processing's semantics
//! (`postprocess::select_candidates` → `drop_empty` → `nms_and_limit`, in input pixels):
//!
//! 1. per level, `sigmoid` scores flattened in (prior, class) order and the best `nms_pre`
//!    by `TopK` (multi-label: a prior may appear with several classes);
//! 2. distances gathered for those priors, decoded around `(j·s, i·s)` and clamped to the
//!    input; candidates of all levels concatenated;
//! 3. a candidate stays only with `score > conf` and a box of positive width and height;
//! 4. class-aware NMS by the standard `NonMaxSuppression` (scores `[N, C, K]` holding each
//!    candidate's score in its own class row only), then the best `max_det` by `TopK`;
//! 5. RTMDet-Ins: the survivors' dynamic convolutions over `[relative coordinates,
//!    prototypes]` as batched `MatMul`s, bilinear ×8 to the input, `sigmoid`.
//!
//! Outputs: `dets [N, K, 5]` (x1, y1, x2, y2, score in input pixels), `labels [N, K]` int64,
//! RTMDet-Ins `masks [N, K, H, W]` float. Rows after the last detection are padding: score 0,
//! box 0, label −1, mask 0.

use super::proto::{Attr, Dim, Elem, OnnxWriter};
use super::{HeadValues, InputShape};
use crate::model::Graph;
use crate::model::head::{DYCONV_CHANNELS as DYCONV, KERNEL_PARAMS, MASK_FEAT_STRIDE, NUM_PROTOTYPES as PROTOS};
use crate::postprocess::DetectParams;

/// Score of a candidate that must not survive: below any `conf` (which is ≥ 0), so it is
/// dropped whether a runtime tests `score > conf` or `score >= conf`.
const REJECTED: f32 = -1.0;

/// The concatenated candidates of all levels, `K` of them per image.
struct Candidates {
    /// `[N, K]`.
    scores: String,
    /// `[N, K]` int64.
    labels: String,
    /// `[N, K, 4]` x1, y1, x2, y2.
    boxes: String,
    /// `[N, K, 3]` prior x, y, stride (RTMDet-Ins).
    priors: Option<String>,
    /// `[N, K, 169]` (RTMDet-Ins).
    kernels: Option<String>,
}

pub fn emit(w: &mut OnnxWriter, graph: &Graph, heads: &HeadValues, params: &DetectParams, shape: &InputShape) {
    w.scope("postprocess");
    let limits = input_limits(w);
    let with_masks = heads.mask_feat.is_some();
    // Candidates per level and in all: constants for a static input size.
    let per_level: Vec<Option<usize>> = graph
        .levels
        .iter()
        .map(|l| (!shape.dynamic).then(|| params.nms_pre.min((shape.side / l.stride).pow(2) * graph.num_classes)))
        .collect();
    let total: Option<usize> = per_level.iter().copied().sum();
    let levels: Vec<Candidates> = heads
        .levels
        .iter()
        .zip(&per_level)
        .map(|(l, &known)| level_candidates(w, l, graph.num_classes, params, &limits, with_masks, known))
        .collect();
    let c = concat_levels(w, levels);
    let scores = filter(w, &c, params.score_thr);
    let kept = class_aware_nms(w, &c, &scores, graph.num_classes, params);
    let k = top_count(w, &kept, params.max_det, total);
    let top = w.node_n("TopK", &[&kept, &k], vec![("axis", Attr::Int(1))], 2);
    let (top_scores, top) = (top[0].clone(), top[1].clone());
    let zero = w.scalar(0.0);
    let valid = w.node("Greater", &[&top_scores, &zero], vec![]);

    let boxes = gather_rows(w, &c.boxes, &top, 4);
    let valid3 = unsqueeze(w, &valid, &[2]);
    let boxes = w.node("Where", &[&valid3, &boxes, &zero], vec![]);
    let score_col = unsqueeze(w, &top_scores, &[2]);
    w.node("Concat", &[&boxes, &score_col], vec![("axis", Attr::Int(2))]);
    w.rename_last("dets");
    let labels = w.node("GatherElements", &[&c.labels, &top], vec![("axis", Attr::Int(1))]);
    let none = w.i64s(&[], &[-1]);
    w.node("Where", &[&valid, &labels, &none], vec![]);
    w.rename_last("labels");

    let k = params.max_det.min(total.unwrap_or(0));
    let (n, k) = (shape.batch_dim(), shape.count_dim("detections", k));
    w.output("dets", Elem::F32, &[n.clone(), k.clone(), Dim::Fixed(5)]);
    w.output("labels", Elem::I64, &[n.clone(), k.clone()]);
    if let (Some(mask_feat), Some(priors), Some(kernels)) = (&heads.mask_feat, &c.priors, &c.kernels) {
        let priors = gather_rows(w, priors, &top, 3);
        let kernels = gather_rows(w, kernels, &top, KERNEL_PARAMS);
        let probs = masks(w, mask_feat, &priors, &kernels, &top);
        let valid4 = unsqueeze(w, &valid, &[2, 3]);
        w.node("Where", &[&valid4, &probs, &zero], vec![]);
        w.rename_last("masks");
        w.output("masks", Elem::F32, &[n, k, shape.side_dim("height", 1), shape.side_dim("width", 1)]);
    }
    w.scope("");
}

fn unsqueeze(w: &mut OnnxWriter, x: &str, axes: &[i64]) -> String {
    let axes = w.ints(axes);
    w.node("Unsqueeze", &[x, &axes], vec![])
}

/// `Shape(x)[start..end]` (int64, 1-D).
fn dims(w: &mut OnnxWriter, x: &str, start: i64, end: i64) -> String {
    let s = w.node("Shape", &[x], vec![]);
    let (a, b) = (w.ints(&[start]), w.ints(&[end]));
    w.node("Slice", &[&s, &a, &b], vec![])
}

/// `x[..., start..end]` along `axis`.
fn slice(w: &mut OnnxWriter, x: &str, axis: i64, start: i64, end: i64) -> String {
    let (a, b, ax) = (w.ints(&[start]), w.ints(&[end]), w.ints(&[axis]));
    w.node("Slice", &[x, &a, &b, &ax], vec![])
}

fn concat(w: &mut OnnxWriter, parts: &[&str], axis: i64) -> String {
    w.node("Concat", parts, vec![("axis", Attr::Int(axis))])
}

/// `[W, H, W, H]` of the input as floats: the clamp of decoded boxes.
fn input_limits(w: &mut OnnxWriter) -> String {
    let hw = dims(w, "input", 2, 4);
    let h = slice(w, &hw, 0, 0, 1);
    let wd = slice(w, &hw, 0, 1, 2);
    let whwh = concat(w, &[&wd, &h, &wd, &h], 0);
    w.cast(&whwh, Elem::F32)
}

/// `data [N, M, width]` rows picked by `index [N, k]` → `[N, k, width]`.
fn gather_rows(w: &mut OnnxWriter, data: &str, index: &str, width: usize) -> String {
    let idx = unsqueeze(w, index, &[2]);
    let n_k = dims(w, index, 0, 2);
    let wd = w.ints(&[width as i64]);
    let shape = concat(w, &[&n_k, &wd], 0);
    let idx = w.node("Expand", &[&idx, &shape], vec![]);
    w.node("GatherElements", &[data, &idx], vec![("axis", Attr::Int(1))])
}

/// `[N, C, H, W]` → `[N, H·W, C]` (prior-major, as candidates index them).
fn prior_major(w: &mut OnnxWriter, x: &str, channels: usize) -> String {
    let t = w.node("Transpose", &[x], vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))]);
    let shape = w.ints(&[0, -1, channels as i64]);
    w.node("Reshape", &[&t, &shape], vec![])
}

/// One level's best `nms_pre` (prior, class) candidates, decoded.
fn level_candidates(
    w: &mut OnnxWriter,
    l: &super::LevelValues,
    num_classes: usize,
    params: &DetectParams,
    limits: &str,
    with_masks: bool,
    known: Option<usize>,
) -> Candidates {
    let probs = w.node("Sigmoid", &[&l.cls], vec![]);
    let t = w.node("Transpose", &[&probs], vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))]);
    let flat_shape = w.ints(&[0, -1]);
    let flat = w.node("Reshape", &[&t, &flat_shape], vec![]);
    let k = top_count(w, &flat, params.nms_pre, known);
    let top = w.node_n("TopK", &[&flat, &k], vec![("axis", Attr::Int(1))], 2);
    let (scores, index) = (top[0].clone(), top[1].clone());
    let classes = w.i64s(&[], &[num_classes as i64]);
    let prior = w.node("Div", &[&index, &classes], vec![]);
    let labels = w.node("Mod", &[&index, &classes], vec![]);

    // Prior (j·s, i·s) of index p = i·W + j.
    let width = dims(w, &l.cls, 3, 4);
    let j = w.node("Mod", &[&prior, &width], vec![]);
    let i = w.node("Div", &[&prior, &width], vec![]);
    let stride = w.scalar(l.stride as f32);
    let point = |w: &mut OnnxWriter, v: &str| {
        let v = w.cast(v, Elem::F32);
        let v = w.node("Mul", &[&v, &stride], vec![]);
        unsqueeze(w, &v, &[2])
    };
    let (px, py) = (point(w, &j), point(w, &i));
    let base = concat(w, &[&px, &py, &px, &py], 2);
    let reg = prior_major(w, &l.reg, 4);
    let distances = gather_rows(w, &reg, &prior, 4);
    let sign = w.f32s(&[4], &[-1.0, -1.0, 1.0, 1.0]);
    let signed = w.node("Mul", &[&distances, &sign], vec![]);
    let boxes = w.node("Add", &[&base, &signed], vec![]);
    let zero = w.scalar(0.0);
    let boxes = w.node("Max", &[&boxes, &zero], vec![]);
    let boxes = w.node("Min", &[&boxes, limits], vec![]);

    let (priors, kernels) = match (&l.kernel, with_masks) {
        (Some(kernel), true) => {
            let s = w.f32s(&[1], &[l.stride as f32]);
            let px_shape = w.node("Shape", &[&px], vec![]);
            let s = w.node("Expand", &[&s, &px_shape], vec![]);
            let priors = concat(w, &[&px, &py, &s], 2);
            let kernel = prior_major(w, kernel, KERNEL_PARAMS);
            (Some(priors), Some(gather_rows(w, &kernel, &prior, KERNEL_PARAMS)))
        }
        _ => (None, None),
    };
    Candidates { scores, labels, boxes, priors, kernels }
}

fn concat_levels(w: &mut OnnxWriter, levels: Vec<Candidates>) -> Candidates {
    let cat = |w: &mut OnnxWriter, pick: &dyn Fn(&Candidates) -> Option<&String>| {
        let parts: Vec<&str> = levels.iter().filter_map(pick).map(String::as_str).collect();
        (!parts.is_empty()).then(|| concat(w, &parts, 1))
    };
    Candidates {
        scores: cat(w, &|c| Some(&c.scores)).expect("levels"),
        labels: cat(w, &|c| Some(&c.labels)).expect("levels"),
        boxes: cat(w, &|c| Some(&c.boxes)).expect("levels"),
        priors: cat(w, &|c| c.priors.as_ref()),
        kernels: cat(w, &|c| c.kernels.as_ref()),
    }
}

/// Scores of the candidates that pass `score > conf` and have a box of positive width and
/// height; [`REJECTED`] for the others.
fn filter(w: &mut OnnxWriter, c: &Candidates, conf: f32) -> String {
    let thr = w.scalar(conf);
    let above = w.node("Greater", &[&c.scores, &thr], vec![]);
    let zero = w.scalar(0.0);
    let positive = |w: &mut OnnxWriter, lo: i64| {
        let a = slice(w, &c.boxes, 2, lo, lo + 1);
        let b = slice(w, &c.boxes, 2, lo + 2, lo + 3);
        let size = w.node("Sub", &[&b, &a], vec![]);
        let axis = w.ints(&[2]);
        let size = w.node("Squeeze", &[&size, &axis], vec![]);
        w.node("Greater", &[&size, &zero], vec![])
    };
    let (wide, tall) = (positive(w, 0), positive(w, 1));
    let sized = w.node("And", &[&wide, &tall], vec![]);
    let keep = w.node("And", &[&above, &sized], vec![]);
    let rejected = w.scalar(REJECTED);
    w.node("Where", &[&keep, &c.scores, &rejected], vec![])
}

/// `scores` where the candidate survives class-aware NMS, 0 elsewhere (`[N, K]`).
fn class_aware_nms(w: &mut OnnxWriter, c: &Candidates, scores: &str, num_classes: usize, p: &DetectParams) -> String {
    // [N, C, K]: each candidate's score in its class's row, REJECTED in the others.
    let labels = unsqueeze(w, &c.labels, &[1]);
    let classes: Vec<i64> = (0..num_classes as i64).collect();
    let classes = w.i64s(&[1, num_classes, 1], &classes);
    let own = w.node("Equal", &[&labels, &classes], vec![]);
    let row = unsqueeze(w, scores, &[1]);
    let rejected = w.scalar(REJECTED);
    let per_class = w.node("Where", &[&own, &row, &rejected], vec![]);
    let max_per_class = w.ints(&[p.max_det as i64]);
    let iou = w.f32s(&[1], &[p.iou_thr]);
    let conf = w.f32s(&[1], &[p.score_thr]);
    let selected = w.node("NonMaxSuppression", &[&c.boxes, &per_class, &max_per_class, &iou, &conf], vec![]);
    // selected [S, 3] = (image, class, candidate) → a 0/1 mask over [N, K].
    let image = slice(w, &selected, 1, 0, 1);
    let cand = slice(w, &selected, 1, 2, 3);
    let at = concat(w, &[&image, &cand], 1);
    let shape = w.node("Shape", &[scores], vec![]);
    let zeros = w.node("ConstantOfShape", &[&shape], vec![]);
    let count = dims(w, &selected, 0, 1);
    let ones = w.node("ConstantOfShape", &[&count], vec![]);
    let one = w.scalar(1.0);
    let ones = w.node("Add", &[&ones, &one], vec![]);
    let mask = w.node("ScatterND", &[&zeros, &at, &ones], vec![]);
    let half = w.scalar(0.5);
    let survived = w.node("Greater", &[&mask, &half], vec![]);
    let zero = w.scalar(0.0);
    w.node("Where", &[&survived, scores, &zero], vec![])
}

/// `TopK`'s k over the columns of `x` `[N, M]`: `min(cap, M)`, a constant when `M` is known
/// (a static input size; TensorRT wants a constant k), from `x`'s shape otherwise.
fn top_count(w: &mut OnnxWriter, x: &str, cap: usize, known: Option<usize>) -> String {
    match known {
        Some(m) => w.ints(&[cap.min(m) as i64]),
        None => {
            let m = dims(w, x, 1, 2);
            let cap = w.ints(&[cap as i64]);
            w.node("Min", &[&m, &cap], vec![])
        }
    }
}

/// RTMDet-Ins mask probabilities `[N, D, H, W]` of the detections: relative coordinates
/// `(prior − 8·(j, i)) / (8·stride)` and the prototypes through the three dynamic 1×1 convs
/// (kernel = w0 [8×10], w1 [8×8], w2 [1×8], b0, b1, b2), bilinear ×8, sigmoid.
fn masks(w: &mut OnnxWriter, mask_feat: &str, priors: &str, kernels: &str, top: &str) -> String {
    let n_d = dims(w, top, 0, 2);
    let hw = dims(w, mask_feat, 2, 4);
    let h = slice(w, &hw, 0, 0, 1);
    let wd = slice(w, &hw, 0, 1, 2);
    let one = w.ints(&[1]);
    let step = w.scalar(MASK_FEAT_STRIDE as f32);
    let grid = |w: &mut OnnxWriter, len: &str| {
        let (zero, one) = (w.i64s(&[], &[0]), w.i64s(&[], &[1]));
        let axis = w.ints(&[0]);
        let len = w.node("Squeeze", &[len, &axis], vec![]);
        let r = w.node("Range", &[&zero, &len, &one], vec![]);
        let r = w.cast(&r, Elem::F32);
        w.node("Mul", &[&r, &step], vec![])
    };
    let (xs, ys) = (grid(w, &wd), grid(w, &h));
    let prior = |w: &mut OnnxWriter, k: i64| slice(w, priors, 2, k, k + 1);
    let (px, py, stride) = (prior(w, 0), prior(w, 1), prior(w, 2));
    let eight = w.scalar(8.0);
    let norm = w.node("Mul", &[&stride, &eight], vec![]);
    let norm = unsqueeze(w, &norm, &[3]); // [N, D, 1, 1]
    // The grid flattened row-major: x = 8·j and y = 8·i of each location, `[1, 1, 1, h·w]`.
    let plane = concat(w, &[&h, &wd], 0);
    let row_shape = concat(w, &[&one, &wd], 0);
    let col_shape = concat(w, &[&h, &one], 0);
    let flat = w.ints(&[1, 1, 1, -1]);
    let flat_grid = |w: &mut OnnxWriter, v: &str, shape: &str| {
        let v = w.node("Reshape", &[v, shape], vec![]);
        let v = w.node("Expand", &[&v, &plane], vec![]);
        w.node("Reshape", &[&v, &flat], vec![])
    };
    let gx = flat_grid(w, &xs, &row_shape);
    let gy = flat_grid(w, &ys, &col_shape);
    // Relative coordinates [N, D, 1, h·w] by broadcasting the priors [N, D, 1, 1].
    let px = unsqueeze(w, &px, &[3]);
    let py = unsqueeze(w, &py, &[3]);
    let rx = w.node("Sub", &[&px, &gx], vec![]);
    let rx = w.node("Div", &[&rx, &norm], vec![]);
    let ry = w.node("Sub", &[&py, &gy], vec![]);
    let ry = w.node("Div", &[&ry, &norm], vec![]);
    let full = concat(w, &[&n_d, &h, &wd], 0);
    // Prototypes [N, 8, h, w] → [N, 1, 8, hw] → [N, D, 8, hw].
    let proto_shape = w.ints(&[0, 1, PROTOS as i64, -1]);
    let protos = w.node("Reshape", &[mask_feat, &proto_shape], vec![]);
    let spread = concat(w, &[&n_d, &one, &one], 0);
    let protos = w.node("Expand", &[&protos, &spread], vec![]);
    let x = concat(w, &[&rx, &ry, &protos], 2); // [N, D, 10, hw]

    let n_in = PROTOS + 2;
    let mut offset = 0i64;
    let mut part = |w: &mut OnnxWriter, rows: usize, cols: usize| {
        let len = (rows * cols) as i64;
        let p = slice(w, kernels, 2, offset, offset + len);
        offset += len;
        let shape = w.ints(&[0, 0, rows as i64, cols as i64]);
        w.node("Reshape", &[&p, &shape], vec![])
    };
    let w0 = part(w, DYCONV, n_in);
    let w1 = part(w, DYCONV, DYCONV);
    let w2 = part(w, 1, DYCONV);
    let b0 = part(w, DYCONV, 1);
    let b1 = part(w, DYCONV, 1);
    let b2 = part(w, 1, 1);
    let layer = |w: &mut OnnxWriter, weight: &str, bias: &str, x: &str, relu: bool| {
        let y = w.node("MatMul", &[weight, x], vec![]);
        let y = w.node("Add", &[&y, bias], vec![]);
        if relu { w.node("Relu", &[&y], vec![]) } else { y }
    };
    let x = layer(w, &w0, &b0, &x, true);
    let x = layer(w, &w1, &b1, &x, true);
    let logits = layer(w, &w2, &b2, &x, false); // [N, D, 1, hw]
    let logits = w.node("Reshape", &[&logits, &full], vec![]);
    let s = MASK_FEAT_STRIDE as f32;
    let scales = w.f32s(&[4], &[1.0, 1.0, s, s]);
    let attrs =
        vec![("mode", Attr::Str("linear")), ("coordinate_transformation_mode", Attr::Str("pytorch_half_pixel"))];
    let up = w.node("Resize", &[&logits, "", &scales], attrs);
    w.node("Sigmoid", &[&up], vec![])
}
