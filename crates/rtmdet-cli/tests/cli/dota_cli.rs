//! RTMDet-R's DOTA commands: `eval --format dota`, `dota-split`.

use std::path::Path;

use crate::common::*;

/// The corners of a rotated box (`rbox2qbox` order) as a DOTA quad line.
fn quad_text(b: &[f64]) -> String {
    let (c, s) = (b[4].cos(), b[4].sin());
    let v1 = [b[2] / 2.0 * c, b[2] / 2.0 * s];
    let v2 = [-b[3] / 2.0 * s, b[3] / 2.0 * c];
    let pts = [
        [b[0] + v1[0] + v2[0], b[1] + v1[1] + v2[1]],
        [b[0] + v1[0] - v2[0], b[1] + v1[1] - v2[1]],
        [b[0] - v1[0] - v2[0], b[1] - v1[1] - v2[1]],
        [b[0] - v1[0] + v2[0], b[1] - v1[1] + v2[1]],
    ];
    pts.iter().map(|p| format!("{:?} {:?}", p[0], p[1])).collect::<Vec<_>>().join(" ")
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
}

/// Writes mmrotate's synthetic `eval_rbbox_map` set as DOTA files: `labelTxt/` (ignored
/// objects as difficulty 1) and `Task1_<class>.txt` predictions, classes = the first four of
/// DOTA-v1.0.
fn write_synthetic_set(dir: &Path) -> serde_json::Value {
    let set = read_json(&shared("reference/rotated/map/dota_map_synthetic.json"));
    let classes = &rtmdet::classes::DOTA[..4];
    let (gt, pred) = (dir.join("labelTxt"), dir.join("pred"));
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    let mut task1 = vec![String::new(); 4];
    for (i, ann) in set["annotations"].as_array().unwrap().iter().enumerate() {
        let mut text = String::from("imagesource:synthetic\ngsd:0.5\n");
        for (key, labels, diff) in [("bboxes", "labels", 0), ("bboxes_ignore", "labels_ignore", 1)] {
            for (b, l) in rows(&ann[key]).iter().zip(ann[labels].as_array().unwrap()) {
                text.push_str(&format!("{} {} {diff}\n", quad_text(b), classes[l.as_u64().unwrap() as usize]));
            }
        }
        std::fs::write(gt.join(format!("img{i}.txt")), text).unwrap();
        for (c, dets) in set["det_results"][i].as_array().unwrap().iter().enumerate() {
            for d in rows(dets) {
                task1[c].push_str(&format!("img{i} {:?} {}\n", d[5], quad_text(&d)));
            }
        }
    }
    for (c, text) in task1.iter().enumerate() {
        std::fs::write(pred.join(format!("Task1_{}.txt", classes[c])), text).unwrap();
    }
    set
}

/// `rtmdet eval --format dota` on mmrotate's synthetic set gives `eval_rbbox_map`'s mAP for
/// VOC07 and area AP at IoU 0.5 and 0.75. The files carry the boxes as quads, so every box
/// passes through `minAreaRect` (f32) on the way in; 1e-6 is the f32 resolution of an AP.
#[test]
fn eval_dota_matches_mmrotate_eval_rbbox_map() {
    let dir = tmp("dota-eval");
    let set = write_synthetic_set(&dir);
    let classes = rtmdet::classes::DOTA[..4].join(",");
    for (setting, iou, mode) in
        [("voc07_iou0.5", "0.5", "11points"), ("area_iou0.5", "0.5", "area"), ("voc07_iou0.75", "0.75", "11points")]
    {
        let json = dir.join(format!("{setting}.json"));
        let o = rtmdet(&[
            "eval",
            "--format",
            "dota",
            "--gt",
            dir.join("labelTxt").to_str().unwrap(),
            "--pred",
            dir.join("pred").to_str().unwrap(),
            "--classes",
            &classes,
            "--iou-thr",
            iou,
            "--ap-mode",
            mode,
            "--json",
            json.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours = read_json(&json);
        let want = &set["results"][setting];
        let (m, w) = (ours["mAP"].as_f64().unwrap(), want["mAP"].as_f64().unwrap());
        println!("{setting}: mAP {m} vs mmrotate {w}\n{stdout}");
        assert!((m - w).abs() <= 1e-6, "{setting}: {m} vs {w}");
        for (c, wc) in ours["per_class"].as_array().unwrap().iter().zip(want["classes"].as_array().unwrap()) {
            assert_eq!(c["gts"], wc["num_gts"], "{setting}: gts");
            assert_eq!(c["dets"], wc["num_dets"], "{setting}: dets");
            assert!((c["ap"].as_f64().unwrap() - wc["ap"].as_f64().unwrap()).abs() <= 1e-6, "{setting}: {c} vs {wc}");
        }
    }
}

/// Bad prediction rows are reported with file and line, the rest is scored; `--json` refuses
/// to overwrite an input.
#[test]
fn eval_dota_reports_bad_rows_and_protects_inputs() {
    let dir = tmp("dota-eval-bad");
    write_synthetic_set(&dir);
    let pred = dir.join("pred");
    let plane = pred.join("Task1_plane.txt");
    let mut text = std::fs::read_to_string(&plane).unwrap();
    text.push_str("img0 0.5 1 2 3\nimg0 high 1 2 3 4 5 6 7 8\nnot_an_image 0.9 0 0 10 0 10 10 0 10\n");
    std::fs::write(&plane, text).unwrap();
    let classes = rtmdet::classes::DOTA[..4].join(",");
    let gt = dir.join("labelTxt");
    let args = [
        "eval",
        "--format",
        "dota",
        "--gt",
        gt.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
        "--classes",
        &classes,
    ];
    let o = rtmdet(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("Task1_plane.txt:") && err.contains("got 5"), "{err}");
    assert!(err.contains("'high'"), "{err}");
    assert!(err.contains("1 detections name images that have no label file"), "{err}");
    let mut with_json = args.to_vec();
    with_json.extend(["--json", plane.to_str().unwrap()]);
    let o = rtmdet(&with_json);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("would overwrite an input"));
}

/// `rtmdet dota-split` writes mmrotate's annotation files for the DOTA samples (pixels are
/// checked in the library's test) and refuses a non-empty output folder.
#[test]
fn dota_split_cli_writes_mmrotate_annotation_files() {
    let out = tmp("dota-split").join("out");
    let args = [
        "dota-split",
        "--images",
        shared("assets/dota/images").to_str().unwrap().to_string().leak(),
        "--labels",
        shared("reference/rotated/split/src_labelTxt").to_str().unwrap().to_string().leak(),
        "--out",
        out.to_str().unwrap().to_string().leak(),
    ];
    let o = rtmdet(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("P0004__1__0___0.txt:4:"), "the invalid quad is named: {err}");
    let reference = shared("reference/rotated/split/annfiles");
    for entry in std::fs::read_dir(&reference).unwrap() {
        let path = entry.unwrap().path();
        let ours = std::fs::read_to_string(out.join("annfiles").join(path.file_name().unwrap())).unwrap();
        assert_eq!(ours, std::fs::read_to_string(&path).unwrap(), "{}", path.display());
        let png = out.join("images").join(path.with_extension("png").file_name().unwrap());
        assert!(png.is_file(), "{}", png.display());
    }
    let o = rtmdet(&args);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
}

/// `rtmdet val` with a rotated model on a DOTA folder is `predict` followed by DOTA mAP: the
/// ground truth is the model's own confident detections (score ≥ 0.5, as integer DOTA quads
/// from `predict --save-json`'s `poly`), and val's per-class APs equal those of the library's
/// evaluator (tested against mmrotate) on predict's JSON; the run folder has one Task1 line
/// per detection, and `--merge-patches` writes the merged submission under the source name.
#[test]
fn val_rotated_is_predict_then_dota_map() {
    let dir = tmp("dota-val");
    let root = dir.join("data");
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("labelTxt")).unwrap();
    std::fs::copy(shared("assets/dota/images/aerial_demo.jpg"), root.join("images/aerial_demo__1024__0___0.jpg"))
        .unwrap();
    let weights = shared("reference/rotated/checkpoints/rotated_rtmdet_tiny_ref_seed1.pth");
    let json = dir.join("pred.json");
    let o = rtmdet(&[
        "predict",
        root.join("images").to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--no-draw",
        "--save-json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pred = read_json(&json);
    let dets = pred[0]["detections"].as_array().unwrap();
    let mut labels = String::from("imagesource:GoogleEarth\ngsd:0.146\n");
    let mut classes = std::collections::BTreeSet::new();
    for d in dets.iter().filter(|d| d["score"].as_f64().unwrap() >= 0.5) {
        let poly: Vec<String> =
            d["poly"].as_array().unwrap().iter().map(|v| format!("{}", v.as_f64().unwrap().round())).collect();
        labels.push_str(&format!("{} {} 0\n", poly.join(" "), d["class"].as_str().unwrap()));
        classes.insert(d["class"].as_str().unwrap().to_string());
    }
    assert!(!classes.is_empty());
    std::fs::write(root.join("labelTxt/aerial_demo__1024__0___0.txt"), labels).unwrap();

    let run = dir.join("run");
    let o = rtmdet(&[
        "val",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--merge-patches",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    println!("{stdout}");
    let metrics = read_json(&run.join("metrics.json"));
    use rtmdet::eval::dota::{ApMode, RotatedDetections, evaluate};
    let names = rtmdet::classes::rotated_preset("dota");
    let gt = rtmdet::eval::dota_files::read_ground_truth(&root.join("labelTxt"), &names, 0).unwrap();
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let ours = RotatedDetections {
        boxes: dets.iter().map(|d| std::array::from_fn(|k| f(&d["rbox"][k]) as f32)).collect(),
        scores: dets.iter().map(|d| f(&d["score"]) as f32 as f64).collect(),
        labels: dets.iter().map(|d| d["label"].as_u64().unwrap() as usize).collect(),
    };
    let want = evaluate(&[ours], &gt.gts, names.len(), 0.5, ApMode::ElevenPoints);
    assert!(want.map > 0.5, "most confident detections match themselves: {}", want.map);
    assert_eq!(f(&metrics["mAP"]) as f32, want.map, "{metrics}");
    for (c, w) in metrics["per_class"].as_array().unwrap().iter().zip(&want.classes) {
        assert_eq!(c["gts"].as_u64().unwrap() > 0, classes.contains(c["class"].as_str().unwrap()), "{c}");
        assert_eq!((c["gts"].as_u64().unwrap() as usize, f(&c["ap"]) as f32), (w.num_gts, w.ap), "{c}");
    }
    let count_lines = |d: &Path| -> usize {
        std::fs::read_dir(d).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap().lines().count()).sum()
    };
    assert_eq!(count_lines(&run.join("Task1")), dets.len());
    // One patch covering its whole source: merging keeps every detection, under the source name.
    assert_eq!(count_lines(&run.join("merged")), dets.len());
    let plane = std::fs::read_to_string(run.join("merged/Task1_plane.txt")).unwrap();
    assert!(plane.lines().all(|l| l.starts_with("aerial_demo ")), "{plane}");
}
