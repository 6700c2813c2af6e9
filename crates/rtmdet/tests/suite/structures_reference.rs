//! Reference tests for `structures::rotated` (mmcv 2.0.1 / mmrotate 1.0.0rc1 CPU, from
//! `shared/reference/rotated`) and `structures::mask` (pycocotools 2.0.11, from
//! `tests/data/masks/fixtures.json`, made by `tools/gen_mask_fixtures.py`).
//!
//! Measured agreement (all comparisons below are exact; no tolerance is used anywhere):
//! * `box_iou_rotated` (iou, iof, clockwise=False, aligned iou/iof) and mmrotate
//!   `rbbox_overlaps` on `standalone/rot_00..14`: bit-identical f32 (max |diff| = 0), the
//!   kernel quirks of `rot_04`, `rot_05`, `rot_07` and `rot_14` included.
//! * `nms_rotated` keep/dets and the IoU matrices of `rot_15..19`, `batched_nms` of
//!   `rot_19`/`rot_20` (keep, dets, `max_coordinate`, `offsets`): identical.
//! * Extra: the class-aware NMS of both seed-1 inference runs (5255 / 5300 boxes, input and
//!   original space) keeps the same indices in the same order, and the assigner IoUs of the
//!   training step (2 x 21504 x 9) and the loss-pair IoUs are bit-identical.
//! * Masks: counts, strings, areas and bboxes equal; IoUs equal as f64 (checked to 1e-12,
//!   observed 0).
//!
//! Checked once outside this suite (not reproducible here without a C++ toolchain and
//! pycocotools): 700 000 random and near-degenerate box pairs (coincident boxes in other
//! representations, 1e-4-scaled boxes, 1e4-px coordinates, 722 hulls of more than 17 points,
//! i.e. through the introsort branch of `std::sort`) bit-equal to mmcv v2.0.1's header compiled
//! with g++ 12 -O3; 3 600 random polygons (to 700x700 px, coordinates to ±1e5), 2 925 random
//! RLE strings (numbers of up to 9 characters) and 300 IoU sets equal to pycocotools 2.0.11.

use ndarray::ArrayD;
use ndarray_npy::NpzReader;
use rtmdet::structures::mask::*;
use rtmdet::structures::rotated::*;
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn rotated_dir() -> PathBuf {
    Path::new(MANIFEST_DIR).join("../../../shared/reference/rotated")
}

// ----------------------------------------------------------------------------------------
// Rotated boxes
// ----------------------------------------------------------------------------------------

/// Opens `shared/reference/rotated/<rel>` (a missing file fails the test: the reference data
/// is part of the test set, never optional).
fn npz(rel: &str) -> Option<NpzReader<File>> {
    let path = rotated_dir().join(rel);
    let f = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(NpzReader::new(f).expect("npz"))
}

fn f32s(z: &mut NpzReader<File>, key: &str) -> Option<Vec<f32>> {
    let a: ArrayD<f32> = z.by_name(key).ok()?;
    Some(a.iter().copied().collect())
}

fn indices(z: &mut NpzReader<File>, key: &str) -> Vec<usize> {
    let a: ArrayD<i64> = z.by_name(key).expect(key);
    a.iter().map(|&v| v as usize).collect()
}

fn rboxes(flat: &[f32]) -> Vec<RBox> {
    flat.chunks_exact(5).map(|c| [c[0], c[1], c[2], c[3], c[4]]).collect()
}

/// `[box, score]` rows as mmcv's `dets`.
fn dets(boxes: &[RBox], scores: &[f32], keep: &[usize]) -> Vec<f32> {
    keep.iter().flat_map(|&k| boxes[k].iter().copied().chain([scores[k]])).collect()
}

/// Asserts bit equality and reports the number of differing values and their max |diff|.
fn assert_bits(case: &str, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{case} {what}: length");
    let bad: Vec<(usize, f32, f32)> =
        (0..got.len()).filter(|&i| got[i].to_bits() != want[i].to_bits()).map(|i| (i, got[i], want[i])).collect();
    let max = bad.iter().map(|&(_, g, w)| (g - w).abs()).fold(0f32, f32::max);
    assert!(
        bad.is_empty(),
        "{case} {what}: {} values differ (max {max:e}), first {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

fn standalone_names(max_index: u32) -> Vec<String> {
    let dir = rotated_dir().join("standalone");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("rot_") && n.ends_with(".npz"))
        .filter(|n| n[4..6].parse::<u32>().is_ok_and(|i| i <= max_index))
        .collect();
    names.sort();
    names
}

#[test]
fn box_iou_rotated_matches_mmcv() {
    let names = standalone_names(14);
    for name in &names {
        let Some(mut z) = npz(&format!("standalone/{name}")) else { return };
        let b1 = rboxes(&f32s(&mut z, "boxes1").unwrap());
        let b2 = rboxes(&f32s(&mut z, "boxes2").unwrap());
        let f1: Vec<RBox> = b1.iter().map(clockwise_flip).collect();
        let f2: Vec<RBox> = b2.iter().map(clockwise_flip).collect();
        assert_bits(name, "iou", &rotated_overlaps(&b1, &b2, OverlapMode::Iou), &f32s(&mut z, "iou").unwrap());
        assert_bits(name, "iof", &rotated_overlaps(&b1, &b2, OverlapMode::Iof), &f32s(&mut z, "iof").unwrap());
        assert_bits(name, "iou_ccw", &rotated_overlaps(&f1, &f2, OverlapMode::Iou), &f32s(&mut z, "iou_ccw").unwrap());
        if let Some(want) = f32s(&mut z, "iou_aligned") {
            assert_bits(name, "iou_aligned", &rotated_overlaps_aligned(&b1, &b2, OverlapMode::Iou), &want);
        }
        if let Some(want) = f32s(&mut z, "iof_aligned") {
            assert_bits(name, "iof_aligned", &rotated_overlaps_aligned(&b1, &b2, OverlapMode::Iof), &want);
        }
        let want = f32s(&mut z, "rbbox_overlaps").unwrap();
        assert_bits(name, "rbbox_overlaps", &rbbox_overlaps(&b1, &b2, OverlapMode::Iou, false), &want);
    }
    if !names.is_empty() {
        assert_eq!(names.len(), 15, "expected rot_00..rot_14");
    }
}

#[test]
fn nms_rotated_matches_mmcv() {
    let names: Vec<String> =
        standalone_names(19).into_iter().filter(|n| n[4..6].parse::<u32>().unwrap() >= 15).collect();
    for name in &names {
        let Some(mut z) = npz(&format!("standalone/{name}")) else { return };
        let boxes = rboxes(&f32s(&mut z, "boxes").unwrap());
        let scores = f32s(&mut z, "scores").unwrap();
        let thr = f32s(&mut z, "iou_threshold").unwrap()[0];
        let matrix = f32s(&mut z, "iou_matrix").unwrap();
        assert_bits(name, "iou_matrix", &rotated_overlaps(&boxes, &boxes, OverlapMode::Iou), &matrix);
        let keep = nms_rotated(&boxes, &scores, thr);
        assert_eq!(keep, indices(&mut z, "keep"), "{name} keep");
        assert_eq!(dets(&boxes, &scores, &keep), f32s(&mut z, "dets").unwrap(), "{name} dets");
        if z.names().unwrap().iter().any(|n| n.starts_with("batched_keep")) {
            // rot_19: `nms_rotated(..., labels)` on CPU ignores the labels (checked above
            // against plain NMS); `batched_nms` is the class-aware one.
            let labels = indices(&mut z, "labels");
            let keep = batched_nms_rotated(&boxes, &scores, &labels, thr);
            assert_eq!(keep, indices(&mut z, "batched_keep"), "{name} batched_keep");
            assert_eq!(dets(&boxes, &scores, &keep), f32s(&mut z, "batched_dets").unwrap(), "{name} batched_dets");
        }
    }
    if !names.is_empty() {
        assert_eq!(names.len(), 5, "expected rot_15..rot_19");
    }
}

#[test]
fn batched_nms_rotated_matches_mmcv() {
    let Some(mut z) = npz("standalone/rot_20_batched_nms_rotated.npz") else { return };
    let boxes = rboxes(&f32s(&mut z, "boxes").unwrap());
    let scores = f32s(&mut z, "scores").unwrap();
    let labels = indices(&mut z, "labels");
    let (max_coordinate, offsets) = batched_nms_offsets(&boxes, &labels);
    assert_eq!(max_coordinate.to_bits(), f32s(&mut z, "max_coordinate").unwrap()[0].to_bits());
    assert_bits("rot_20", "offsets", &offsets, &f32s(&mut z, "offsets").unwrap());
    let keep = batched_nms_rotated(&boxes, &scores, &labels, 0.1);
    assert_eq!(keep, indices(&mut z, "keep"));
    assert_eq!(dets(&boxes, &scores, &keep), f32s(&mut z, "dets").unwrap());
}

/// The post-processing NMS of the seed-1 inference runs: `pre_*` filtered to w, h > 0, then
/// class-aware `nms_rotated` at IoU 0.1, in input space (`nms_keep`) and original space
/// (`cfg_nms_keep`, whose boxes are stored; scores and labels are the same rows).
#[test]
fn inference_nms_matches_mmrotate() {
    for image in ["aerial_demo", "dota_demo"] {
        let Some(mut z) = npz(&format!("infer/rotated_rtmdet_tiny_ref_seed1__{image}.npz")) else { return };
        let pre = rboxes(&f32s(&mut z, "pre_bboxes").unwrap());
        let pre_scores = f32s(&mut z, "pre_scores").unwrap();
        let pre_labels = indices(&mut z, "pre_labels");
        let valid: Vec<usize> = (0..pre.len()).filter(|&i| pre[i][2] > 0.0 && pre[i][3] > 0.0).collect();
        let scores: Vec<f32> = valid.iter().map(|&i| pre_scores[i]).collect();
        let labels: Vec<usize> = valid.iter().map(|&i| pre_labels[i]).collect();
        for (boxes_key, keep_key) in [("nms_in_bboxes", "nms_keep"), ("cfg_nms_in_bboxes", "cfg_nms_keep")] {
            let boxes = rboxes(&f32s(&mut z, boxes_key).unwrap());
            assert_eq!(boxes.len(), valid.len());
            let keep = batched_nms_rotated(&boxes, &scores, &labels, 0.1);
            assert_eq!(keep, indices(&mut z, keep_key), "{image} {keep_key}");
        }
    }
}

/// `RBboxOverlaps2D` of the assigner and `box_iou_rotated(aligned=True)` of the loss pairs.
#[test]
fn training_ious_match_mmrotate() {
    let Some(mut z) = npz("train/rotated_rtmdet_tiny_ref_seed1_batch2.npz") else { return };
    for b in 0..2 {
        let pred = rboxes(&f32s(&mut z, &format!("assign{b}_bboxes")).unwrap());
        let gt = rboxes(&f32s(&mut z, &format!("assign{b}_gt_bboxes")).unwrap());
        let want = f32s(&mut z, &format!("assign{b}_ious")).unwrap();
        assert_bits("train", &format!("assign{b}_ious"), &rbbox_overlaps(&pred, &gt, OverlapMode::Iou, false), &want);
    }
    for l in 0..3 {
        let pred = rboxes(&f32s(&mut z, &format!("lbbox_pred_l{l}")).unwrap());
        let target = rboxes(&f32s(&mut z, &format!("lbbox_target_l{l}")).unwrap());
        let want = f32s(&mut z, &format!("lbbox_iou_box_iou_rotated_l{l}")).unwrap();
        assert_bits(
            "train",
            &format!("lbbox_iou_l{l}"),
            &rotated_overlaps_aligned(&pred, &target, OverlapMode::Iou),
            &want,
        );
    }
}

// ----------------------------------------------------------------------------------------
// Masks
// ----------------------------------------------------------------------------------------

fn fixture() -> Value {
    let path = Path::new(MANIFEST_DIR).join("tests/data/masks/fixtures.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture json")
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().expect("unsigned integer") as usize
}

fn str_of(v: &Value) -> &str {
    v.as_str().expect("string")
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|c| c.as_u64().expect("count") as u32).collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|c| c.as_f64().expect("number")).collect()
}

fn hw(case: &Value) -> (usize, usize) {
    (usize_of(&case["h"]), usize_of(&case["w"]))
}

/// Row-major bitmap from the fixture's hex of `numpy.packbits` (MSB first).
fn bitmap_from_hex(hex: &str, h: usize, w: usize) -> Bitmap {
    let bytes: Vec<u8> = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    let data = (0..h * w).map(|i| (bytes[i / 8] >> (7 - i % 8)) & 1).collect();
    Bitmap { height: h, width: w, data }
}

fn rle_from_string(case_size: &Value, s: &str) -> Rle {
    let size = case_size.as_array().unwrap();
    from_compressed(s, usize_of(&size[0]), usize_of(&size[1])).expect("valid string")
}

#[test]
fn mask_encode_decode_match_pycocotools() {
    let fx = fixture();
    for (i, case) in fx["encode"].as_array().unwrap().iter().enumerate() {
        let (h, w) = hw(case);
        let bitmap = bitmap_from_hex(str_of(&case["bits"]), h, w);
        let rle = encode(&bitmap);
        assert_eq!(rle.counts, u32s(&case["counts"]), "encode {i}");
        assert_eq!(to_compressed(&rle), str_of(&case["string"]), "string {i}");
        assert_eq!(from_compressed(str_of(&case["string"]), h, w).unwrap(), rle, "parse {i}");
        assert_eq!(decode(&rle).unwrap(), bitmap, "decode {i}");
        assert_eq!(area(&rle), case["area"].as_u64().unwrap(), "area {i}");
        assert_eq!(to_bbox(&rle).to_vec(), f64s(&case["bbox"]), "bbox {i}");
    }
}

#[test]
fn mask_polygons_match_pycocotools() {
    let fx = fixture();
    let mut errors = 0;
    for (i, case) in fx["polygons"].as_array().unwrap().iter().enumerate() {
        let (h, w) = hw(case);
        let polys: Vec<Vec<f64>> = case["polys"].as_array().unwrap().iter().map(f64s).collect();
        let merged = Segmentation::Polygons(polys.clone()).to_rle(h, w);
        if case.get("error").is_some() {
            assert!(merged.is_err(), "polygon case {i} should be rejected: {polys:?}");
            errors += 1;
            continue;
        }
        let merged = merged.unwrap_or_else(|e| panic!("polygon case {i}: {e}"));
        for (j, part) in case["parts"].as_array().unwrap().iter().enumerate() {
            let rle = from_polygon(&polys[j], h, w).unwrap();
            assert_eq!(to_compressed(&rle), str_of(part), "polygon case {i} part {j}: {:?}", polys[j]);
        }
        assert_eq!(to_compressed(&merged), str_of(&case["merged"]), "polygon case {i} merged");
        assert_eq!(area(&merged), case["merged_area"].as_u64().unwrap(), "polygon case {i} area");
        assert_eq!(to_bbox(&merged).to_vec(), f64s(&case["merged_bbox"]), "polygon case {i} bbox");
    }
    assert!(errors >= 3);
}

#[test]
fn mask_bboxes_match_pycocotools() {
    let fx = fixture();
    for (i, case) in fx["bboxes"].as_array().unwrap().iter().enumerate() {
        let (h, w) = hw(case);
        let b = f64s(&case["bbox"]);
        let rle = from_bbox([b[0], b[1], b[2], b[3]], h, w).unwrap();
        assert_eq!(to_compressed(&rle), str_of(&case["string"]), "bbox case {i}: {b:?}");
        assert_eq!(area(&rle), case["area"].as_u64().unwrap(), "bbox case {i} area");
    }
}

#[test]
fn mask_merge_matches_pycocotools() {
    let fx = fixture();
    for (i, case) in fx["merge"].as_array().unwrap().iter().enumerate() {
        let (h, w) = hw(case);
        let rles: Vec<Rle> =
            case["inputs"].as_array().unwrap().iter().map(|s| from_compressed(str_of(s), h, w).unwrap()).collect();
        assert_eq!(to_compressed(&merge(&rles, false).unwrap()), str_of(&case["union"]), "union {i}");
        assert_eq!(to_compressed(&merge(&rles, true).unwrap()), str_of(&case["intersection"]), "intersection {i}");
    }
}

#[test]
fn mask_iou_matches_pycocotools() {
    let fx = fixture();
    let mut max_diff = 0f64;
    for (i, case) in fx["iou"].as_array().unwrap().iter().enumerate() {
        let list = |key: &str| -> Vec<Rle> {
            case[key].as_array().unwrap().iter().map(|r| rle_from_string(&r["size"], str_of(&r["string"]))).collect()
        };
        let (dt, gt) = (list("dt"), list("gt"));
        let crowd: Vec<bool> = case["iscrowd"].as_array().unwrap().iter().map(|c| c.as_bool().unwrap()).collect();
        let want: Vec<f64> = case["iou"].as_array().unwrap().iter().flat_map(f64s).collect();
        let got = rle_iou(&dt, &gt, &crowd);
        assert_eq!(got.len(), want.len(), "iou case {i}");
        for (g, w) in got.iter().zip(&want) {
            max_diff = max_diff.max((g - w).abs());
            assert!((g - w).abs() <= 1e-12, "iou case {i}: {got:?} vs {want:?}");
        }
    }
    eprintln!("mask IoU max |diff| = {max_diff:e}");
}

#[test]
fn mask_uncompressed_counts_match_pycocotools() {
    let fx = fixture();
    for (i, case) in fx["counts"].as_array().unwrap().iter().enumerate() {
        let (h, w) = hw(case);
        let counts = u32s(&case["counts"]);
        let seg = Segmentation::Uncompressed { size: [h, w], counts: counts.clone() };
        let rle = seg.to_rle(h, w).unwrap();
        assert_eq!(to_compressed(&rle), str_of(&case["string"]), "counts case {i}");
        assert_eq!(from_compressed(str_of(&case["string"]), h, w).unwrap().counts, counts, "parse {i}");
        assert_eq!(area(&rle), case["area"].as_u64().unwrap(), "area {i}");
        assert_eq!(to_bbox(&rle).to_vec(), f64s(&case["bbox"]), "bbox {i}");
        let compressed = Segmentation::Compressed { size: [h, w], counts: str_of(&case["string"]).to_string() };
        assert_eq!(compressed.to_rle(h, w).unwrap(), rle, "compressed segmentation {i}");
    }
}
