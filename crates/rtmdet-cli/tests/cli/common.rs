//! Helpers of the CLI tests: paths into `../shared`, temporary folders, running the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(rel)
}

/// A fresh folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rtmdet-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn rtmdet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rtmdet")).args(args).output().unwrap()
}

pub fn tiny_weights() -> String {
    shared("reference/checkpoints/rtmdet_tiny_ref_seed1.pth").to_str().unwrap().to_string()
}

/// An Ultralytics YAML for a coco8-like folder `root` with the 80 COCO names; `val` names the
/// folder used as validation split.
pub fn coco8_yaml(dir: &Path, root: &Path, val: &str) -> PathBuf {
    let mut text = format!("path: {}\ntrain: images/train\nval: images/{val}\nnames:\n", root.display());
    for (i, n) in rtmdet::classes::COCO.iter().enumerate() {
        text.push_str(&format!("  {i}: {n}\n"));
    }
    let p = dir.join(format!("coco8_{val}.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// A YOLO-seg copy of coco8's training images under `dir/data` (each box's inscribed diamond
/// as its polygon, validated on the same images) and its YAML.
pub fn coco8_seg_yaml(dir: &Path) -> PathBuf {
    let src = shared("assets/coco8");
    let (images, labels) = (dir.join("data/images/train"), dir.join("data/labels/train"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    for e in std::fs::read_dir(src.join("images/train")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, images.join(p.file_name().unwrap())).unwrap();
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        let rows = std::fs::read_to_string(src.join(format!("labels/train/{stem}.txt"))).unwrap();
        let seg: String = rows
            .lines()
            .filter_map(|l| {
                let v: Vec<f64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
                let (c, cx, cy, w, h) = (v.first()?, v[1], v[2], v[3], v[4]);
                Some(format!(
                    "{c} {cx} {} {} {cy} {cx} {} {} {cy}\n",
                    cy - h / 2.0,
                    cx + w / 2.0,
                    cy + h / 2.0,
                    cx - w / 2.0
                ))
            })
            .collect();
        std::fs::write(labels.join(format!("{stem}.txt")), seg).unwrap();
    }
    let names: String = rtmdet::classes::COCO.iter().map(|n| format!("  - {n}\n")).collect();
    let yaml = dir.join("seg.yaml");
    let root = dir.join("data");
    std::fs::write(&yaml, format!("path: {}\ntrain: images/train\nval: images/train\nnames:\n{names}", root.display()))
        .unwrap();
    yaml
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `rtmdet predict SOURCE` with the reference tiny weights and the evaluation settings
/// (`--conf 0.001 --nms-pre 30000 --max-det 300`); returns the `--save-json` output.
pub fn predict_with_eval_settings(source: &Path, json: &Path) -> serde_json::Value {
    let o = rtmdet(&[
        "predict",
        source.to_str().unwrap(),
        "--weights",
        &tiny_weights(),
        "--conf",
        "0.001",
        "--nms-pre",
        "30000",
        "--max-det",
        "300",
        "--no-draw",
        "--save-json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    read_json(json)
}
