//! The `rtmdet predict` contract: flags, run folder, and the JSON format.

use std::path::{Path, PathBuf};

use crate::common::{predict_with_eval_settings, rtmdet, shared, tiny_weights, tmp};
use serde_json::Value;

/// `(bbox, score, label)` of one image in the JSON output.
fn dets(v: &Value) -> Vec<([f64; 4], f64, u64)> {
    v["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b: Vec<f64> = d["bbox"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            ([b[0], b[1], b[2], b[3]], d["score"].as_f64().unwrap(), d["label"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn predict_writes_images_and_json_in_the_documented_format() {
    let out = tmp("run");
    let json = out.join("dets.json");
    let weights = shared("reference/checkpoints/rtmdet_tiny_ref_seed1.pth");
    let demo = shared("assets/images/demo.jpg");
    let o = rtmdet(&[
        "predict",
        demo.to_str().unwrap(),
        shared("assets/coco8/images/val").to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
        "--batch",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let images = v.as_array().unwrap();
    assert_eq!(images.len(), 5);
    let first = &images[0];
    assert_eq!(first["image"].as_str().unwrap(), demo.to_str().unwrap());
    assert_eq!((first["width"].as_u64(), first["height"].as_u64()), (Some(640), Some(427)));
    // The deploy settings give the 8 reference detections of demo, best first, with names.
    let d = dets(first);
    assert_eq!(d.len(), 8);
    assert!(d.windows(2).all(|w| w[0].1 >= w[1].1));
    assert_eq!(first["detections"][0]["class"].as_str().unwrap(), "oven");
    for name in ["demo.jpg", "000000000036.jpg", "000000000049.jpg"] {
        assert!(out.join(name).is_file(), "{name} not drawn");
    }

    // Running again into the same folder keeps the first results.
    let o = rtmdet(&[
        "predict",
        demo.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(out.join("demo.jpg").is_file() && out.join("demo_2.jpg").is_file());
}

#[test]
fn evaluation_settings_reproduce_the_config_detections() {
    let out = tmp("eval");
    let v = predict_with_eval_settings(&shared("assets/images/people.jpg"), &out.join("dets.json"));
    let d = dets(&v[0]);
    assert_eq!((v[0]["width"].as_u64(), v[0]["height"].as_u64()), (Some(1024), Some(707)));
    // Exactly what the library gives with the evaluation settings (the library is tested
    // against the reference detections).
    let det = rtmdet::Detector::from_checkpoint(shared("reference/checkpoints/rtmdet_tiny_ref_seed1.pth")).unwrap();
    let img = rtmdet::image_io::read_image(&shared("assets/images/people.jpg")).unwrap();
    let lib = det.predict_batch_with(&[img], &rtmdet::DetectParams::EVAL).unwrap().remove(0);
    assert_eq!(d.len(), 300);
    for (j, l) in d.iter().zip(lib.iter()) {
        assert_eq!(j.2, l.label as u64);
        assert_eq!(j.1 as f32, l.score);
        assert!(j.0.iter().zip(&l.bbox).all(|(a, b)| *a as f32 == *b));
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let o = rtmdet(&[
        "predict",
        "nope.jpg",
        "--weights",
        shared("reference/checkpoints/rtmdet_tiny_ref_seed1.pth").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.jpg"));
    // Without --weights the embedded model runs (`predict_without_weights_...`); an unknown
    // model name is an error that names it.
    let o = rtmdet(&["predict", shared("assets/images/demo.jpg").to_str().unwrap(), "--model", "rtmdet-huge"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("rtmdet-huge"));
    let o = rtmdet(&["predict", shared("assets/images/demo.jpg").to_str().unwrap(), "--weights", "missing.pth"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.pth"));
}

/// A rotated model: the default thresholds are RTMDet-R's, and every detection carries
/// `rbox` (cx, cy, w, h, angle), `poly` (its corners in mmrotate's order) and the enclosing
/// `bbox`, equal to what the library gives.
#[test]
fn rotated_predict_writes_rbox_poly_and_bbox() {
    let out = tmp("rotated");
    let json = out.join("dets.json");
    let weights = shared("reference/rotated/checkpoints/rotated_rtmdet_tiny_ref_seed1.pth");
    let image = shared("assets/dota/images/dota_demo.jpg");
    let o = rtmdet(&[
        "predict",
        image.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
        "--no-draw",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let d = v[0]["detections"].as_array().unwrap();
    let det = rtmdet::Detector::from_checkpoint(&weights).unwrap();
    let lib = det.predict(&rtmdet::image_io::read_image(&image).unwrap()).unwrap();
    assert_eq!(d.len(), lib.len());
    assert!(d.len() > 1000, "RTMDet-R's score threshold 0.05 and 2000 detections apply by default");
    let nums = |x: &Value| x.as_array().unwrap().iter().map(|n| n.as_f64().unwrap() as f32).collect::<Vec<f32>>();
    for (j, k) in d.iter().zip(0..lib.len()) {
        assert_eq!(nums(&j["rbox"]), lib.rboxes[k].to_vec());
        assert_eq!(nums(&j["bbox"]), lib.boxes[k].to_vec());
        let poly = nums(&j["poly"]);
        let corners = rtmdet::structures::rotated::corners(&lib.rboxes[k]);
        assert_eq!(poly, corners.as_flattened().to_vec());
        // The enclosing box is the corners' extent.
        let xs: Vec<f32> = poly.iter().step_by(2).copied().collect();
        assert_eq!(nums(&j["bbox"])[0], xs.iter().copied().fold(f32::INFINITY, f32::min));
    }
}

/// RTMDet-Ins through `predict`: every detection carries `"segmentation": {"size": [h, w],
/// "counts": ...}` as `pycocotools.mask.encode` writes it (decoding it gives the library's
/// mask for that detection), `--save-masks` writes the 16-bit instance-id map, and the
/// Ins deployment thresholds are the default.
#[test]
fn ins_predict_writes_coco_rle_masks_and_id_maps() {
    let out = tmp("ins");
    let json = out.join("dets.json");
    let weights = shared("reference/checkpoints/rtmdet_ins_tiny_ref_seed1.pth");
    let demo = shared("assets/images/demo.jpg");
    let o = rtmdet(&[
        "predict",
        demo.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
        "--save-masks",
        "--max-det",
        "5",
        "--out",
        out.join("run").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let img = rtmdet::image_io::read_image(&demo).unwrap();
    let det = rtmdet::Detector::from_checkpoint(&weights).unwrap();
    let params = rtmdet::DetectParams { max_det: 5, ..rtmdet::DetectParams::INS_DEPLOY };
    let lib = det.predict_batch_with(std::slice::from_ref(&img), &params).unwrap().remove(0);
    let got = v[0]["detections"].as_array().unwrap();
    assert_eq!(got.len(), 5);
    for (d, mask) in got.iter().zip(&lib.masks) {
        let seg = &d["segmentation"];
        assert_eq!(seg["size"], serde_json::json!([img.height, img.width]));
        let rle =
            rtmdet::structures::mask::from_compressed(seg["counts"].as_str().unwrap(), img.height, img.width).unwrap();
        assert_eq!(&rle, mask);
    }
    let ids = image::open(out.join("run/demo_masks.png")).unwrap().into_luma16();
    assert_eq!((ids.width() as usize, ids.height() as usize), (img.width, img.height));
    let first = rtmdet::structures::mask::decode(&lib.masks[0]).unwrap();
    for (k, p) in ids.pixels().enumerate() {
        assert_eq!(p.0[0] == 1, first.data[k] != 0, "pixel {k}: id 1 is exactly the best mask");
        assert!(p.0[0] <= 5);
    }
}

/// Sliced Ins prediction: one window covering the whole (640×640) image is the unsliced
/// prediction, masks included; with several windows every mask is image-sized.
#[test]
fn ins_sliced_predict_moves_masks_into_the_image() {
    let d = tmp("ins-slice");
    let square = d.join("square.png");
    let demo = image::open(shared("assets/images/demo.jpg")).unwrap();
    demo.resize_exact(640, 640, image::imageops::FilterType::Triangle).save(&square).unwrap();
    let weights = shared("reference/checkpoints/rtmdet_ins_tiny_ref_seed1.pth");
    let run = |name: &str, extra: &[&str]| -> Value {
        let json = d.join(format!("{name}.json"));
        let mut args = vec!["predict", square.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "--no-draw"];
        args.extend(extra);
        args.extend(["--save-json", json.to_str().unwrap()]);
        let o = rtmdet(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
    };
    let whole = run("whole", &[]);
    let one_window = run("one", &["--slice", "640", "--slice-overlap", "100"]);
    assert!(!whole[0]["detections"].as_array().unwrap().is_empty());
    assert_eq!(whole[0]["detections"], one_window[0]["detections"]);

    let sliced = run("sliced", &["--slice", "384", "--slice-overlap", "128"]);
    let dets = sliced[0]["detections"].as_array().unwrap();
    assert!(!dets.is_empty());
    for det in dets {
        assert_eq!(det["segmentation"]["size"], serde_json::json!([640, 640]), "{det}");
    }
}

/// The README's first command: no weights, no network, the bundled image; the embedded person
/// detector finds the skier and says which model it is.
#[test]
fn predict_without_weights_runs_the_embedded_person_detector() {
    let d = tmp("embedded");
    let image = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/person.jpg");
    let json = d.join("dets.json");
    let o = rtmdet(&[
        "predict",
        image.to_str().unwrap(),
        "--out",
        d.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("embedded RTMDet-nano person detector"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let dets = v[0]["detections"].as_array().unwrap();
    assert_eq!(dets.len(), 1, "{dets:?}");
    assert_eq!(dets[0]["class"], "person");
    assert!(dets[0]["score"].as_f64().unwrap() > 0.8);
    assert!(d.join("person.jpg").is_file());
}

/// The images a predict run reported, as paths relative to `root`.
fn reported_images(json: &Path, root: &Path) -> Vec<String> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let images = v.as_array().unwrap().iter().map(|r| PathBuf::from(r["image"].as_str().unwrap()));
    images.map(|p| p.strip_prefix(root).unwrap().display().to_string()).collect()
}

/// Folders (recursive on request), glob patterns and lists of paths all name the images to
/// predict; a missing listed file is skipped (exit code 3) and the rest is still predicted.
#[test]
fn predict_takes_folders_globs_and_lists() {
    let d = tmp("sources");
    let root = d.join("imgs");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::copy(shared("assets/images/demo.jpg"), root.join("a.jpg")).unwrap();
    std::fs::copy(shared("assets/images/demo.jpg"), root.join("sub/b.jpg")).unwrap();
    std::fs::write(root.join("list.txt"), "# picks\nsub/b.jpg\n\nmissing.jpg\n").unwrap();
    let weights = tiny_weights();
    let run = |name: &str, sources: &[&str]| {
        let json = d.join(format!("{name}.json"));
        let mut args = sources.to_vec();
        args.splice(0..0, ["predict"]);
        args.extend(["--weights", &weights, "--no-draw", "--imgsz", "320", "--save-json", json.to_str().unwrap()]);
        let o = rtmdet(&args);
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned(), json)
    };
    let folder = root.to_str().unwrap();
    let (code, err, json) = run("flat", &[folder]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(reported_images(&json, &root), ["a.jpg"]);
    let (code, err, json) = run("deep", &[folder, "--recursive"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(reported_images(&json, &root), ["a.jpg", "sub/b.jpg"]);
    let pattern = root.join("**/*.jpg");
    let (code, err, json) = run("glob", &[pattern.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(reported_images(&json, &root), ["a.jpg", "sub/b.jpg"]);
    let list = root.join("list.txt");
    let (code, err, json) = run("list", &[list.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("missing.jpg (listed in"), "{err}");
    assert_eq!(reported_images(&json, &root), ["sub/b.jpg"]);
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f64; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    w * h / (area(a) + area(b) - w * h)
}

/// Whether box `b` reaches into window `w` and across one of its edges inside the image:
/// that window saw only part of the object.
fn cut_by(b: &[f64; 4], w: &[usize; 4], (width, height): (usize, usize)) -> bool {
    let [x1, y1, x2, y2] = w.map(|v| v as f64);
    let overlaps = b[0] < x2 && b[2] > x1 && b[1] < y2 && b[3] > y1;
    let crosses = (x1 > 0.0 && b[0] < x1)
        || (w[2] < width && b[2] > x2)
        || (y1 > 0.0 && b[1] < y1)
        || (w[3] < height && b[3] > y2);
    overlaps && crosses
}

/// Sliced prediction with a fractional overlap (0.2 of 512 px = 102 px) reports an object cut
/// by a tile border once: some merged detection crosses a window's inner border, and no two
/// detections of one class overlap beyond the NMS threshold.
#[test]
fn sliced_predict_reports_an_object_cut_by_a_tile_border_once() {
    use rtmdet::data::split::{SplitSettings, windows};
    let d = tmp("slice-border");
    let json = d.join("dets.json");
    let image = shared("assets/images/people.jpg");
    let weights = tiny_weights();
    let o = rtmdet(&[
        "predict",
        image.to_str().unwrap(),
        "--weights",
        &weights,
        "--no-draw",
        "--slice",
        "512",
        "--slice-overlap",
        "0.2",
        "--iou",
        "0.5",
        "--save-json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("in 512px slices, overlap 102px"), "{stderr}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let size = (v[0]["width"].as_u64().unwrap() as usize, v[0]["height"].as_u64().unwrap() as usize);
    assert_eq!(size, (1024, 707));
    let wins = windows(size.0, size.1, &[(512, 102)], SplitSettings::default().img_rate_thr);
    assert!(wins.len() > 1, "{wins:?}");
    let found = dets(&v[0]);
    assert!(
        found.iter().any(|(b, _, _)| wins.iter().any(|w| cut_by(b, w, size))),
        "no detection crosses a window border: {found:?}"
    );
    for (i, (a, _, la)) in found.iter().enumerate() {
        for (b, _, lb) in &found[i + 1..] {
            assert!(la != lb || iou(a, b) <= 0.5, "reported twice: {a:?} and {b:?} (label {la})");
        }
    }
}

/// `--slice-full --slice-merge wbf`: the slices and the whole image fused by weighted box
/// fusion keep every confident person that NMS-merged slices find (IoU > 0.5), with the
/// embedded (trained) person detector: a seeded checkpoint's hundreds of same-score boxes
/// would make the 100 kept ones arbitrary.
#[test]
fn sliced_predict_with_full_image_and_box_fusion_keeps_every_object() {
    let d = tmp("slice-wbf");
    let image = shared("assets/images/people.jpg");
    let run = |name: &str, extra: &[&str]| {
        let json = d.join(format!("{name}.json"));
        let mut a = vec!["predict", image.to_str().unwrap(), "--no-draw", "--iou", "0.5"];
        a.extend(["--slice", "512", "--slice-overlap", "0.2", "--save-json", json.to_str().unwrap()]);
        a.extend(extra);
        let o = rtmdet(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        dets(&v[0])
    };
    let nms = run("nms", &[]);
    let wbf = run("wbf", &["--slice-full", "--slice-merge", "wbf"]);
    assert!(nms.iter().filter(|(_, s, _)| *s >= 0.5).count() >= 10, "{nms:?}");
    for (b, s, l) in nms.iter().filter(|(_, s, _)| *s >= 0.5) {
        assert!(wbf.iter().any(|(f, _, lf)| lf == l && iou(b, f) > 0.5), "{b:?} ({s}, label {l}) is lost by fusion");
    }
}
