//! `rtmdet train` and `rtmdet browse`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use rtmdet::burn::tensor::Device;
use rtmdet::data::Dataset;
use rtmdet::data::pipeline::{EpochLoader, PipelineConfig, train_items};
use rtmdet::engine::parse_device;
use rtmdet::train::trainer::{TrainEvent, TrainOptions, Trainer, preview_grid};

use crate::exit::Interrupted;
use crate::{args, sources};

#[derive(Args)]
pub struct TrainArgs {
    /// Dataset: an Ultralytics .yaml (train/val splits), a COCO .json, or a DOTA folder
    /// (`images/` + `labelTxt/` or `annfiles/`, e.g. `rtmdet dota-split` output), which trains
    /// RTMDet-R.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation set when --data is a COCO .json or a DOTA folder (default: the training set).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// (DOTA folders) Classes: dota (v1.0), dota1.5, dota2.0, dior, hrsc, or a comma-separated list
    /// [default: dior for XML labels, else dota].
    #[arg(long)]
    pub classes: Option<String>,
    /// Model: tiny, s, m, l, x (or nano); `ins-tiny` … `ins-x` trains RTMDet-Ins (instance masks).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Initial weights (official .pth or ours); another number of classes re-initialises the classifier.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// (DOTA folders) mmrotate's "aug" recipe: cached Mosaic/MixUp, random resize (0.1–2×
    /// for m/l/x) and crop, rotation, h/v/d flips; the last tenth of the epochs without
    /// Mosaic/MixUp [default epochs 100].
    #[arg(long)]
    pub mosaic: bool,
    /// Epochs [default: 300; RTMDet-R 36, 100 with --mosaic].
    #[arg(long, value_parser = args::positive, allow_negative_numbers = true)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = args::positive, allow_negative_numbers = true)]
    pub batch: usize,
    /// Training image size [default: 640; RTMDet-R 1024].
    #[arg(long, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: Option<usize>,
    /// Data workers (decoding and augmentation threads).
    #[arg(long, default_value_t = 2, value_parser = args::threads, allow_negative_numbers = true)]
    pub workers: usize,
    /// Validate every N epochs (and every epoch of stage 2).
    #[arg(long, default_value_t = 10, value_parser = args::positive, allow_negative_numbers = true)]
    pub val_interval: usize,
    /// Parent of the run folders.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Continue the run in this folder from its weights/last.safetensors, with the settings it
    /// was started with: the flags that would change them are refused (to change them, start a
    /// new run with --weights RUN/weights/last.safetensors).
    #[arg(long, conflicts_with_all = [
        "data", "val_data", "classes", "model", "weights", "epochs", "batch", "imgsz", "val_interval",
        "seed", "lr", "scale_lr", "warmup_iters", "stage2_epochs", "mosaic",
    ])]
    pub resume: Option<PathBuf>,
    // Negative numbers reach the parser, whose message is clearer than clap's "use -- -1" tip.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Base learning rate [default: the recipe's, whatever the batch: 0.004 (ins-x 0.002,
    /// RTMDet-R 2.5e-4), as mmdetection and Ultralytics do].
    #[arg(long, value_parser = args::positive_number, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Scale the recipe's lr linearly with --batch, by batch / the recipe's batch (256; ins-x
    /// 128, RTMDet-R 8), as mmdetection's auto_scale_lr.
    #[arg(long, conflicts_with = "lr")]
    pub scale_lr: bool,
    /// Linear warm-up iterations [default: 3 epochs' worth, 100 to 1000 iterations, at most a
    /// third of the run; 1000 for the official recipe].
    #[arg(long, value_parser = args::non_negative, allow_negative_numbers = true)]
    pub warmup_iters: Option<usize>,
    /// Final epochs without Mosaic/MixUp (default: 20 of 300, proportionally).
    #[arg(long, value_parser = args::non_negative, allow_negative_numbers = true)]
    pub stage2_epochs: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Continues a run; a run that already finished is refused (resuming it would do nothing).
fn resume_trainer(dir: &std::path::Path, device: Device) -> Result<Trainer> {
    let t = Trainer::resume(dir, device)?;
    if t.state.epoch >= t.cfg.epochs {
        bail!(
            "{} already completed its {} epochs; nothing to resume (to train further, start a new run \
             with --weights {}/weights/last.safetensors)",
            dir.display(),
            t.cfg.epochs,
            dir.display()
        );
    }
    Ok(t)
}

/// The flags that choose what a run trains on and how its data is augmented, shared by
/// `train` and `bench data` (which must see the same data, model and pipeline stages).
pub struct DataFlags<'a> {
    pub data: &'a std::path::Path,
    pub model: &'a str,
    pub classes: Option<&'a str>,
    pub mosaic: bool,
    pub imgsz: Option<usize>,
    pub batch: usize,
    pub workers: usize,
}

/// A run's options from its data flags, with the recipe's defaults for the rest, after the
/// checks that need no data loaded (path, model name, `--mosaic`, memory).
pub fn run_options(f: &DataFlags) -> Result<TrainOptions> {
    check_data_path(f.data)?;
    let rotated = rtmdet::train::trainer::is_rotated_data(f.data);
    let (task, size) = rtmdet::config::parse_model(f.model)?;
    if f.mosaic && !rotated {
        bail!(
            "--mosaic selects RTMDet-R's \"aug\" recipe for DOTA folders; detection always trains with Mosaic/MixUp in stage 1"
        );
    }
    let imgsz = f.imgsz.unwrap_or(if rotated { 1024 } else { 640 });
    args::check_memory(f.batch, imgsz, args::TRAIN_BYTES_PER_PIXEL, "a training step")?;
    Ok(TrainOptions {
        data: f.data.to_path_buf(),
        val_data: None,
        size,
        weights: None,
        epochs: match (rotated, f.mosaic) {
            (true, true) => 100,
            (true, false) => 36,
            _ => 300,
        },
        batch: f.batch,
        imgsz,
        workers: f.workers,
        val_interval: 10,
        seed: 0,
        lr: None,
        scale_lr: false,
        warmup_iters: None,
        stage2_epochs: None,
        classes: f.classes.map(rtmdet::classes::rotated_preset),
        mosaic: f.mosaic,
        task,
    })
}

/// A new run from the flags, after the checks that need no data loaded.
fn new_trainer(args: &TrainArgs, device: Device) -> Result<Trainer> {
    let Some(data) = &args.data else { bail!("give --data DATA (or --resume RUN_DIR)") };
    if args.out.exists() && !args.out.is_dir() {
        bail!("--out {} is a file; give a folder for the run folders", args.out.display());
    }
    let recipe = run_options(&DataFlags {
        data,
        model: &args.model,
        classes: args.classes.as_deref(),
        mosaic: args.mosaic,
        imgsz: args.imgsz,
        batch: args.batch,
        workers: args.workers,
    })?;
    let opts = TrainOptions {
        val_data: args.val_data.clone(),
        weights: args.weights.clone(),
        epochs: args.epochs.unwrap_or(recipe.epochs),
        val_interval: args.val_interval,
        seed: args.seed,
        lr: args.lr,
        scale_lr: args.scale_lr,
        warmup_iters: args.warmup_iters,
        stage2_epochs: args.stage2_epochs,
        ..recipe
    };
    Ok(Trainer::new(&opts, &args.out, device)?)
}

pub fn run(args: TrainArgs) -> Result<()> {
    let device = parse_device(&args.device)?.autodiff();
    let mut trainer = match &args.resume {
        Some(dir) => resume_trainer(dir, device)?,
        None => new_trainer(&args, device)?,
    };
    // Installed before the run is announced, so a Ctrl-C after the announcement always saves.
    let stop = crate::interrupt::stop_flag("stopping after this iteration; saving weights/last.safetensors");
    let recipe = if trainer.cfg.stage1.rotated.as_ref().is_some_and(|r| !r.random_resize_crop) {
        "RTMDet-R: resize, h/v/d flip, rotation".to_string()
    } else {
        format!("last {} without mosaic/mixup", trainer.cfg.stage2_epochs)
    };
    eprintln!(
        "training RTMDet-{} on {} ({} classes), {} epochs ({recipe}), batch {}; run folder {}",
        trainer.cfg.model.size.name(),
        trainer.cfg.data.display(),
        trainer.cfg.model.num_classes,
        trainer.cfg.epochs,
        trainer.cfg.batch,
        trainer.run_dir.display()
    );
    eprintln!("schedule: {}", trainer.cfg.schedule_summary());
    let trainer_terms = trainer.cfg.model.task.loss_terms();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let completed = trainer.run(&stop, &mut |event| match event {
        TrainEvent::EpochStart { epoch, epochs, batches, stage2 } => {
            let b = indicatif::ProgressBar::new(batches as u64);
            let style =
                indicatif::ProgressStyle::with_template("{prefix} {bar:25} {pos}/{len} {msg}").expect("template");
            b.set_style(style);
            b.set_prefix(format!("epoch {}/{}{}", epoch + 1, epochs, if stage2 { " (stage 2)" } else { "" }));
            bar = Some(b);
        }
        TrainEvent::Iteration { batch, names, losses, lr, instances, images_per_s } => {
            if let Some(b) = &bar {
                b.set_position(batch as u64 + 1);
                let terms = format_terms(names, losses, true);
                b.set_message(format!("{terms} lr {lr:.2e} inst {instances} {images_per_s:.1} img/s"));
            }
        }
        TrainEvent::Validating { .. } => {
            if let Some(b) = &bar {
                b.set_message("validating");
            }
        }
        TrainEvent::EpochEnd { row } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let ap = row.ap.map_or("-".to_string(), |v| format!("{v:.4}"));
            let ap50 = row.ap50.map_or("-".to_string(), |v| format!("{v:.4}"));
            let terms = format_terms(trainer_terms, &row.losses, false);
            eprintln!("epoch {}: {terms} lr {:.2e} AP {ap} AP50 {ap50} ({:.1} s)", row.epoch, row.lr, row.seconds);
        }
        TrainEvent::Saved { path } => eprintln!("saved {}", path.display()),
    })?;
    if !completed {
        let dir = trainer.run_dir.display();
        return Err(Interrupted(format!("{dir}/weights/last.safetensors saved; continue with --resume {dir}")).into());
    }
    eprintln!("done: {}", trainer.run_dir.display());
    Ok(())
}

/// Cheap checks of `--data` before the memory check, so that a wrong path is reported as such
/// (the dataset itself is read and checked when the run starts).
fn check_data_path(data: &std::path::Path) -> Result<()> {
    if !data.exists() {
        bail!("--data {} does not exist", data.display());
    }
    if data.is_dir() && rtmdet::data::dota::image_dir(data).is_none() {
        bail!(
            "--data {}: not a DOTA folder (expected `images/` and `labelTxt/` or `annfiles/` inside)",
            data.display()
        );
    }
    Ok(())
}

/// `loss_cls 0.1234 loss_bbox 0.5678` (short: `cls 0.1234 bbox 0.5678`, for the progress bar).
fn format_terms(names: &[&str], values: &[f64], short: bool) -> String {
    let name = |n: &str| if short { n.trim_start_matches("loss_").to_string() } else { n.to_string() };
    names.iter().zip(values).map(|(n, v)| format!("{} {v:.4}", name(n))).collect::<Vec<_>>().join(" ")
}

#[derive(Args)]
pub struct BrowseArgs {
    /// Dataset (.yaml, COCO .json, or a DOTA folder for RTMDet-R's augmentation).
    #[arg(long)]
    pub data: PathBuf,
    /// (DOTA folders) Classes, as for `train`.
    #[arg(long)]
    pub classes: Option<String>,
    /// (DOTA folders) Show RTMDet-R's "aug" recipe (as `train --mosaic`).
    #[arg(long)]
    pub mosaic: bool,
    #[arg(long, default_value = "train")]
    pub split: String,
    #[arg(long, default_value = "tiny")]
    pub model: String,
    #[arg(long, default_value_t = 640, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: usize,
    /// Augmented batches to save.
    #[arg(long, default_value_t = 3, value_parser = args::positive, allow_negative_numbers = true)]
    pub batches: usize,
    #[arg(long, default_value_t = 4, value_parser = args::positive, allow_negative_numbers = true)]
    pub batch: usize,
    /// Show the stage-2 (weak) augmentation instead of stage 1.
    #[arg(long)]
    pub stage2: bool,
    // Negative numbers reach the parser, whose message is clearer than clap's "use -- -1" tip.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Output folder (default runs/browse/<n>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The dataset's summary, and the first of its problems and warnings.
pub fn print_report(data: &Dataset) {
    for row in data.report.bad_rows.iter().chain(&data.report.warnings).take(20) {
        eprintln!("warning: {row}");
    }
    eprintln!("dataset {}: {}", data.name, data.report);
}

/// Saves augmented batches of a dataset as `train_batch<k>.jpg`, without training.
pub fn browse(args: BrowseArgs) -> Result<()> {
    let rotated = rtmdet::train::trainer::is_rotated_data(&args.data);
    let data = if rotated {
        let classes = match &args.classes {
            Some(c) => rtmdet::classes::rotated_preset(c),
            None => rtmdet::data::dota::default_classes(&args.data),
        };
        rtmdet::data::dota::load(&args.data, &classes)?
    } else {
        Dataset::load(&args.data, &args.split)?
    };
    print_report(&data);
    let (task, size) = rtmdet::config::parse_model(&args.model)?;
    args::check_memory(args.batch, args.imgsz, args::INFER_BYTES_PER_PIXEL, "augmenting a batch")?;
    let names = data.class_names();
    let cfg = match (rotated, args.mosaic) {
        (true, true) => PipelineConfig::rotated_aug(size, args.imgsz, &names),
        (true, false) => PipelineConfig::rotated(size, args.imgsz, &names),
        _ => PipelineConfig::stage1(size, args.imgsz),
    };
    let cfg = if args.stage2 { cfg.weak() } else { cfg };
    // An instance segmentation model (`--model ins-tiny`) shows the masks as they are trained.
    let cfg = if task == rtmdet::config::Task::Segment { cfg.with_masks() } else { cfg };
    let model = if rotated { rtmdet::ModelConfig::rotated(size) } else { rtmdet::ModelConfig::new(size) };
    let mut model = model.with_num_classes(data.categories.len());
    model.class_names = data.class_names();
    let items = Arc::new(train_items(&data));
    if items.is_empty() {
        bail!("no image with objects to show");
    }
    let out = sources::run_dir(args.out.as_deref(), "runs/browse")?;
    let mut saved = 0;
    for epoch in 0.. {
        for batch in EpochLoader::new(items.clone(), cfg.clone(), args.batch, 1, args.seed, epoch) {
            let batch = batch?;
            // Like predict's images: a taken name gets a suffix, nothing is replaced.
            let path = sources::free_path(&out, &format!("train_batch{saved}"), "jpg");
            let mut jpeg = std::io::Cursor::new(Vec::new());
            preview_grid(&batch.images, &batch.targets, &model).write_to(&mut jpeg, image::ImageFormat::Jpeg)?;
            rtmdet::files::write_new_atomically(&path, jpeg.get_ref())?;
            saved += 1;
            if saved >= args.batches {
                eprintln!("{saved} batches saved to {}", out.display());
                return Ok(());
            }
        }
    }
    Ok(())
}
