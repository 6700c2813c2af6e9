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
