//! `rtmdet bench data`: the training data pipeline against the model's training step, on the
//! datasets `train` accepts (small sizes, so each run takes about a second); `rtmdet bench
//! video`: the video pipeline against inference alone.

use std::path::Path;

use serde_json::Value;

use crate::common::{coco8_seg_yaml, coco8_yaml, read_json, rtmdet, shared, tmp};

/// `bench data` on `data` with 2 batches of 2 per stage and worker count (1 and 2) and one
/// timed step; returns the `--json` report after checking what holds for every dataset.
fn bench_data(data: &Path, extra: &[&str], json: &Path) -> Value {
    let mut args = vec!["bench", "data", "--data", data.to_str().unwrap(), "--batch", "2", "--iters", "2"];
    args.extend(["--steps", "1", "--workers", "1,2", "--json", json.to_str().unwrap()]);
    args.extend(extra);
    let o = rtmdet(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(json);
    let model_ips = r["model"]["images_per_s"].as_f64().unwrap();
    assert!(model_ips > 0.0 && r["model"]["step_s"].as_f64().unwrap() > 0.0, "{r}");
    let stage = |row: &Value| row["stage"].as_u64().unwrap();
    for row in r["data"].as_array().unwrap() {
        // Every worker count builds --iters full batches, even from 4 images.
        assert_eq!(row["images"], 4, "{row}");
        let ips = row["images_per_s"].as_f64().unwrap();
        assert!(ips > 0.0, "{row}");
        assert_eq!(row["keeps_up"].as_bool().unwrap(), ips >= model_ips, "{row}");
    }
    let verdict = &r["verdict"];
    if verdict["keeps_up"].as_bool().unwrap() {
        // The fewest measured workers that keep up in every stage.
        let rows = r["data"].as_array().unwrap();
        let fewest = |s: u64| {
            let keeping_up = rows.iter().filter(|row| stage(row) == s && row["keeps_up"] == true);
            keeping_up.map(|row| row["workers"].as_u64().unwrap()).min().unwrap()
        };
        let needed = rows.iter().map(stage).map(fewest).max();
        assert_eq!(verdict["workers_needed"].as_u64(), needed, "{r}");
    }
    assert!(stdout.contains(&format!("verdict: {}", verdict["text"].as_str().unwrap())), "{stdout}");
    r
}

fn stages_and_augmentations(r: &Value) -> Vec<(u64, String, u64)> {
    r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["stage"].as_u64().unwrap(),
                row["augmentation"].as_str().unwrap().to_string(),
                row["workers"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn bench_data_on_coco8_reports_both_stages_against_the_model() {
    let dir = tmp("bench-data");
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "train");
    let json = dir.join("data.json");
    let r = bench_data(&yaml, &["--imgsz", "160"], &json);
    assert_eq!(
        (r["dataset"].as_str(), r["batch"].as_u64(), r["imgsz"].as_u64()),
        (Some("coco8_train"), Some(2), Some(160))
    );
    assert_eq!(r["model"]["name"], "rtmdet-tiny");
    let rows = stages_and_augmentations(&r);
    let want = [(1, "Mosaic/MixUp", 1), (1, "Mosaic/MixUp", 2), (2, "no Mosaic/MixUp", 1), (2, "no Mosaic/MixUp", 2)];
    assert_eq!(rows, want.map(|(s, a, w)| (s, a.to_string(), w)));

    // The report is never written over without --exist-ok.
    let before = std::fs::read(&json).unwrap();
    let o = rtmdet(&["bench", "data", "--data", yaml.to_str().unwrap(), "--json", json.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&json).unwrap(), before);
}

/// RTMDet-Ins augments masks, and a DOTA folder trains RTMDet-R with its one-stage recipe
/// (two stages with `--mosaic`), as `train` would.
#[test]
fn bench_data_follows_the_task_of_the_data() {
    let dir = tmp("bench-data-tasks");
    let seg = coco8_seg_yaml(&dir);
    let r = bench_data(&seg, &["--imgsz", "160", "--model", "ins-tiny"], &dir.join("ins.json"));
    assert_eq!(r["model"]["name"], "rtmdet-ins-tiny");
    assert!(stages_and_augmentations(&r).iter().all(|(_, a, _)| a.ends_with("masks")), "{r}");

    let dota = shared("assets/dota");
    let r = bench_data(&dota, &["--imgsz", "256"], &dir.join("r.json"));
    assert_eq!(r["model"]["name"], "rtmdet-r-tiny");
    let rows = stages_and_augmentations(&r);
    assert_eq!(rows.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(), [(1, 1), (1, 2)], "one stage: {r}");
    let r = bench_data(&dota, &["--imgsz", "256", "--mosaic"], &dir.join("r-aug.json"));
    assert_eq!(stages_and_augmentations(&r).iter().map(|r| r.0).collect::<Vec<_>>(), [1, 1, 2, 2], "{r}");
}

/// `bench video` times the stages and the whole pipeline on the same frames and reports the
/// pipeline's overhead over inference alone (numbers are measured, not asserted).
#[test]
fn bench_video_reports_pipeline_against_inference() {
    let d = tmp("bench-video");
    let walk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rtmdet/tests/data/video/walk.mp4");
    let json = d.join("video.json");
    let o = rtmdet(&[
        "bench",
        "video",
        walk.to_str().unwrap(),
        "--frames",
        "12",
        "--rounds",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((r["frames"].as_u64(), r["width"].as_u64(), r["height"].as_u64()), (Some(12), Some(480), Some(360)));
    assert_eq!(r["model"], "rtmdet-nano");
    for k in ["decode_fps", "encode_fps", "infer_fps", "pipeline_fps"] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
    let overhead = r["infer_fps"].as_f64().unwrap() / r["pipeline_fps"].as_f64().unwrap() - 1.0;
    assert!((r["overhead"].as_f64().unwrap() - overhead).abs() < 1e-9);
    assert!(String::from_utf8_lossy(&o.stdout).contains("pipeline overhead over inference alone"));
    let _ = std::fs::remove_dir_all(d);
}

/// `bench train` runs the step of the task named by `--model`: RTMDet-Ins with crowded,
/// masked objects reports every phase and the peak memory (values measured, not asserted).
#[test]
fn bench_train_runs_an_ins_step_on_a_crowded_batch() {
    let o = rtmdet(&[
        "bench",
        "train",
        "--model",
        "ins-tiny",
        "--batch",
        "1",
        "--imgsz",
        "128",
        "--objects",
        "30",
        "--threads",
        "1",
        "--iters",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rtmdet-ins-tiny, batch 1, 128x128, 30 objects per image, on cpu"), "{out}");
    assert!(out.contains("img/s") && out.contains("peak MiB"), "{out}");
    let row: Vec<f64> = out.lines().last().unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert_eq!(row.len(), 8, "{out}");
    assert!(row[1..].iter().all(|v| v.is_finite() && *v >= 0.0) && row[7] > 0.0, "{out}");
    // images/s is the batch over the step time.
    assert!((row[2] - 1.0 / row[1]).abs() <= 0.01 * row[2] + 0.005, "{out}");
}
