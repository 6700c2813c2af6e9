//! DOTA mAP against mmrotate's `eval_rbbox_map` on the synthetic set of
//! `../shared/reference/rotated/map/dota_map_synthetic.json` (3 images, 4 classes: one class
//! with only false positives, one without ground truth, ignored objects with detections on
//! them), for VOC07 11-point at IoU 0.5 and 0.75 and area AP at 0.5: per-image tp/fp, per-class
//! recall, precision and AP, and the mAP, all exact.

use rtmdet::eval::dota::{ApMode, RotatedDetections, RotatedGroundTruth, evaluate, tpfp};
use rtmdet::structures::rotated::RBox;
use serde_json::Value;

use crate::common::reference;

fn rbox(v: &Value) -> RBox {
    let n: Vec<f32> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    [n[0], n[1], n[2], n[3], n[4]]
}

fn labels(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn ground_truth(ann: &Value) -> RotatedGroundTruth {
    let mut g = RotatedGroundTruth::default();
    for (boxes, labs, ignored) in [("bboxes", "labels", false), ("bboxes_ignore", "labels_ignore", true)] {
        for (b, l) in ann[boxes].as_array().unwrap().iter().zip(labels(&ann[labs])) {
            g.boxes.push(rbox(b));
            g.labels.push(l);
            g.ignored.push(ignored);
        }
    }
    g
}

fn detections(per_class: &Value) -> RotatedDetections {
    let mut d = RotatedDetections::default();
    for (c, rows) in per_class.as_array().unwrap().iter().enumerate() {
        for r in rows.as_array().unwrap() {
            d.boxes.push(rbox(r));
            d.scores.push(r[5].as_f64().unwrap());
            d.labels.push(c);
        }
    }
    d
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn dota_map_matches_mmrotate() {
    let path = reference("rotated/map/dota_map_synthetic.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let gts: Vec<RotatedGroundTruth> = v["annotations"].as_array().unwrap().iter().map(ground_truth).collect();
    let dets: Vec<RotatedDetections> = v["det_results"].as_array().unwrap().iter().map(detections).collect();
    let num_classes = v["det_results"][0].as_array().unwrap().len();

    // Per image and class at IoU 0.5, in the detections' own order.
    for (i, (d, g)) in dets.iter().zip(&gts).enumerate() {
        for c in 0..num_classes {
            let pick: Vec<usize> = (0..d.labels.len()).filter(|&k| d.labels[k] == c).collect();
            let boxes: Vec<RBox> = pick.iter().map(|&k| d.boxes[k]).collect();
            let scores: Vec<f64> = pick.iter().map(|&k| d.scores[k]).collect();
            let objects: Vec<(RBox, bool)> =
                (0..g.labels.len()).filter(|&j| g.labels[j] == c).map(|j| (g.boxes[j], g.ignored[j])).collect();
            let (tp, fp) = tpfp(&boxes, &scores, &objects, 0.5);
            let want = &v["tpfp_iou0_5"][format!("c{c}_img{i}")];
            let as_f32 = |x: &Value| floats(x).into_iter().map(|f| f as f32).collect::<Vec<f32>>();
            assert_eq!((tp, fp), (as_f32(&want["tp"]), as_f32(&want["fp"])), "class {c}, image {i}");
        }
    }

    for (name, setting) in v["results"].as_object().unwrap() {
        let iou = setting["kwargs"]["iou_thr"].as_f64().unwrap() as f32;
        let mode =
            if setting["kwargs"]["use_07_metric"].as_bool().unwrap() { ApMode::ElevenPoints } else { ApMode::Area };
        let ours = evaluate(&dets, &gts, num_classes, iou, mode);
        for (c, (got, want)) in ours.classes.iter().zip(setting["classes"].as_array().unwrap()).enumerate() {
            assert_eq!(got.num_gts as u64, want["num_gts"].as_u64().unwrap(), "{name} class {c}");
            assert_eq!(got.num_dets as u64, want["num_dets"].as_u64().unwrap(), "{name} class {c}");
            assert_eq!(got.recall, floats(&want["recall"]), "{name} class {c} recall");
            let precision: Vec<f64> = got.precision.iter().map(|&p| p as f64).collect();
            assert_eq!(precision, floats(&want["precision"]), "{name} class {c} precision");
            assert_eq!(got.ap as f64, want["ap"].as_f64().unwrap(), "{name} class {c} AP");
        }
        println!("{name}: mAP {} (mmrotate {})", ours.map, setting["mAP"]);
        assert_eq!(ours.map as f64, setting["mAP"].as_f64().unwrap(), "{name} mAP");
    }
}
