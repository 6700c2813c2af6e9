//! COCO evaluation, reproducing pycocotools' `COCOeval` (iouType `bbox`, and `segm` with
//! instance masks as RLE: mask IoU, a crowd region dividing by the detection's mask area, a
//! detection's area its mask's) decision for decision: crowd regions matched by intersection over the detection's area,
//! greedy matching per IoU threshold with ignored ground truth last, area ranges on the
//! annotation's `area` field, per-image top-100 by score (stable order on ties), 101-point
//! interpolated precision, and the 12 summary statistics.

use std::collections::HashMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::structures::boxes::coco_iou;
use crate::structures::mask::{self, Rle};

/// A ground-truth box.
#[derive(Clone, Debug, PartialEq)]
pub struct GtBox {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]`
    pub bbox: [f64; 4],
    /// The annotation's `area` (a segment area in COCO): what the area ranges look at.
    pub area: f64,
    pub iscrowd: bool,
}

/// A detection in the COCO results format.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetBox {
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]`
    pub bbox: [f64; 4],
    pub score: f64,
}

/// The ground truth of an evaluation.
#[derive(Clone, Debug, Default)]
pub struct GroundTruth {
    pub image_ids: Vec<u64>,
    /// `(id, name)`
    pub categories: Vec<(u64, String)>,
    pub boxes: Vec<GtBox>,
}

/// The 12 standard numbers.
pub const STAT_NAMES: [&str; 12] =
    ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"];

#[derive(Clone, Debug, Serialize)]
pub struct ClassResult {
    pub category_id: u64,
    pub name: String,
    /// Images with at least one (non-crowd or crowd) instance.
    pub images: usize,
    /// Non-crowd instances.
    pub instances: usize,
    /// AP@[.5:.95] (-1 when undefined: no ground truth).
    pub ap: f64,
    pub ap50: f64,
}

/// Everything an evaluation produces.
#[derive(Clone, Debug)]
pub struct CocoEval {
    pub stats: [f64; 12],
    pub per_class: Vec<ClassResult>,
    /// Interpolated precision `[T=10][R=101][K][A=4][M=3]`, -1 where undefined.
    pub precision: Vec<f64>,
    pub num_classes: usize,
}

const T: usize = 10;
const R: usize = 101;
const A: usize = 4;
const MAX_DETS: [usize; 3] = [1, 10, 100];
const AREA_RANGES: [(f64, f64); A] = [(0.0, 1e10), (0.0, 1024.0), (1024.0, 9216.0), (9216.0, 1e10)];

/// `np.linspace(start, stop, num)`: `i * step + start`, the last point exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    (0..num).map(|i| if i == num - 1 { stop } else { i as f64 * step + start }).collect()
}

/// Matching result of one (image, category, area range), detections score-sorted, top 100.
struct ImageEval {
    scores: Vec<f64>,
    /// Per detection, bit t: matched at IoU threshold t to a ground truth whose id is
    /// non-zero (pycocotools tests the id).
    matched: Vec<u16>,
    /// Per detection, bit t: ignored at threshold t.
    ignored: Vec<u16>,
    /// Ground truth that counts (not ignored).
    num_gt: usize,
}

/// Instance masks for `segm` evaluation, aligned with the ground truth's boxes and with the
/// detections.
#[derive(Clone, Copy, Debug)]
pub struct Masks<'a> {
    pub gt: &'a [Rle],
    pub dets: &'a [Rle],
    /// The detections' areas for the area ranges: pycocotools' `loadRes` takes `w·h` of the
    /// `bbox` when the results carry boxes (even for `segm`), the mask area otherwise.
    pub det_areas: &'a [f64],
}

/// A ground truth or detection with its mask (`segm`).
type WithMask<'a, T> = (&'a T, Option<&'a Rle>);

/// A detection with its mask (`segm`) and area.
#[derive(Clone, Copy)]
struct DtRef<'a> {
    det: &'a DetBox,
    mask: Option<&'a Rle>,
    area: f64,
}

/// The IoU matrix `[detection][ground truth]`: boxes (`bbox`) or masks (`segm`).
fn iou_matrix(dts: &[DtRef], gts: &[WithMask<GtBox>]) -> Vec<Vec<f64>> {
    match (dts.first().and_then(|d| d.mask), gts.first().and_then(|g| g.1)) {
        (Some(_), _) | (_, Some(_)) => {
            let d: Vec<Rle> = dts.iter().map(|d| d.mask.expect("masks for every detection").clone()).collect();
            let g: Vec<Rle> = gts.iter().map(|g| g.1.expect("masks for every ground truth").clone()).collect();
            let crowd: Vec<bool> = gts.iter().map(|g| g.0.iscrowd).collect();
            let flat = mask::rle_iou(&d, &g, &crowd);
            (0..dts.len()).map(|i| flat[i * gts.len()..(i + 1) * gts.len()].to_vec()).collect()
        }
        _ => dts.iter().map(|d| gts.iter().map(|g| coco_iou(&d.det.bbox, &g.0.bbox, g.0.iscrowd)).collect()).collect(),
    }
}

/// Evaluates one image and category for every area range.
fn evaluate_image(gts: &[WithMask<GtBox>], dts: &[DtRef], iou_thrs: &[f64]) -> [Option<ImageEval>; A] {
    if gts.is_empty() && dts.is_empty() {
        return [None, None, None, None];
    }
    let max_det = *MAX_DETS.last().unwrap();
    // Stable descending sort by score, like np.argsort(-score, kind='mergesort').
    let mut dts: Vec<DtRef> = dts.to_vec();
    dts.sort_by(|a, b| b.det.score.partial_cmp(&a.det.score).unwrap_or(std::cmp::Ordering::Equal));
    dts.truncate(max_det);
    let ious = iou_matrix(&dts, gts);
    let det_area: Vec<f64> = dts.iter().map(|d| d.area).collect();
    let gts: Vec<&GtBox> = gts.iter().map(|g| g.0).collect();

    std::array::from_fn(|a| {
        let (lo, hi) = AREA_RANGES[a];
        let outside = |area: f64| area < lo || area > hi;
        let gt_ignore_raw: Vec<bool> = gts.iter().map(|g| g.iscrowd || outside(g.area)).collect();
        // Ground truth that is ignored goes last (stable).
        let mut order: Vec<usize> = (0..gts.len()).collect();
        order.sort_by_key(|&i| gt_ignore_raw[i]);
        let gt_ig: Vec<bool> = order.iter().map(|&i| gt_ignore_raw[i]).collect();
        let crowd: Vec<bool> = order.iter().map(|&i| gts[i].iscrowd).collect();
        let gt_id: Vec<u64> = order.iter().map(|&i| gts[i].id).collect();

        let d = dts.len();
        let mut matched = vec![0u16; d];
        let mut ignored = vec![0u16; d];
        if !gts.is_empty() && d > 0 {
            for (t, &thr) in iou_thrs.iter().enumerate() {
                let mut gt_taken = vec![false; gts.len()];
                for di in 0..d {
                    let mut best = thr.min(1.0 - 1e-10);
                    let mut m: Option<usize> = None;
                    for gi in 0..gts.len() {
                        if gt_taken[gi] && !crowd[gi] {
                            continue;
                        }
                        if m.is_some_and(|mi| !gt_ig[mi] && gt_ig[gi]) {
                            break;
                        }
                        let v = ious[di][order[gi]];
                        if v < best {
                            continue;
                        }
                        best = v;
                        m = Some(gi);
                    }
                    if let Some(mi) = m {
                        ignored[di] |= (gt_ig[mi] as u16) << t;
                        matched[di] |= ((gt_id[mi] != 0) as u16) << t;
                        gt_taken[mi] = true;
                    }
                }
            }
        }
        // Unmatched detections outside the area range are ignored.
        for di in 0..d {
            if outside(det_area[di]) {
                ignored[di] |= !matched[di] & ((1 << T) - 1);
            }
        }
        Some(ImageEval {
            scores: dts.iter().map(|d| d.det.score).collect(),
            matched,
            ignored,
            num_gt: gt_ig.iter().filter(|&&g| !g).count(),
        })
    })
}

/// Runs the evaluation. Detections of images or categories absent from the ground truth are
/// errors (pycocotools asserts on unknown images and silently drops unknown categories; we
/// report both).
pub fn evaluate(gt: &GroundTruth, dets: &[DetBox]) -> Result<CocoEval> {
    evaluate_with(gt, dets, None)
}

/// `segm` evaluation: [`evaluate`] with mask IoU; `masks` aligns with `gt.boxes` and `dets`.
pub fn evaluate_segm(gt: &GroundTruth, dets: &[DetBox], masks: Masks) -> Result<CocoEval> {
    if masks.gt.len() != gt.boxes.len() || masks.dets.len() != dets.len() || masks.det_areas.len() != dets.len() {
        return Err(Error::Other(format!(
            "segm evaluation needs a mask per annotation and per detection ({} / {} annotations, {} / {} detections)",
            masks.gt.len(),
            gt.boxes.len(),
            masks.dets.len(),
            dets.len()
        )));
    }
    evaluate_with(gt, dets, Some(masks))
}

fn evaluate_with(gt: &GroundTruth, dets: &[DetBox], masks: Option<Masks>) -> Result<CocoEval> {
    let mut image_ids = gt.image_ids.clone();
    image_ids.sort_unstable();
    image_ids.dedup();
    let mut cats = gt.categories.clone();
    cats.sort_by_key(|c| c.0);
    let img_index: HashMap<u64, usize> = image_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_index: HashMap<u64, usize> = cats.iter().enumerate().map(|(i, c)| (c.0, i)).collect();
    let (ni, nk) = (image_ids.len(), cats.len());

    let mut gt_cells: Vec<Vec<WithMask<GtBox>>> = vec![Vec::new(); ni * nk];
    for (n, g) in gt.boxes.iter().enumerate() {
        let (Some(&i), Some(&k)) = (img_index.get(&g.image_id), cat_index.get(&g.category_id)) else {
            return Err(Error::Other(format!(
                "ground-truth annotation {} refers to image {} / category {} not in the dataset",
                g.id, g.image_id, g.category_id
            )));
        };
        gt_cells[k * ni + i].push((g, masks.map(|m| &m.gt[n])));
    }
    let mut dt_cells: Vec<Vec<DtRef>> = vec![Vec::new(); ni * nk];
    for (n, d) in dets.iter().enumerate() {
        let i = *img_index.get(&d.image_id).ok_or_else(|| {
            Error::Other(format!("detection for image_id {} which is not in the ground truth", d.image_id))
        })?;
        let k = *cat_index.get(&d.category_id).ok_or_else(|| {
            Error::Other(format!("detection with category_id {} which is not in the ground truth", d.category_id))
        })?;
        let (mask, area) = match masks {
            Some(m) => (Some(&m.dets[n]), m.det_areas[n]),
            None => (None, d.bbox[2] * d.bbox[3]),
        };
        dt_cells[k * ni + i].push(DtRef { det: d, mask, area });
    }

    let iou_thrs = linspace(0.5, 0.95, T);
    let rec_thrs = linspace(0.0, 1.0, R);
    // evals[k][i][a]
    let evals: Vec<[Option<ImageEval>; A]> = {
        use rayon::prelude::*;
        (0..ni * nk).into_par_iter().map(|c| evaluate_image(&gt_cells[c], &dt_cells[c], &iou_thrs)).collect()
    };

    let m_count = MAX_DETS.len();
    let idx = |t: usize, r: usize, k: usize, a: usize, m: usize| (((t * R + r) * nk + k) * A + a) * m_count + m;
    let ridx = |t: usize, k: usize, a: usize, m: usize| ((t * nk + k) * A + a) * m_count + m;
    let mut precision = vec![-1.0; T * R * nk * A * m_count];
    let mut recall = vec![-1.0; T * nk * A * m_count];
    for k in 0..nk {
        for a in 0..A {
            let e: Vec<&ImageEval> = (0..ni).filter_map(|i| evals[k * ni + i][a].as_ref()).collect();
            if e.is_empty() {
                continue;
            }
            let npig: usize = e.iter().map(|x| x.num_gt).sum();
            if npig == 0 {
                continue;
            }
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                // (score, image, detection) over all images, stable descending by score.
                let mut all: Vec<(f64, usize, usize)> = Vec::new();
                for (ei, x) in e.iter().enumerate() {
                    for di in 0..x.scores.len().min(max_det) {
                        all.push((x.scores[di], ei, di));
                    }
                }
                all.sort_by(|p, q| q.0.partial_cmp(&p.0).unwrap_or(std::cmp::Ordering::Equal));
                for t in 0..T {
                    let (mut tp, mut fp) = (0f64, 0f64);
                    let mut rc = Vec::with_capacity(all.len());
                    let mut pr = Vec::with_capacity(all.len());
                    for &(_, ei, di) in &all {
                        let x = e[ei];
                        if x.ignored[di] >> t & 1 == 1 {
                            // neither a true nor a false positive
                        } else if x.matched[di] >> t & 1 == 1 {
                            tp += 1.0;
                        } else {
                            fp += 1.0;
                        }
                        rc.push(tp / npig as f64);
                        pr.push(tp / (fp + tp + f64::EPSILON));
                    }
                    recall[ridx(t, k, a, m)] = rc.last().copied().unwrap_or(0.0);
                    for i in (1..pr.len()).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (r, &thr) in rec_thrs.iter().enumerate() {
                        // np.searchsorted(rc, thr, side='left'); beyond the end stays 0.
                        let pos = rc.partition_point(|&v| v < thr);
                        precision[idx(t, r, k, a, m)] = if pos < pr.len() { pr[pos] } else { 0.0 };
                    }
                }
            }
        }
    }

    let mean_valid = |vals: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = vals.filter(|&x| x > -1.0).collect();
        if v.is_empty() { -1.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
    };
    let ap = |t_sel: Option<usize>, a: usize, m: usize| {
        let ts: Vec<usize> = t_sel.map_or((0..T).collect(), |t| vec![t]);
        mean_valid(
            &mut ts
                .iter()
                .flat_map(|&t| (0..R).flat_map(move |r| (0..nk).map(move |k| (t, r, k))))
                .map(|(t, r, k)| precision[idx(t, r, k, a, m)]),
        )
    };
    let ar = |a: usize, m: usize| {
        mean_valid(&mut (0..T).flat_map(|t| (0..nk).map(move |k| (t, k))).map(|(t, k)| recall[ridx(t, k, a, m)]))
    };
    let stats = [
        ap(None, 0, 2),
        ap(Some(0), 0, 2),
        ap(Some(5), 0, 2),
        ap(None, 1, 2),
        ap(None, 2, 2),
        ap(None, 3, 2),
        ar(0, 0),
        ar(0, 1),
        ar(0, 2),
        ar(1, 2),
        ar(2, 2),
        ar(3, 2),
    ];

    let per_class = cats
        .iter()
        .enumerate()
        .map(|(k, (id, name))| {
            let class_ap = |ts: &[usize]| {
                mean_valid(
                    &mut ts
                        .iter()
                        .flat_map(|&t| (0..R).map(move |r| (t, r)))
                        .map(|(t, r)| precision[idx(t, r, k, 0, 2)]),
                )
            };
            let cells = &gt_cells[k * ni..(k + 1) * ni];
            ClassResult {
                category_id: *id,
                name: name.clone(),
                images: cells.iter().filter(|c| !c.is_empty()).count(),
                instances: cells.iter().map(|c| c.iter().filter(|g| !g.0.iscrowd).count()).sum(),
                ap: class_ap(&(0..T).collect::<Vec<_>>()),
                ap50: class_ap(&[0]),
            }
        })
        .collect();
    Ok(CocoEval { stats, per_class, precision, num_classes: nk })
}

impl CocoEval {
    /// pycocotools' 12-line summary.
    pub fn summary(&self) -> String {
        let rows: [(bool, Option<f64>, &str, usize); 12] = [
            (true, None, "all", 100),
            (true, Some(0.5), "all", 100),
            (true, Some(0.75), "all", 100),
            (true, None, "small", 100),
            (true, None, "medium", 100),
            (true, None, "large", 100),
            (false, None, "all", 1),
            (false, None, "all", 10),
            (false, None, "all", 100),
            (false, None, "small", 100),
            (false, None, "medium", 100),
            (false, None, "large", 100),
        ];
        let mut out = String::new();
        for ((is_ap, thr, area, max_det), v) in rows.iter().zip(self.stats) {
            let (title, kind) = if *is_ap { ("Average Precision", "(AP)") } else { ("Average Recall", "(AR)") };
            let iou = thr.map_or("0.50:0.95".to_string(), |t| format!("{t:0.2}"));
            let _ = writeln!(
                out,
                " {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_det:>3} ] = {v:0.3}"
            );
        }
        out
    }

    /// Per-class precision at IoU 0.5 on the 101 recall points (area all, 100 detections),
    /// for the PR-curve plot; -1 where undefined.
    pub fn pr_curves(&self) -> Vec<Vec<f64>> {
        let m = MAX_DETS.len();
        (0..self.num_classes)
            .map(|k| (0..R).map(|r| self.precision[((r * self.num_classes + k) * A) * m + 2]).collect())
            .collect()
    }

    /// `{"AP": .., "AP50": .., ...}`
    pub fn stats_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            STAT_NAMES.iter().zip(self.stats).map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy() {
        let t = linspace(0.5, 0.95, 10);
        assert_eq!(t[0], 0.5);
        assert_eq!(t[5], 0.75);
        assert_eq!(t[9], 0.95);
        let r = linspace(0.0, 1.0, 101);
        assert_eq!(r[100], 1.0);
        assert_eq!(r[1], 0.01);
    }

    #[test]
    fn crowd_iou_uses_the_detection_area() {
        let d = [0.0, 0.0, 10.0, 10.0];
        let g = [0.0, 0.0, 100.0, 100.0];
        assert_eq!(coco_iou(&d, &g, true), 1.0);
        assert_eq!(coco_iou(&d, &g, false), 0.01);
        assert_eq!(coco_iou(&d, &[20.0, 0.0, 5.0, 5.0], false), 0.0);
    }

    #[test]
    fn perfect_detections_score_one() {
        let gt = GroundTruth {
            image_ids: vec![1, 2],
            categories: vec![(3, "a".into())],
            boxes: vec![
                GtBox {
                    id: 1,
                    image_id: 1,
                    category_id: 3,
                    bbox: [10.0, 10.0, 50.0, 50.0],
                    area: 2500.0,
                    iscrowd: false,
                },
                GtBox {
                    id: 2,
                    image_id: 2,
                    category_id: 3,
                    bbox: [0.0, 0.0, 200.0, 100.0],
                    area: 20000.0,
                    iscrowd: false,
                },
            ],
        };
        let dets: Vec<DetBox> = gt
            .boxes
            .iter()
            .map(|g| DetBox { image_id: g.image_id, category_id: 3, bbox: g.bbox, score: 0.9 })
            .collect();
        let e = evaluate(&gt, &dets).unwrap();
        assert_eq!(e.stats[0], 1.0);
        assert_eq!(e.stats[3], -1.0); // no small objects
        assert_eq!(e.per_class[0].ap50, 1.0);
        assert!(evaluate(&gt, &[DetBox { image_id: 9, ..dets[0] }]).is_err());
    }
}
