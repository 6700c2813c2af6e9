//! `rtmdet bench data`: whether the training data pipeline keeps up with the model. The
//! pipeline `train` would run on the dataset (its worker pool, both stages, cached Mosaic and
//! MixUp, masks or rotated boxes as the task has them) builds batches at each worker count, and
//! its augmented images/s are set against the images/s of the model's training step, measured
//! in the same run as `bench train` measures it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use rtmdet::ModelConfig;
use rtmdet::data::pipeline::{Batch, EpochLoader, PipelineConfig, TrainItem};
use rtmdet::train::trainer::{TrainConfig, TrainData};
use serde::Serialize;

use crate::measure::{StepSummary, model_name, time_training_steps};
use crate::train::{DataFlags, print_report, run_options};
use crate::{args, output};

#[derive(Args)]
pub struct BenchDataArgs {
    /// Dataset, as for `train`: an Ultralytics .yaml, a COCO .json, or a DOTA folder (RTMDet-R).
    #[arg(long)]
    pub data: PathBuf,
    /// Model, as for `train`: tiny, s, m, l, x (or nano); ins-tiny … ins-x for RTMDet-Ins.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// (DOTA folders) Classes, as for `train`.
    #[arg(long)]
    pub classes: Option<String>,
    /// (DOTA folders) RTMDet-R's "aug" recipe (cached Mosaic/MixUp), as `train --mosaic`.
    #[arg(long)]
    pub mosaic: bool,
    /// Training image size [default: 640; RTMDet-R 1024].
    #[arg(long, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: Option<usize>,
    #[arg(long, default_value_t = 8, value_parser = args::positive, allow_negative_numbers = true)]
    pub batch: usize,
    /// Comma-separated data worker counts.
    #[arg(long, default_value = "1,2", value_delimiter = ',', value_parser = args::threads, allow_negative_numbers = true)]
    pub workers: Vec<usize>,
    /// Augmented batches per stage and worker count (at least the largest worker count).
    #[arg(long, default_value_t = 10, value_parser = args::positive, allow_negative_numbers = true)]
    pub iters: usize,
    /// Timed training steps of the model (after one warm-up step).
    #[arg(long, default_value_t = 2, value_parser = args::positive, allow_negative_numbers = true)]
    pub steps: usize,
    /// Write the results as JSON (a new file, unless --exist-ok).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace an existing --json file.
    #[arg(long)]
    pub exist_ok: bool,
}

/// `train`'s default seed: the same shuffles and augmentations as a run's first epoch.
const SEED: u64 = 0;

/// The model's training step at the benchmark's batch and image size.
#[derive(Serialize)]
struct ModelSpeed {
    name: String,
    threads: usize,
    #[serde(flatten)]
    step: StepSummary,
    images_per_s: f64,
}

/// One pipeline stage at one worker count.
#[derive(Serialize)]
struct DataSpeed {
    stage: usize,
    augmentation: &'static str,
    workers: usize,
    images: usize,
    seconds: f64,
    images_per_s: f64,
    keeps_up: bool,
    /// Cores the workers keep busy when they only have to match the model's pace: in a run
    /// they share the machine with the training step.
    cores_at_model_pace: f64,
}

#[derive(Serialize)]
struct Verdict {
    keeps_up: bool,
    /// The fewest workers that keep up in every stage (measured when `keeps_up`, otherwise
    /// estimated from the best rate per worker).
    workers_needed: usize,
    text: String,
}

#[derive(Serialize)]
struct Report {
    dataset: String,
    batch: usize,
    imgsz: usize,
    iters: usize,
    model: ModelSpeed,
    data: Vec<DataSpeed>,
    verdict: Verdict,
}

pub fn run(args: BenchDataArgs) -> Result<()> {
    let most_workers = args.workers.iter().copied().max().unwrap_or(1);
    if args.iters < most_workers {
        // The loader gives each worker whole batches: with fewer batches some would idle.
        bail!("--iters {} is fewer than --workers {most_workers}: give at least one batch per worker", args.iters);
    }
    if let Some(json) = &args.json {
        output::check(json, args.exist_ok, &[&args.data])?;
    }
    let opts = run_options(&DataFlags {
        data: &args.data,
        model: &args.model,
        classes: args.classes.as_deref(),
        mosaic: args.mosaic,
        imgsz: args.imgsz,
        batch: args.batch,
        workers: most_workers,
    })?;
    let train = TrainData::load(&opts)?;
    print_report(&train.dataset);
    let (b, s) = (opts.batch, opts.imgsz);
    let items = Arc::new(cycled(&train.items, args.iters * b));
    let stages = stages(&train.cfg);
    let model = model_speed(&train.cfg.model, &items, &stages[0].1, (b, s), args.steps)?;
    print_model(&model, b, s);

    println!("data pipeline of {}: {} batches per stage and worker count", train.dataset.name, args.iters);
    println!(
        "{:>5} {:<28} {:>7} {:>9} {:>9} {:>8} {:>13}",
        "stage", "augmentation", "workers", "img/s", "ms/batch", "keeps up", "cores at pace"
    );
    let mut rows = Vec::new();
    for (stage, cfg) in &stages {
        for &workers in &args.workers {
            let row = data_speed(&items, (*stage, cfg), b, workers, model.images_per_s)?;
            println!(
                "{:>5} {:<28} {workers:>7} {:>9.1} {:>9.1} {:>8} {:>13.3}",
                row.stage,
                row.augmentation,
                row.images_per_s,
                1e3 * row.seconds / args.iters as f64,
                if row.keeps_up { "yes" } else { "no" },
                row.cores_at_model_pace
            );
            rows.push(row);
        }
    }
    let verdict = verdict(&rows, &stages, model.images_per_s);
    println!("verdict: {}", verdict.text);
    if let Some(path) = &args.json {
        let dataset = train.dataset.name.clone();
        let report = Report { dataset, batch: b, imgsz: s, iters: args.iters, model, data: rows, verdict };
        output::write_json(path, &report, args.exist_ok)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// The model's training step on a batch of the first stage, on the global thread pool (all
/// cores, as in `train`).
fn model_speed(
    cfg: &ModelConfig,
    items: &[TrainItem],
    stage1: &PipelineConfig,
    (batch, imgsz): (usize, usize),
    steps: usize,
) -> Result<ModelSpeed> {
    let batch = model_batch(items, stage1, batch)?;
    let step =
        time_training_steps(cfg, &batch.input, &batch.targets, imgsz, steps, &rtmdet::burn::tensor::Device::flex())?;
    Ok(ModelSpeed {
        name: model_name(cfg),
        threads: rayon::current_num_threads(),
        step,
        images_per_s: batch.targets.len() as f64 / step.step_s,
    })
}

fn print_model(m: &ModelSpeed, batch: usize, imgsz: usize) {
    let t = &m.step;
    println!(
        "{}, batch {batch}, {imgsz}x{imgsz}: training step {:.3} s (forward {:.3}, loss {:.3}, backward {:.3}, \
         optim+ema {:.3}) on {} threads: {:.2} img/s",
        m.name, t.step_s, t.forward_s, t.loss_s, t.backward_s, t.optimizer_s, m.threads, m.images_per_s
    );
}

/// One stage's pipeline at one worker count, against the model's pace.
fn data_speed(
    items: &Arc<Vec<TrainItem>>,
    (stage, cfg): (usize, &PipelineConfig),
    batch: usize,
    workers: usize,
    model_ips: f64,
) -> Result<DataSpeed> {
    let (images, seconds) = run_epoch(items, cfg, batch, workers)?;
    let images_per_s = images as f64 / seconds;
    Ok(DataSpeed {
        stage,
        augmentation: augmentation(cfg),
        workers,
        images,
        seconds,
        images_per_s,
        keeps_up: images_per_s >= model_ips,
        cores_at_model_pace: model_ips * workers as f64 / images_per_s,
    })
}

/// `n` items cycling through the dataset's, so that every worker count builds `--iters` full
/// batches even from a small dataset (coco8 at batch 8 is one batch per epoch, which would
/// leave a second worker idle and measure only the epoch's start).
fn cycled(items: &[TrainItem], n: usize) -> Vec<TrainItem> {
    items.iter().cycle().take(n).cloned().collect()
}

/// The pipelines a run goes through, numbered as its stages: two, or RTMDet-R's plain recipe's
/// one.
fn stages(cfg: &TrainConfig) -> Vec<(usize, PipelineConfig)> {
    let mut stages = vec![(1, cfg.stage1.clone())];
    if cfg.stage2 != cfg.stage1 {
        stages.push((2, cfg.stage2.clone()));
    }
    stages
}

fn augmentation(cfg: &PipelineConfig) -> &'static str {
    match (&cfg.rotated, cfg.strong, cfg.masks) {
        (Some(r), _, _) if !r.random_resize_crop => "resize, flips, rotation",
        (Some(_), true, _) => "Mosaic/MixUp, rotation",
        (Some(_), false, _) => "no Mosaic/MixUp, rotation",
        (None, true, true) => "Mosaic/MixUp, masks",
        (None, false, true) => "no Mosaic/MixUp, masks",
        (None, true, false) => "Mosaic/MixUp",
        (None, false, false) => "no Mosaic/MixUp",
    }
}

/// A batch as the first stage builds it, for the model's step: real targets, so the loss sees
/// the task's objects (boxes, masks or rotated boxes).
fn model_batch(items: &[TrainItem], cfg: &PipelineConfig, batch: usize) -> Result<Batch> {
    let first = Arc::new(items[..batch.min(items.len())].to_vec());
    match EpochLoader::new(first, cfg.clone(), batch, 1, SEED, 0).next() {
        Some(b) => Ok(b?),
        None => bail!("no training image to build a batch from"),
    }
}

/// The images and seconds of one epoch of `items` through the pipeline with `workers` workers,
/// taken as fast as they come. Starting the workers and filling the Mosaic/MixUp caches is
/// counted: every epoch of a run pays it.
fn run_epoch(items: &Arc<Vec<TrainItem>>, cfg: &PipelineConfig, batch: usize, workers: usize) -> Result<(usize, f64)> {
    let t0 = Instant::now();
    let mut images = 0;
    for b in EpochLoader::new(items.clone(), cfg.clone(), batch, workers, SEED, 0) {
        images += b?.images.len();
    }
    Ok((images, t0.elapsed().as_secs_f64()))
}

/// Whether some measured worker count keeps up with the model in every stage, and the fewest
/// that do; otherwise an estimate from the best rate per worker (linear scaling: optimistic,
/// above all beyond the cores).
fn verdict(rows: &[DataSpeed], stages: &[(usize, PipelineConfig)], model_ips: f64) -> Verdict {
    let of = |stage: usize| rows.iter().filter(move |r| r.stage == stage);
    let measured: Option<Vec<usize>> =
        stages.iter().map(|(stage, _)| of(*stage).filter(|r| r.keeps_up).map(|r| r.workers).min()).collect();
    if let Some(needed) = measured.and_then(|n| n.into_iter().max()) {
        let rates: Vec<String> = rows
            .iter()
            .filter(|r| r.workers == needed)
            .map(|r| format!("stage {} {:.1} img/s", r.stage, r.images_per_s))
            .collect();
        let text = format!(
            "the data pipeline keeps up: {needed} worker{} suffice{} ({} ≥ the model's {model_ips:.2} img/s)",
            if needed == 1 { "" } else { "s" },
            if needed == 1 { "s" } else { "" },
            rates.join(", ")
        );
        return Verdict { keeps_up: true, workers_needed: needed, text };
    }
    // The slowest stage at its best rate per worker sets the estimate.
    let (stage, per_worker) = stages
        .iter()
        .map(|(stage, _)| (*stage, of(*stage).map(|r| r.images_per_s / r.workers as f64).fold(0.0, f64::max)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one stage");
    let needed = (model_ips / per_worker).ceil() as usize;
    let best = of(stage).map(|r| r.images_per_s).fold(0.0, f64::max);
    let cores = rtmdet::engine::cpu::default_threads();
    let beyond = if needed > cores { format!(", more than this machine's {cores} cores") } else { String::new() };
    let text = format!(
        "the data pipeline does not keep up: stage {stage} gives at most {best:.1} img/s against the model's \
         {model_ips:.2} img/s; about {needed} workers needed ({per_worker:.1} img/s per worker{beyond})"
    );
    Verdict { keeps_up: false, workers_needed: needed, text }
}
