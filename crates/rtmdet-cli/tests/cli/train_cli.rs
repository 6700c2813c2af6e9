//! `rtmdet train` end to end: fine-tuning the reference tiny checkpoint on coco8 (validated
//! on its own training images) with the default lr and warm-up must learn, and the run folder
//! must hold what the docs say.

use std::process::Command;

use crate::common::{coco8_seg_yaml, coco8_yaml, shared, tmp};

/// No --lr or --warm-up: the defaults must suit 4 images (60 iterations). The recipe's lr
/// scaled to batch 4 (6e-5) with its 1000-iteration warm-up left the loss where it started.
#[test]
fn fine_tuning_on_coco8_with_the_defaults_learns_and_fills_the_run_folder() {
    let dir = tmp("train");
    // Validated on its own training images: a model that memorises 4 images must score.
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "train");
    let out = dir.join("runs");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["train", "--data", yaml.to_str().unwrap(), "--model", "tiny"])
        .args(["--weights", shared("reference/checkpoints/rtmdet_tiny_ref_seed1.pth").to_str().unwrap()])
        .args(["--epochs", "60", "--batch", "4", "--imgsz", "160", "--val-interval", "20"])
        .args(["--stage2-epochs", "60", "--seed", "0", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The effective schedule is printed and recorded: the recipe's lr, a third of the run warms up.
    let schedule = "lr 4.00e-3 (the recipe's, not scaled with batch 4), warm-up 20 iterations, flat to epoch 30, \
                    cosine to 2.00e-4 over epochs 31-60, stage 2 from epoch 1; 1 iteration per epoch";
    assert!(err.contains(&format!("schedule: {schedule}\n")), "{err}");
    let run = out.join("1");
    let args = std::fs::read_to_string(run.join("args.yaml")).unwrap();
    assert!(args.starts_with(&format!("# {schedule}\n")), "{args}");
    for field in ["lr: 0.004\n", "lr_policy: recipe\n", "warmup_iters: 20\n", "iters_per_epoch: 1\n"] {
        assert!(args.contains(field), "args.yaml lacks {field}: {args}");
    }
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

/// RTMDet-R fine-tuning on a DOTA folder written by `rtmdet dota-split` (two 1024 patches,
/// 18 objects): the rotated recipe is chosen from the data (RTMDet-R model, flip/rotate
/// pipeline, lr 2.5e-4 unless given), the loss (QFL + rotated IoU) falls, and
/// the checkpoint predicts rotated boxes.
#[test]
fn rotated_fine_tuning_on_dota_patches_learns() {
    let dir = tmp("train-rotated");
    let split = dir.join("split");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["dota-split", "--images", shared("assets/dota/images").to_str().unwrap()])
        .args(["--labels", shared("reference/rotated/split/src_labelTxt").to_str().unwrap()])
        .args(["--out", split.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Keep two patches with objects.
    let data = dir.join("data");
    for sub in ["images", "annfiles"] {
        std::fs::create_dir_all(data.join(sub)).unwrap();
    }
    for name in ["aerial_demo__1024__0___0", "dota_demo__1024__0___541"] {
        std::fs::copy(split.join(format!("images/{name}.png")), data.join(format!("images/{name}.png"))).unwrap();
        std::fs::copy(split.join(format!("annfiles/{name}.txt")), data.join(format!("annfiles/{name}.txt"))).unwrap();
    }
    let out = dir.join("runs");
    let weights = shared("reference/rotated/checkpoints/rotated_rtmdet_tiny_ref_seed1.pth");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["train", "--data", data.to_str().unwrap(), "--weights", weights.to_str().unwrap()])
        .args(["--epochs", "20", "--batch", "2", "--imgsz", "384", "--val-interval", "20", "--lr", "0.004"])
        .args(["--warmup-iters", "5", "--seed", "0", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("RTMDet-R"), "{err}");
    let run = out.join("1");
    let args = std::fs::read_to_string(run.join("args.yaml")).unwrap();
    assert!(args.contains("task: rotated") && args.contains("rect_classes"), "{args}");
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    let rows: Vec<Vec<f64>> =
        csv.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect()).collect();
    assert_eq!(rows.len(), 20);
    let total = |r: &Vec<f64>| r[1] + r[2];
    let late = rows[15..].iter().map(total).sum::<f64>() / 5.0;
    println!("loss {:.3} -> {late:.3} (mean of the last 5 epochs)", total(&rows[0]));
    assert!(late < 0.85 * total(&rows[0]), "the loss did not fall: {} -> {late}", total(&rows[0]));
    assert!(rows[19][5] >= 0.0, "DOTA mAP is reported at the validation epoch");

    let json = dir.join("pred.json");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["predict", data.join("images").to_str().unwrap(), "--no-draw", "--save-json", json.to_str().unwrap()])
        .args(["--weights", run.join("weights/last.safetensors").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pred: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(pred[0]["detections"][0]["rbox"].is_array(), "rotated boxes out: {}", pred[0]["detections"][0]);
}

/// RTMDet-R's "aug" recipe end to end on the DOTA samples: `browse --mosaic` shows its
/// batches, and `train --mosaic` runs both stages (Mosaic/MixUp, then without) with the
/// recipe recorded in `args.yaml`.
#[test]
fn rotated_aug_recipe_browses_and_trains() {
    let dir = tmp("train-rotated-aug");
    let dota = shared("assets/dota");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["browse", "--data", dota.to_str().unwrap(), "--mosaic", "--imgsz", "256", "--batch", "2"])
        .args(["--batches", "2", "--out"])
        .arg(dir.join("browse"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for k in 0..2 {
        let img = image::open(dir.join(format!("browse/train_batch{k}.jpg"))).unwrap();
        assert_eq!((img.width(), img.height()), (512, 256));
    }
    let out = dir.join("runs");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["train", "--data", dota.to_str().unwrap(), "--mosaic", "--model", "tiny", "--epochs", "2"])
        .args(["--batch", "2", "--imgsz", "256", "--val-interval", "5", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("last 1 without mosaic/mixup"), "{err}");
    let args = std::fs::read_to_string(out.join("1/args.yaml")).unwrap();
    assert!(args.contains("random_resize_crop: true") && args.contains("strong: true"), "{args}");
    let csv = std::fs::read_to_string(out.join("1/results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // Detection data refuses the flag with the reason.
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "train");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["train", "--data", yaml.to_str().unwrap(), "--mosaic", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("DOTA folders"));
}

/// Starts `rtmdet ARGS`, sends Ctrl-C once training has started, and returns the whole
/// stderr and the exit code.
fn interrupt_once_started(args: &[&str]) -> (String, Option<i32>) {
    use std::io::{BufRead, BufReader, Read};
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_rtmdet")).args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("schedule: ") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "training did not start: {seen}");
        seen.push_str(&line);
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    stderr.read_to_string(&mut seen).unwrap();
    (seen, child.wait().unwrap().code())
}

/// The `schedule: ...` line a run printed.
fn schedule_line(stderr: &str) -> &str {
    stderr.lines().find(|l| l.starts_with("schedule: ")).unwrap_or_else(|| panic!("no schedule line: {stderr}"))
}

/// Ctrl-C during training saves `last`, exits 130 (so `train && deploy` stops) and releases
/// the run folder's lock; `--resume` follows the schedule the run started with.
#[test]
fn ctrl_c_saves_last_and_exits_130() {
    let dir = tmp("ctrl_c");
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "train");
    let out = dir.join("runs");
    let (seen, code) = interrupt_once_started(&[
        "train",
        "--data",
        yaml.to_str().unwrap(),
        "--epochs",
        "50",
        "--batch",
        "2",
        "--imgsz",
        "64",
        "--workers",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(130), "{seen}");
    assert!(seen.contains("--resume"), "{seen}");
    assert!(out.join("1/weights/last.safetensors").is_file());
    assert!(!out.join("1/.lock").exists(), "the lock outlived the process");
    // 2 iterations per epoch, 100 in all: the recipe's lr, 100 warm-up iterations capped to 33.
    let schedule = schedule_line(&seen);
    assert!(schedule.contains("lr 4.00e-3 (the recipe's, not scaled with batch 2), warm-up 33 iterations"), "{seen}");
    let run = out.join("1");
    let (resumed, code) = interrupt_once_started(&["train", "--resume", run.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(code, Some(130), "{resumed}");
    assert_eq!(schedule_line(&resumed), schedule);
}

/// A write that does not fit (here a file-size limit, which fails writes as a full disk does)
/// is an error naming the file, and leaves no temporary file behind.
#[test]
fn a_checkpoint_that_does_not_fit_names_the_file_and_leaves_no_temporary() {
    let dir = tmp("disk_full");
    let yaml = coco8_yaml(&dir, &shared("assets/coco8"), "train");
    let out = dir.join("runs");
    // `trap "" XFSZ`: an ignored SIGXFSZ stays ignored across exec, so the write fails with
    // EFBIG instead of killing the process; 2000 blocks of 512 bytes hold the small files but
    // not the 20 MB checkpoint.
    let script = format!(
        "trap '' XFSZ; ulimit -f 2000; exec {} train --data {} --epochs 1 --batch 1 --imgsz 32 --workers 1 --out {}",
        env!("CARGO_BIN_EXE_rtmdet"),
        yaml.display(),
        out.display()
    );
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write") && err.contains("last.safetensors"), "{err}");
    let weights: Vec<String> = std::fs::read_dir(out.join("1/weights"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(weights.iter().all(|n| !n.contains(".tmp")), "temporary left behind: {weights:?}");
    assert!(!out.join("1/.lock").exists());
}

/// RTMDet-Ins fine-tuning on a YOLO-seg copy of coco8's training images (each box's
/// inscribed diamond as its polygon), validated on the same images: the Ins model and
/// masked pipeline are chosen from `--model ins-tiny`, `results.csv` has `loss_mask`, the
/// summed loss falls, and the checkpoint predicts masks.
#[test]
fn ins_fine_tuning_on_yolo_seg_learns() {
    let dir = tmp("train-ins");
    let yaml = coco8_seg_yaml(&dir);
    let images = dir.join("data/images/train");
    let out = dir.join("runs");
    let weights = shared("reference/checkpoints/rtmdet_ins_tiny_ref_seed1.pth");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["train", "--data", yaml.to_str().unwrap(), "--model", "ins-tiny"])
        .args(["--weights", weights.to_str().unwrap(), "--epochs", "12", "--batch", "2", "--imgsz", "160"])
        .args(["--val-interval", "12", "--lr", "0.004", "--warmup-iters", "3", "--stage2-epochs", "12"])
        .args(["--seed", "0", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let run = out.join("1");
    let args = std::fs::read_to_string(run.join("args.yaml")).unwrap();
    assert!(args.contains("task: segment") && args.contains("masks: true"), "{args}");
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(&header[1..4], ["train/loss_cls", "train/loss_bbox", "train/loss_mask"], "{csv}");
    let rows: Vec<Vec<f64>> =
        csv.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect()).collect();
    let total = |r: &Vec<f64>| r[1] + r[2] + r[3];
    let late = rows[9..].iter().map(total).sum::<f64>() / 3.0;
    println!("loss {:.3} -> {late:.3} (mean of the last 3 epochs)", total(&rows[0]));
    assert!(late < 0.8 * total(&rows[0]), "the loss did not fall: {} -> {late}", total(&rows[0]));

    let json = dir.join("pred.json");
    let o = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(["predict", images.to_str().unwrap(), "--no-draw", "--save-json", json.to_str().unwrap()])
        .args(["--weights", run.join("weights/last.safetensors").to_str().unwrap(), "--conf", "0.05"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pred: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(pred[0]["detections"][0]["segmentation"]["counts"].is_string(), "{}", pred[0]["detections"][0]);
}
