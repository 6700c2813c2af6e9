//! Resuming a stopped run reproduces the uninterrupted run exactly (same losses, same
//! weights), including a stop in the middle of an epoch with Mosaic/MixUp caches.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;
use rtmdet::Size;
use rtmdet::train::trainer::{TrainEvent, TrainOptions, Trainer};

fn options(dir: &std::path::Path) -> TrainOptions {
    TrainOptions {
        data: crate::common::coco8_yaml(dir),
        val_data: None,
        size: Size::Tiny,
        weights: Some(crate::common::reference("checkpoints/rtmdet_tiny_ref_seed1.pth")),
        epochs: 3,
        batch: 2,
        imgsz: 128,
        workers: 2,
        val_interval: 1,
        seed: 7,
        lr: Some(0.002),
        scale_lr: false,
        warmup_iters: Some(2),
        stage2_epochs: Some(1),
        classes: None,
        mosaic: false,
        task: rtmdet::config::Task::Detect,
    }
}

fn losses(trainer: &mut Trainer, stop_after: Option<usize>) -> (bool, Vec<Vec<f64>>) {
    let stop = AtomicBool::new(false);
    let mut seen = Vec::new();
    let done = trainer
        .run(&stop, &mut |e| {
            if let TrainEvent::Iteration { names, losses, .. } = e {
                assert_eq!(names, ["loss_cls", "loss_bbox"]);
                seen.push(losses.to_vec());
                if Some(seen.len()) == stop_after {
                    stop.store(true, Ordering::SeqCst);
                }
            }
        })
        .unwrap();
    (done, seen)
}

#[test]
fn resume_continues_exactly() {
    let dir = std::env::temp_dir().join(format!("rtmdet-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let device = Device::default().autodiff();

    let mut full = Trainer::new(&options(&dir), &dir.join("full"), device.clone()).unwrap();
    let (done, reference) = losses(&mut full, None);
    assert!(done && reference.len() == 6);

    let mut first = Trainer::new(&options(&dir), &dir.join("split"), device.clone()).unwrap();
    let (done, mut split) = losses(&mut first, Some(3)); // stops in the middle of epoch 2
    assert!(!done && split.len() == 3);
    let run_dir = first.run_dir.clone();
    drop(first);
    let mut resumed = Trainer::resume(&run_dir, device).unwrap();
    let (done, rest) = losses(&mut resumed, None);
    assert!(done);
    split.extend(rest);
    assert_eq!(split, reference, "losses of the resumed run differ");
    // Everything but the wall-clock time per epoch is identical.
    let untimed = |rows: &[rtmdet::train::trainer::EpochRow]| {
        rows.iter().cloned().map(|r| rtmdet::train::trainer::EpochRow { seconds: 0.0, ..r }).collect::<Vec<_>>()
    };
    assert_eq!(untimed(&resumed.state.history), untimed(&full.state.history));
}

#[test]
fn fine_tuning_to_other_classes_reinitialises_only_the_classifier() {
    let dir = std::env::temp_dir().join(format!("rtmdet-finetune-{}", std::process::id()));
    let root = dir.join("ds");
    std::fs::create_dir_all(root.join("images/train")).unwrap();
    std::fs::create_dir_all(root.join("labels/train")).unwrap();
    std::fs::copy(shared_image(), root.join("images/train/a.jpg")).unwrap();
    std::fs::write(root.join("labels/train/a.txt"), "1 0.5 0.5 0.3 0.3\n").unwrap();
    let yaml = dir.join("two.yaml");
    std::fs::write(
        &yaml,
        format!("path: {}\ntrain: images/train\nval: images/train\nnames: [cat, dog]\n", root.display()),
    )
    .unwrap();
    let opts = TrainOptions { data: yaml, epochs: 1, ..options(&dir) };
    let trainer = Trainer::new(&opts, &dir.join("runs"), Device::default()).unwrap();
    let ours = rtmdet::weights::collect(&mut trainer.model().clone());
    assert_eq!(ours["bbox_head.rtm_cls.0.weight"].shape, [2, 96, 1, 1]);
    assert_eq!(trainer.cfg.model.class_names, vec!["cat", "dog"]);
    // Everything else comes from the checkpoint.
    let (_, map) =
        rtmdet::weights::read(&crate::common::reference("checkpoints/rtmdet_tiny_ref_seed1.pth"), &Default::default())
            .unwrap();
    assert_eq!(ours["bbox_head.rtm_reg.0.weight"].data, map["bbox_head.rtm_reg.0.weight"].data);
}

fn shared_image() -> std::path::PathBuf {
    crate::common::shared("assets/coco8/images/train/000000000009.jpg")
}
