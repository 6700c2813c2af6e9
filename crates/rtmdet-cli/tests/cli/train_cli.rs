//! `rtmdet train` end to end: fine-tuning the reference tiny checkpoint on coco8 (validated
//! on its own training images) must learn, and the run folder must hold what the docs say.

use std::process::Command;

use crate::common::{coco8_yaml, shared, tmp};

#[test]
fn fine_tuning_on_coco8_learns_and_fills_the_run_folder() {
    let dir = tmp("train");
    // Validated on its own training images: a model that memorises 4 images must score.
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "train");
    let out = dir.join("runs");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["train", "--data", yaml.to_str().unwrap(), "--model", "tiny"])
        .args(["--weights", shared("reference/checkpoints/rtmdet_tiny_ref_seed1.pth").to_str().unwrap()])
        .args(["--epochs", "60", "--batch", "4", "--imgsz", "160", "--val-interval", "20", "--lr", "0.004"])
        .args(["--warmup-iters", "10", "--stage2-epochs", "60", "--seed", "0", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = out.join("1");
    for f in [
        "args.yaml",
        "results.csv",
        "results.png",
        "train_batch0.jpg",
        "weights/last.safetensors",
        "weights/best.safetensors",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    for col in ["epoch", "train/loss_cls", "train/loss_bbox", "lr", "metrics/AP", "metrics/AP50"] {
        assert!(header.contains(&col), "results.csv lacks {col}");
    }
    let rows: Vec<Vec<f64>> =
        csv.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect()).collect();
    assert_eq!(rows.len(), 60);
    let (first, last) = (&rows[0], &rows[59]);
    println!("loss_cls {:.3} -> {:.3}, AP50 {:.3} -> {:.3}", first[1], last[1], first[5], last[5]);
    assert!(last[1] < 0.5 * first[1], "the classification loss did not fall: {} -> {}", first[1], last[1]);
    assert!(
        last[5] > first[5] + 0.2 && last[5] > 0.3,
        "AP50 on the training images did not rise: {} -> {}",
        first[5],
        last[5]
    );

    // The saved weights are a detector checkpoint (EMA weights) usable by predict.
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["predict", shared("assets/coco8/images/train").to_str().unwrap(), "--no-draw"])
        .args(["--weights", run.join("weights/best.safetensors").to_str().unwrap(), "--conf", "0.2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn browse_saves_augmented_batches() {
    let dir = tmp("browse");
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "train");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["browse", "--data", yaml.to_str().unwrap(), "--imgsz", "256", "--batches", "2", "--out"])
        .arg(dir.join("browse"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for k in 0..2 {
        let p = dir.join(format!("browse/train_batch{k}.jpg"));
        let img = image::open(&p).unwrap();
        assert_eq!((img.width(), img.height()), (512, 512));
    }
}
