//! `rtmdet export` then `rtmdet predict --weights model.onnx`: the export loads back as the
//! same model, and an end-to-end export brings its thresholds along.

use crate::common::*;

fn detections(json: &serde_json::Value) -> Vec<(Vec<f64>, f64, u64)> {
    json[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b = d["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            (b, d["score"].as_f64().unwrap(), d["label"].as_u64().unwrap())
        })
        .collect()
}

fn predict(weights: &str, extra: &[&str], json: &std::path::Path) -> Vec<(Vec<f64>, f64, u64)> {
    let image = shared("assets/images/demo.jpg");
    let mut args = vec!["predict", image.to_str().unwrap(), "--weights", weights, "--no-draw"];
    args.extend(extra);
    args.extend(["--save-json", json.to_str().unwrap()]);
    let o = rtmdet(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    detections(&read_json(json))
}

#[test]
fn exported_onnx_predicts_like_its_checkpoint() {
    let d = tmp("export-roundtrip");
    let onnx = d.join("tiny.onnx");
    let o = rtmdet(&["export", "--weights", &tiny_weights(), "--conf", "0.2", "--out", onnx.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("end2end: conf 0.2 iou 0.65 nms_pre 1000 max_det 100"), "{said}");

    // The export's own thresholds apply (conf 0.2), as with the checkpoint and --conf 0.2.
    let ours = predict(onnx.to_str().unwrap(), &[], &d.join("onnx.json"));
    let reference = predict(&tiny_weights(), &["--conf", "0.2"], &d.join("pth.json"));
    assert!(!reference.is_empty());
    assert_eq!(ours.len(), reference.len());
    for (a, b) in ours.iter().zip(&reference) {
        // The same folded convolutions in the same engine: identical up to the BatchNorm folding
        // done twice (measured: bit-identical).
        let db = a.0.iter().zip(&b.0).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
        assert!(db <= 1e-3 && (a.1 - b.1).abs() <= 1e-5 && a.2 == b.2, "{a:?} vs {b:?}");
    }
    // Re-exporting the export works too (the nano ONNX path: an ONNX file as weights).
    let again = d.join("again-raw.onnx");
    let o = rtmdet(&["export", "--weights", onnx.to_str().unwrap(), "--mode", "raw", "--out", again.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
