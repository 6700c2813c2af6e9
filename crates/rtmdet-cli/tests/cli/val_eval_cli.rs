//! `rtmdet val` and `rtmdet eval` end to end.

use std::path::{Path, PathBuf};

use crate::common::{coco8_yaml, predict_with_eval_settings, read_json, rtmdet, shared, tmp};
use serde_json::Value;

#[test]
fn val_on_coco8_writes_the_run_folder_and_agrees_with_predict() {
    let dir = tmp("coco8");
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "val");
    let out = dir.join("run");
    let weights = shared("reference/checkpoints/rtmdet_tiny_ref_seed1.pth");
    let o = rtmdet(&[
        "val",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        yaml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"));
    assert!(stdout.contains("Speed:") && stdout.contains("person"));
    for f in ["predictions.json", "metrics.json", "pr_curve.png", "confusion_matrix.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let metrics = read_json(&out.join("metrics.json"));
    for k in ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"] {
        assert!(metrics[k].is_number(), "{k}");
    }

    // predict with the evaluation settings gives the same detections.
    let predicted = predict_with_eval_settings(&shared("assets/coco8/images/val"), &dir.join("predict.json"));
    let preds = read_json(&out.join("predictions.json"));
    let preds = preds.as_array().unwrap();
    let mut total = 0;
    for img in predicted.as_array().unwrap() {
        let stem: u64 =
            Path::new(img["image"].as_str().unwrap()).file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let ours: Vec<&Value> = preds.iter().filter(|p| p["image_id"].as_u64() == Some(stem)).collect();
        let dets = img["detections"].as_array().unwrap();
        assert_eq!(ours.len(), dets.len(), "image {stem}");
        for (p, d) in ours.iter().zip(dets) {
            let b: Vec<f64> = d["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let q: Vec<f64> = p["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(p["category_id"].as_u64(), d["label"].as_u64());
            assert_eq!(p["score"].as_f64().unwrap() as f32, d["score"].as_f64().unwrap() as f32);
            assert_eq!((q[0] as f32, q[1] as f32), (b[0] as f32, b[1] as f32));
            assert!((q[2] - (b[2] - b[0])).abs() < 1e-4 && (q[3] - (b[3] - b[1])).abs() < 1e-4);
        }
        total += dets.len();
    }
    assert!(total > 0);
}

#[test]
fn val_reports_malformed_labels_with_file_and_line() {
    let dir = tmp("bad-labels");
    let root = dir.join("ds");
    std::fs::create_dir_all(root.join("images/val")).unwrap();
    std::fs::create_dir_all(root.join("labels/val")).unwrap();
    std::fs::copy(shared("assets/coco8/images/val/000000000049.jpg"), root.join("images/val/a.jpg")).unwrap();
    std::fs::write(root.join("labels/val/a.txt"), "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n").unwrap();
    let yaml = coco8_yaml(&dir, &root, "val");
    let o = rtmdet(&[
        "val",
        "--weights",
        shared("reference/checkpoints/rtmdet_tiny_ref_seed1.pth").to_str().unwrap(),
        "--data",
        yaml.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("a.txt:2") && err.contains("got 4"), "{err}");
}

#[test]
fn eval_matches_pycocotools_and_writes_json() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rtmdet/tests/data/coco_eval");
    let out = tmp("eval").join("stats.json");
    let o = rtmdet(&[
        "eval",
        "--gt",
        data.join("crowd_gt.json").to_str().unwrap(),
        "--pred",
        data.join("crowd_pred.json").to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 12);
    let stats = read_json(&out);
    let expected = read_json(&data.join("crowd_expected.json"));
    let keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"];
    for (i, k) in keys.iter().enumerate() {
        let (a, b) = (stats[k].as_f64().unwrap(), expected["stats"][i].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{k}: {a} vs {b}");
    }
    let o = rtmdet(&["eval", "--gt", data.join("crowd_gt.json").to_str().unwrap(), "--pred", "missing.json"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing.json"));
}

/// COCO box evaluation of a rotated model is refused before anything is written.
#[test]
fn val_with_a_rotated_model_is_a_clear_error_and_writes_nothing() {
    let dir = tmp("val-rotated");
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "val");
    let out = dir.join("run");
    let weights = shared("reference/rotated/checkpoints/rotated_rtmdet_tiny_ref_seed1.pth");
    let o = rtmdet(&[
        "val",
        "--data",
        yaml.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("rotated model"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists(), "no run folder for a refused evaluation");
}

/// RTMDet-Ins through `val`: ground truth made from the model's own `predict` output (with the
/// Ins evaluation thresholds, masks as COCO compressed RLE) is found again — box AP50 1; mask
/// AP below 1 only because the seeded model predicts some empty masks, which pycocotools
/// scores as IoU 0 even against themselves (0.859 there, as pycocotools computes on these
/// files) — both 12-line summaries and the per-class table are printed, `predictions.json`
/// carries exactly `predict`'s masks, and `rtmdet eval --iou-type segm` on it reproduces
/// `metrics.json`'s mask numbers.
#[test]
fn val_with_an_ins_model_reports_box_and_mask_map() {
    let dir = tmp("ins-val");
    let images = shared("assets/coco8/images/val");
    let weights = shared("reference/checkpoints/rtmdet_ins_tiny_ref_seed1.pth");
    let pred = dir.join("predict.json");
    let o = rtmdet(
        &["predict", images.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "--no-draw"]
            .into_iter()
            .chain(["--conf", "0.05", "--iou", "0.6", "--save-json", pred.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let predicted = read_json(&pred);
    let (mut imgs, mut anns) = (Vec::new(), Vec::new());
    for (i, p) in predicted.as_array().unwrap().iter().enumerate() {
        let name = Path::new(p["image"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
        imgs.push(serde_json::json!({"id": i + 1, "file_name": name, "width": p["width"], "height": p["height"]}));
        // Every detection becomes ground truth, boxes reaching outside the image included: `val`
        // scores against the COCO file's own annotations, as pycocotools and mmdet do.
        for d in p["detections"].as_array().unwrap() {
            let b: Vec<f64> = d["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let seg = &d["segmentation"];
            let rle = rtmdet::structures::mask::from_compressed(
                seg["counts"].as_str().unwrap(),
                seg["size"][0].as_u64().unwrap() as usize,
                seg["size"][1].as_u64().unwrap() as usize,
            )
            .unwrap();
            anns.push(serde_json::json!({
                "id": anns.len() + 1, "image_id": i + 1, "category_id": d["label"].as_u64().unwrap() + 1,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": rtmdet::structures::mask::area(&rle),
                "iscrowd": 0, "segmentation": seg,
            }));
        }
    }
    let cats: Vec<Value> =
        rtmdet::classes::COCO.iter().enumerate().map(|(i, n)| serde_json::json!({"id": i + 1, "name": n})).collect();
    let gt = dir.join("gt.json");
    let gt_json = serde_json::json!({"images": imgs, "annotations": anns, "categories": cats});
    std::fs::write(&gt, gt_json.to_string()).unwrap();
    let out = dir.join("run");
    let o = rtmdet(
        &["val", "--weights", weights.to_str().unwrap(), "--data", gt.to_str().unwrap()]
            .into_iter()
            .chain(["--images", images.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("bbox:") && stdout.contains("segm:") && stdout.contains("mask AP50"), "{stdout}");
    let metrics = read_json(&out.join("metrics.json"));
    let (box_ap, mask_ap) = (metrics["AP50"].as_f64().unwrap(), metrics["segm"]["AP50"].as_f64().unwrap());
    assert!(box_ap > 0.99 && mask_ap > 0.8, "box AP50 {box_ap}, mask AP50 {mask_ap}");
    let preds = read_json(&out.join("predictions.json"));
    let first_image: Vec<&Value> = preds.as_array().unwrap().iter().filter(|p| p["image_id"] == 1).collect();
    for (v, p) in first_image.iter().zip(predicted[0]["detections"].as_array().unwrap()) {
        assert_eq!(v["segmentation"], p["segmentation"], "val and predict give the same masks");
    }
    let o = rtmdet(
        &["eval", "--gt", gt.to_str().unwrap(), "--pred", out.join("predictions.json").to_str().unwrap()]
            .into_iter()
            .chain(["--iou-type", "segm", "--json", dir.join("segm.json").to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let segm = read_json(&dir.join("segm.json"));
    for k in ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"] {
        let (a, b) = (segm[k].as_f64().unwrap(), metrics["segm"][k].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-12, "{k}: eval {a} vs val {b}");
    }
}
