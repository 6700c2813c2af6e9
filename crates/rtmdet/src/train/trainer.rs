//! The training loop: data workers → train-mode forward → assignment and loss → backward →
//! AdamW with the flat-cosine schedule → EMA; validation of the EMA weights; a run folder with
//! checkpoints, `args.yaml`, `results.csv`, `results.png` and augmented batch previews.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ema::ExpMomentumEma;
use super::optim::AdamW;
use super::schedule::{LrPolicy, LrSchedule, RecipeLr, default_warmup_iters};
use crate::assign::DynamicSoftLabelAssigner;
use crate::config::{ModelConfig, Size, Task};
use crate::data::Dataset;
use crate::data::pipeline::{Batch, EpochLoader, PipelineConfig, TrainItem, left_out_objects, train_items};
use crate::detector::Detector;
use crate::error::{Error, Result};
use crate::eval::validate::{DotaSettings, validate, validate_rotated};
use crate::files::{DirLock, write_error};
use crate::loss::detection::detection_loss;
use crate::loss::ins::ins_loss;
use crate::loss::rotated::rotated_loss;
use crate::model::RtmDet;
use crate::postprocess::DetectParams;
use crate::structures::Instances;
use crate::weights::safetensors::{TRAIN_PREFIX, load_all, save_with, write_atomically};
use crate::weights::{ReadOptions, TensorMap, collect, load_into, load_into_except};

/// Every resolved hyper-parameter of a run (written to `args.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: PathBuf,
    /// A separate validation set (COCO JSON); YAML datasets use their `val` split.
    pub val_data: Option<PathBuf>,
    pub weights: Option<PathBuf>,
    pub model: ModelConfig,
    pub epochs: usize,
    pub stage2_epochs: usize,
    pub batch: usize,
    pub imgsz: usize,
    pub workers: usize,
    pub val_interval: usize,
    pub seed: u64,
    /// The effective base learning rate.
    pub lr: f64,
    /// Where `lr` came from. Runs started before it was recorded scaled the lr with the batch.
    #[serde(default = "scaled_before_recorded")]
    pub lr_policy: LrPolicy,
    /// The effective warm-up length.
    pub warmup_iters: usize,
    /// Batches per epoch (images with objects / batch), which turns the epochs of the schedule
    /// into iterations. 0 in runs started before it was recorded (taken from the data on resume).
    #[serde(default)]
    pub iters_per_epoch: usize,
    pub weight_decay: f64,
    pub min_lr_ratio: f64,
    pub ema_momentum: f64,
    pub ema_gamma: f64,
    pub stage1: PipelineConfig,
    pub stage2: PipelineConfig,
}

/// What the user chooses; everything else follows the official recipe.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub val_data: Option<PathBuf>,
    pub size: Size,
    pub weights: Option<PathBuf>,
    pub epochs: usize,
    pub batch: usize,
    pub imgsz: usize,
    pub workers: usize,
    pub val_interval: usize,
    pub seed: u64,
    /// Base learning rate (default: the recipe's, see [`super::schedule`]).
    pub lr: Option<f64>,
    /// Scale the recipe's lr linearly with the batch (ignored when `lr` is given).
    pub scale_lr: bool,
    /// Warm-up iterations (default: [`default_warmup_iters`]).
    pub warmup_iters: Option<usize>,
    /// Final epochs without Mosaic/MixUp (default: 20 of 300, proportionally).
    pub stage2_epochs: Option<usize>,
    /// Class names of a DOTA folder (default: DOTA-v1.0's 15, DIOR-R's 20 for XML labels).
    pub classes: Option<Vec<String>>,
    /// RTMDet-R: mmrotate's "aug" recipe (cached Mosaic/MixUp, random resize and crop, the
    /// last tenth of the epochs without Mosaic/MixUp). Detection always trains this way.
    pub mosaic: bool,
    /// Detection or instance segmentation (RTMDet-Ins); a DOTA folder trains RTMDet-R whatever
    /// this says.
    pub task: Task,
}

/// Whether `data` names a DOTA folder, i.e. a rotated-box (RTMDet-R) training set.
pub fn is_rotated_data(data: &Path) -> bool {
    data.is_dir()
}

fn scaled_before_recorded() -> LrPolicy {
    LrPolicy::Scaled
}

/// A dataset by path; DOTA folders are read with `classes`.
fn load_data(path: &Path, split: &str, classes: &[String]) -> Result<Dataset> {
    if is_rotated_data(path) { crate::data::dota::load(path, classes) } else { Dataset::load(path, split) }
}

impl TrainConfig {
    /// Every hyper-parameter of a run on `train_images` trainable images. A rotated dataset
    /// gives RTMDet-R with mmrotate's recipe (spec §11.5): lr 2.5e-4 (tuned at 8 images), one
    /// pipeline (flip, rotate) for all epochs.
    pub fn resolve(o: &TrainOptions, classes: Vec<String>, train_images: usize) -> Result<Self> {
        if o.epochs == 0 || o.batch == 0 || o.imgsz == 0 || !o.imgsz.is_multiple_of(32) {
            return Err(Error::Config("epochs and batch must be positive, imgsz a multiple of 32".into()));
        }
        let rotated = is_rotated_data(&o.data);
        let ins = o.task == Task::Segment;
        if rotated && ins {
            return Err(Error::Config("a DOTA folder trains RTMDet-R, not an instance segmentation model".into()));
        }
        let mut model = match (rotated, ins) {
            (true, _) => ModelConfig::rotated(o.size),
            (false, true) => ModelConfig::ins(o.size),
            _ => ModelConfig::new(o.size),
        }
        .with_num_classes(classes.len());
        model.class_names = classes.clone();
        model.input_size = o.imgsz;
        let (stage1, stage2) = if rotated && o.mosaic {
            let p = PipelineConfig::rotated_aug(o.size, o.imgsz, &classes);
            (p.clone(), p.weak())
        } else if rotated {
            let p = PipelineConfig::rotated(o.size, o.imgsz, &classes);
            (p.clone(), p)
        } else if ins {
            (PipelineConfig::stage1(o.size, o.imgsz).with_masks(), PipelineConfig::stage2(o.size, o.imgsz).with_masks())
        } else {
            (PipelineConfig::stage1(o.size, o.imgsz), PipelineConfig::stage2(o.size, o.imgsz))
        };
        let recipe = RecipeLr::of(&model);
        let (lr, lr_policy) = match (o.lr, o.scale_lr) {
            (Some(lr), _) => (lr, LrPolicy::Given),
            (None, true) => (recipe.scaled_to(o.batch), LrPolicy::Scaled),
            (None, false) => (recipe.lr, LrPolicy::Recipe),
        };
        let iters_per_epoch = train_images.div_ceil(o.batch);
        Ok(TrainConfig {
            data: o.data.clone(),
            val_data: o.val_data.clone(),
            weights: o.weights.clone(),
            model,
            epochs: o.epochs,
            // 20 of 300 epochs (detection) or 10 of 100 (RTMDet-R "aug"), proportionally.
            stage2_epochs: o
                .stage2_epochs
                .unwrap_or((o.epochs as f64 * if rotated { 0.1 } else { 20.0 / 300.0 }).round() as usize)
                .clamp(1, o.epochs),
            batch: o.batch,
            imgsz: o.imgsz,
            workers: o.workers.max(1),
            val_interval: o.val_interval.max(1),
            seed: o.seed,
            lr,
            lr_policy,
            warmup_iters: o.warmup_iters.unwrap_or_else(|| default_warmup_iters(o.epochs, iters_per_epoch)),
            iters_per_epoch,
            weight_decay: 0.05,
            min_lr_ratio: 0.05,
            ema_momentum: 0.0002,
            ema_gamma: 2000.0,
            stage1,
            stage2,
        })
    }

    /// The run's learning-rate schedule, from the stored values only (so a resumed run follows
    /// the schedule it started with).
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule::flat_cosine(self.lr, self.warmup_iters, self.epochs, self.iters_per_epoch, self.min_lr_ratio)
    }

    /// The schedule in words (epochs counted from 1), as printed at the start of a run and
    /// written at the top of `args.yaml`: `lr 4.00e-3 (the recipe's, not scaled with batch 4),
    /// warm-up 10 iterations, flat to epoch 15, cosine to 2.00e-4 over epochs 16-30, stage 2
    /// from epoch 29; 1 iteration per epoch`.
    pub fn schedule_summary(&self) -> String {
        let origin = match self.lr_policy {
            LrPolicy::Recipe => format!("the recipe's, not scaled with batch {}", self.batch),
            LrPolicy::Scaled => format!("scaled to batch {}", self.batch),
            LrPolicy::Given => "given".to_string(),
        };
        let cosine_from = LrSchedule::cosine_begin_epoch(self.epochs) + 1;
        let flat = if cosine_from > 1 { format!("flat to epoch {}, ", cosine_from - 1) } else { String::new() };
        let mut text = format!(
            "lr {:.2e} ({origin}), warm-up {} iterations, {flat}cosine to {:.2e} over epochs {cosine_from}-{}",
            self.lr,
            self.warmup_iters,
            self.lr * self.min_lr_ratio,
            self.epochs
        );
        // RTMDet-R's plain recipe has one pipeline throughout: no switch to speak of.
        if self.stage1 != self.stage2 {
            text.push_str(&format!(", stage 2 from epoch {}", self.epochs - self.stage2_epochs + 1));
        }
        let s = if self.iters_per_epoch == 1 { "" } else { "s" };
        text.push_str(&format!("; {} iteration{s} per epoch", self.iters_per_epoch));
        text
    }
}

/// One row of `results.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    /// Mean of each loss term over the epoch, in the task's order
    /// ([`crate::config::Task::loss_terms`]). Empty in rows written before the loss terms were
    /// named (their `loss_cls`/`loss_bbox` are not read back).
    #[serde(default)]
    pub losses: Vec<f64>,
    pub lr: f64,
    pub ap: Option<f64>,
    pub ap50: Option<f64>,
    pub seconds: f64,
}

/// Where a run stands; saved in every checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch in progress (or next to start).
    pub epoch: usize,
    /// Batches of that epoch already trained.
    pub batch_in_epoch: usize,
    /// Iterations trained so far.
    pub iter: usize,
    pub adam_step: u64,
    pub ema_steps: u64,
    pub best_ap: Option<f64>,
    pub history: Vec<EpochRow>,
    /// Running sums of each loss term over the epoch in progress.
    #[serde(default)]
    pub epoch_losses: Vec<f64>,
}

/// Progress reports for a user interface.
pub enum TrainEvent<'a> {
    EpochStart {
        epoch: usize,
        epochs: usize,
        batches: usize,
        stage2: bool,
    },
    /// `losses` in the order of `names` (the task's loss terms).
    Iteration {
        batch: usize,
        names: &'static [&'static str],
        losses: &'a [f64],
        lr: f64,
        instances: usize,
        images_per_s: f64,
    },
    Validating {
        epoch: usize,
    },
    EpochEnd {
        row: &'a EpochRow,
    },
    Saved {
        path: &'a Path,
    },
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub run_dir: PathBuf,
    pub state: TrainState,
    model: RtmDet,
    opt: AdamW,
    ema: ExpMomentumEma,
    device: Device,
    train: Arc<Vec<TrainItem>>,
    val: Dataset,
    /// Held while this trainer exists: one process writes a run folder at a time.
    _lock: DirLock,
}

/// Claims the next free `out/<n>` folder: `create_dir` fails when another process took the
/// number first, so concurrent runs never share a folder.
fn new_run_dir(out: &Path) -> Result<PathBuf> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Other(format!("--out {} is a file; give a folder for the runs", out.display())));
    }
    std::fs::create_dir_all(out).map_err(|e| write_error(out, e))?;
    for n in 1.. {
        let dir = out.join(n.to_string());
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(write_error(&dir, e)),
        }
    }
    unreachable!("some run number is free")
}

const STATE_KEY: &str = "rtmdet_train_state";
const TRAIN_CONFIG_KEY: &str = "rtmdet_train_config";

fn json_err(e: serde_json::Error) -> Error {
    Error::Other(e.to_string())
}

/// The validation set: `val_data`, else the YAML's `val` split, else (a COCO file) the
/// training set itself.
fn load_val(cfg: &TrainConfig, train: &Dataset) -> Result<Dataset> {
    match &cfg.val_data {
        Some(v) => load_data(v, "val", &cfg.model.class_names),
        None if cfg.data.extension().is_some_and(|e| e == "json") || is_rotated_data(&cfg.data) => Ok(train.clone()),
        None => Dataset::load(&cfg.data, "val"),
    }
}

/// An instance segmentation run needs polygon masks: objects without one (RLE-only or
/// malformed segmentations) are left out, as mmdet ignores them; say how many, and refuse a
/// dataset that has none at all.
fn check_masks(data: &Path, items: &[TrainItem]) -> Result<()> {
    let objects: usize = items.iter().map(|i| i.labels.len()).sum();
    let without: usize = items.iter().flat_map(|i| &i.polygons).filter(|p| p.is_empty()).count();
    if without == objects {
        return Err(Error::Other(format!(
            "{}: no object has a polygon mask; instance segmentation training needs COCO polygons or YOLO-seg rows",
            data.display()
        )));
    }
    if without > 0 {
        eprintln!(
            "warning: {without} of {objects} objects have no polygon mask (RLE-only or malformed) and are left out"
        );
    }
    Ok(())
}

/// A dataset that leaves no object to train on (no labels, or every one dropped or left out)
/// is an error saying why: every image would be background, and the run would learn nothing.
fn nothing_to_train(data: &Path, train: &Dataset) -> Error {
    let left_out = left_out_objects(train);
    let left_out = if left_out.is_empty() { String::new() } else { format!("; left out of training: {left_out}") };
    Error::Other(format!(
        "{}: nothing to train on, no image has a usable object ({}{left_out}); check the labels and the class names",
        data.display(),
        train.report
    ))
}

/// A resumed run follows the schedule it started with, in iterations: the data must still
/// give as many batches per epoch. Runs started before the number was recorded take the data's.
fn check_iters_per_epoch(run_dir: &Path, cfg: &mut TrainConfig, train_images: usize) -> Result<()> {
    let now = train_images.div_ceil(cfg.batch);
    match cfg.iters_per_epoch {
        0 => cfg.iters_per_epoch = now,
        then if then != now => {
            return Err(Error::Other(format!(
                "--resume {}: the training data now gives {now} batches per epoch, the run started with {then} \
                 (images added or removed?); resume with the run's data, or start a new run with --weights {}",
                run_dir.display(),
                run_dir.join("weights/last.safetensors").display()
            )));
        }
        _ => {}
    }
    Ok(())
}

/// A new run's training set: the dataset, its trainable items and the configuration resolved
/// from them (model, both pipeline stages). What [`Trainer::new`] starts from, and what
/// `rtmdet bench data` feeds through the pipeline, so that both see the same data and stages.
pub struct TrainData {
    pub cfg: TrainConfig,
    pub dataset: Dataset,
    pub items: Vec<TrainItem>,
}

impl TrainData {
    /// Reads the training split and resolves the run's configuration; data that leaves
    /// nothing to train on (or, for RTMDet-Ins, no polygon mask) is refused here.
    pub fn load(opts: &TrainOptions) -> Result<Self> {
        let dota = opts.classes.clone().unwrap_or_else(|| crate::data::dota::default_classes(&opts.data));
        let dataset = load_data(&opts.data, "train", &dota)?;
        let items = train_items(&dataset);
        if items.is_empty() {
            return Err(nothing_to_train(&opts.data, &dataset));
        }
        let cfg = TrainConfig::resolve(opts, dataset.class_names(), items.len())?;
        if cfg.model.task == Task::Segment {
            check_masks(&cfg.data, &items)?;
        }
        Ok(TrainData { cfg, dataset, items })
    }
}

impl Trainer {
    /// A new run in the next free `out/<n>` folder.
    pub fn new(opts: &TrainOptions, out: &Path, device: Device) -> Result<Self> {
        let TrainData { cfg, dataset: train, items } = TrainData::load(opts)?;
        let val = load_val(&cfg, &train)?;
        let mut model = RtmDet::new(&cfg.model, &device)?;
        if let Some(w) = &cfg.weights {
            init_from(&mut model, &cfg.model, w, &device)?;
        }
        let run_dir = new_run_dir(out)?;
        let lock = DirLock::acquire(&run_dir)?;
        std::fs::create_dir_all(run_dir.join("weights")).map_err(|e| write_error(&run_dir.join("weights"), e))?;
        // The schedule in words above the values it follows from.
        let yaml = serde_yaml_ng::to_string(&cfg).map_err(|e| Error::Other(e.to_string()))?;
        let text = format!("# {}\n{yaml}", cfg.schedule_summary());
        write_atomically(&run_dir.join("args.yaml"), text.as_bytes())?;
        let opt = AdamW { weight_decay: cfg.weight_decay, ..AdamW::default() };
        let ema = ExpMomentumEma { momentum: cfg.ema_momentum, gamma: cfg.ema_gamma, ..ExpMomentumEma::default() };
        let state = TrainState::default();
        Ok(Trainer { cfg, run_dir, state, model, opt, ema, device, train: Arc::new(items), val, _lock: lock })
    }

    /// Continues the run in `run_dir` from `weights/last.safetensors`, exactly where it stopped.
    pub fn resume(run_dir: &Path, device: Device) -> Result<Self> {
        if !run_dir.is_dir() {
            return Err(Error::Other(format!("--resume {}: not a run folder", run_dir.display())));
        }
        let lock = DirLock::acquire(run_dir)?;
        // A process killed while saving (SIGKILL, power loss) left its temporary file behind.
        crate::files::remove_stale_temporaries(&run_dir.join("weights"));
        let path = run_dir.join("weights/last.safetensors");
        if !path.is_file() {
            return Err(Error::Other(format!(
                "--resume {}: not a run folder (it has no weights/last.safetensors)",
                run_dir.display()
            )));
        }
        let (_, map, meta) = load_all(&path)?;
        let get =
            |k: &str| meta.get(k).ok_or_else(|| Error::weights(&path, format!("not a training checkpoint (no {k})")));
        let mut cfg: TrainConfig = serde_json::from_str(get(TRAIN_CONFIG_KEY)?).map_err(json_err)?;
        let state: TrainState = serde_json::from_str(get(STATE_KEY)?).map_err(json_err)?;
        let strip = |prefix: &str| -> TensorMap {
            map.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone()))).collect()
        };
        let mut model = RtmDet::new(&cfg.model, &device)?;
        load_into(&mut model, &strip(&format!("{TRAIN_PREFIX}model.")), &device)?;
        let (m, v) = (strip(&format!("{TRAIN_PREFIX}optim.m.")), strip(&format!("{TRAIN_PREFIX}optim.v.")));
        let moments = m.into_iter().filter_map(|(k, mt)| v.get(&k).map(|vt| (k, (mt, vt.clone())))).collect();
        let opt = AdamW { weight_decay: cfg.weight_decay, step: state.adam_step, moments, ..AdamW::default() };
        let averaged = map.into_iter().filter(|(k, _)| !k.starts_with(TRAIN_PREFIX)).collect();
        let ema = ExpMomentumEma { momentum: cfg.ema_momentum, gamma: cfg.ema_gamma, steps: state.ema_steps, averaged };
        let train = load_data(&cfg.data, "train", &cfg.model.class_names)?;
        let val = load_val(&cfg, &train)?;
        let items = Arc::new(train_items(&train));
        check_iters_per_epoch(run_dir, &mut cfg, items.len())?;
        let run_dir = run_dir.to_path_buf();
        Ok(Trainer { cfg, run_dir, state, model, opt, ema, device, train: items, val, _lock: lock })
    }

    /// The model being trained.
    pub fn model(&self) -> &RtmDet {
        &self.model
    }

    /// Trains until the last epoch, or until `stop` is raised (then `last` is saved first).
    /// Returns whether the run completed.
    pub fn run(&mut self, stop: &AtomicBool, on: &mut dyn FnMut(TrainEvent)) -> Result<bool> {
        let schedule = self.cfg.schedule();
        let assigner = DynamicSoftLabelAssigner::default();
        while self.state.epoch < self.cfg.epochs {
            let epoch = self.state.epoch;
            let stage2 = epoch >= self.cfg.epochs - self.cfg.stage2_epochs;
            let pipe = if stage2 { self.cfg.stage2.clone() } else { self.cfg.stage1.clone() };
            let loader =
                EpochLoader::new(self.train.clone(), pipe, self.cfg.batch, self.cfg.workers, self.cfg.seed, epoch);
            let batches = loader.num_batches();
            on(TrainEvent::EpochStart { epoch, epochs: self.cfg.epochs, batches, stage2 });
            let started = Instant::now();
            let skip = self.state.batch_in_epoch;
            for batch in loader {
                let batch = batch?;
                if batch.index < skip {
                    continue; // replayed to reach the interrupted position
                }
                if epoch == 0 && batch.index < 3 {
                    self.save_preview(&batch)?;
                }
                let t = Instant::now();
                let losses = self.step(&batch, &assigner, schedule.lr(self.state.iter))?;
                let n = batch.images.len();
                on(TrainEvent::Iteration {
                    batch: batch.index,
                    names: self.cfg.model.task.loss_terms(),
                    losses: &losses,
                    lr: schedule.lr(self.state.iter - 1),
                    instances: batch.targets.iter().map(Instances::len).sum(),
                    images_per_s: n as f64 / t.elapsed().as_secs_f64(),
                });
                if stop.load(Ordering::SeqCst) {
                    let path = self.run_dir.join("weights/last.safetensors");
                    self.save_checkpoint(&path)?;
                    on(TrainEvent::Saved { path: &path });
                    return Ok(false);
                }
            }
            let done = self.state.batch_in_epoch.max(1) as f64;
            let mut row = EpochRow {
                epoch: epoch + 1,
                losses: self.state.epoch_losses.iter().map(|l| l / done).collect(),
                lr: schedule.lr(self.state.iter.saturating_sub(1)),
                ap: None,
                ap50: None,
                seconds: started.elapsed().as_secs_f64(),
            };
            let last = epoch + 1 == self.cfg.epochs;
            if (epoch + 1).is_multiple_of(self.cfg.val_interval) || stage2 || last {
                on(TrainEvent::Validating { epoch });
                let stats = self.validate()?;
                row.ap = Some(stats[0]);
                row.ap50 = Some(stats[1]);
            }
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
            self.state.epoch_losses.clear();
            self.state.history.push(row.clone());
            let improved = row.ap.is_some_and(|ap| self.state.best_ap.is_none_or(|b| ap > b));
            if improved {
                self.state.best_ap = row.ap;
            }
            let last_path = self.run_dir.join("weights/last.safetensors");
            self.save_checkpoint(&last_path)?;
            if improved {
                self.save_checkpoint(&self.run_dir.join("weights/best.safetensors"))?;
            }
            self.write_results()?;
            on(TrainEvent::EpochEnd { row: &row });
        }
        Ok(true)
    }

    /// One optimisation step; returns the batch's loss terms.
    fn step(&mut self, batch: &Batch, assigner: &DynamicSoftLabelAssigner, lr: f64) -> Result<Vec<f64>> {
        let s = self.cfg.imgsz;
        let x =
            Tensor::<4>::from_data(TensorData::new(batch.input.clone(), [batch.images.len(), 3, s, s]), &self.device);
        let names = self.cfg.model.task.loss_terms();
        let step = optimisation_step(&mut self.model, &mut self.opt, &mut self.ema, x, &batch.targets, assigner, lr)?
            .map_err(|losses| {
            let terms: Vec<String> = names.iter().zip(&losses).map(|(n, v)| format!("{n} {v}")).collect();
            Error::Other(format!(
                "the loss is not finite at iteration {} (epoch {}, batch {}): {}; \
                     nothing was saved from this step (try a lower --lr)",
                self.state.iter,
                self.state.epoch + 1,
                batch.index,
                terms.join(", ")
            ))
        })?;
        self.state.iter += 1;
        self.state.batch_in_epoch = batch.index + 1;
        self.state.epoch_losses.resize(step.losses.len(), 0.0);
        for (sum, l) in self.state.epoch_losses.iter_mut().zip(&step.losses) {
            *sum += l;
        }
        self.state.adam_step = self.opt.step;
        self.state.ema_steps = self.ema.steps;
        Ok(step.losses)
    }

    /// The EMA weights as an inference detector.
    pub fn ema_detector(&self) -> Result<Detector> {
        let mut det = Detector::from_tensors(self.cfg.model.clone(), &self.ema.averaged, Device::flex())?;
        det.input_size = self.cfg.imgsz;
        Ok(det)
    }

    /// COCO stats of the EMA weights on the validation set. A rotated model is scored with
    /// DOTA mAP (IoU 0.5, VOC07), which fills both the AP and the AP50 entries.
    pub fn validate(&self) -> Result<[f64; 12]> {
        let det = self.ema_detector()?;
        if self.cfg.model.task == Task::Rotated {
            let params = DetectParams::for_task(Task::Rotated);
            let v = validate_rotated(&det, &self.val, &params, self.cfg.batch, DotaSettings::default(), |_, _| {})?;
            let mut stats = [-1.0; 12];
            stats[0] = v.eval.map as f64;
            stats[1] = v.eval.map as f64;
            return Ok(stats);
        }
        let params = DetectParams::eval_for_task(self.cfg.model.task);
        Ok(validate(&det, &self.val, &params, self.cfg.batch, |_, _| {})?.eval.stats)
    }

    /// Writes model, EMA, optimizer and state atomically. The EMA weights sit under the plain
    /// names, so the file is also a detector checkpoint (`rtmdet predict --weights`).
    pub fn save_checkpoint(&mut self, path: &Path) -> Result<()> {
        let mut map: TensorMap = self.ema.averaged.clone();
        for (k, v) in collect(&mut self.model) {
            map.insert(format!("{TRAIN_PREFIX}model.{k}"), v);
        }
        for (k, (m, v)) in &self.opt.moments {
            map.insert(format!("{TRAIN_PREFIX}optim.m.{k}"), m.clone());
            map.insert(format!("{TRAIN_PREFIX}optim.v.{k}"), v.clone());
        }
        let state = serde_json::to_string(&self.state).map_err(json_err)?;
        let cfg = serde_json::to_string(&self.cfg).map_err(json_err)?;
        save_with(path, &self.cfg.model, &map, &[(STATE_KEY, state), (TRAIN_CONFIG_KEY, cfg)])
    }

    fn write_results(&self) -> Result<()> {
        let fmt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.5}"));
        let names = self.cfg.model.task.loss_terms();
        let mut csv = String::from("epoch,");
        for n in names {
            csv.push_str(&format!("train/{n},"));
        }
        csv.push_str("lr,metrics/AP,metrics/AP50,time\n");
        for r in &self.state.history {
            csv.push_str(&format!("{},", r.epoch));
            for i in 0..names.len() {
                csv.push_str(&format!("{},", fmt(r.losses.get(i).copied())));
            }
            csv.push_str(&format!("{:.6e},{},{},{:.1}\n", r.lr, fmt(r.ap), fmt(r.ap50), r.seconds));
        }
        write_atomically(&self.run_dir.join("results.csv"), csv.as_bytes())?;
        let series = |name: &str, f: &dyn Fn(&EpochRow) -> Option<f64>| {
            (
                name.to_string(),
                self.state.history.iter().filter_map(|r| f(r).map(|v| (r.epoch as f64, v))).collect::<Vec<_>>(),
            )
        };
        let mut plots: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| series(&format!("train/{n}"), &|r| r.losses.get(i).copied()))
            .collect();
        plots.push(series("lr", &|r| Some(r.lr)));
        plots.push(series("metrics/AP", &|r| r.ap));
        plots.push(series("metrics/AP50", &|r| r.ap50));
        crate::viz::plots::series_grid(&self.run_dir.join("results.png"), &plots)
    }

    /// `train_batch<k>.jpg`: the augmented images of a batch with their boxes.
    fn save_preview(&self, batch: &Batch) -> Result<()> {
        let img = preview_grid(&batch.images, &batch.targets, &self.cfg.model);
        let path = self.run_dir.join(format!("train_batch{}.jpg", batch.index));
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .map_err(|e| Error::Other(format!("encoding {}: {e}", path.display())))?;
        write_atomically(&path, jpeg.get_ref())
    }
}

/// Tiles images with their boxes drawn into one picture.
pub fn preview_grid(
    images: &[crate::image_io::BgrImage],
    targets: &[Instances],
    model: &ModelConfig,
) -> image::RgbImage {
    let cols = (images.len() as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (images.len() as u32).div_ceil(cols);
    let (tw, th) = (
        images.iter().map(|i| i.width).max().unwrap_or(1) as u32,
        images.iter().map(|i| i.height).max().unwrap_or(1) as u32,
    );
    let mut grid = image::RgbImage::from_pixel(cols * tw, rows * th, image::Rgb([114, 114, 114]));
    for (i, (img, t)) in images.iter().zip(targets).enumerate() {
        let mut tile = img.to_rgb();
        crate::viz::draw_instances(&mut tile, t, |l| model.class_name(l));
        image::imageops::replace(&mut grid, &tile, ((i as u32 % cols) * tw) as i64, ((i as u32 / cols) * th) as i64);
    }
    grid
}

/// Loads initial weights; a classifier of another width (fine-tuning to new classes) keeps
/// its fresh initialisation.
fn init_from(model: &mut RtmDet, cfg: &ModelConfig, path: &Path, device: &Device) -> Result<()> {
    let (init_cfg, map) = crate::weights::read(path, &ReadOptions { size: Some(cfg.size), ..Default::default() })?;
    if init_cfg.num_classes == cfg.num_classes {
        load_into(model, &map, device)
    } else {
        load_into_except(model, &map, device, &["bbox_head.rtm_cls."])
    }
    .map_err(|e| Error::weights(path, e))
}

/// The time of each phase of an optimisation step, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    pub forward: f64,
    pub loss: f64,
    pub backward: f64,
    /// AdamW and the EMA update.
    pub optimizer: f64,
}

/// What one optimisation step did.
pub struct StepOutcome {
    /// The loss terms of the batch, in the task's order.
    pub losses: Vec<f64>,
    pub times: StepTimes,
}

/// Forward (train mode) → assignment and loss → backward → AdamW → EMA on one batch: the step
/// the trainer repeats and `rtmdet bench train` times. A non-finite loss stops before the
/// backward pass and leaves the model untouched (`Ok(Err(losses))`).
pub fn optimisation_step(
    model: &mut RtmDet,
    opt: &mut AdamW,
    ema: &mut ExpMomentumEma,
    input: Tensor<4>,
    targets: &[Instances],
    assigner: &DynamicSoftLabelAssigner,
    lr: f64,
) -> Result<std::result::Result<StepOutcome, Vec<f64>>> {
    let t0 = Instant::now();
    let (outputs, prototypes) = model.forward_with_prototypes(input);
    let t1 = Instant::now();
    // The head's outputs say the task: RTMDet-Ins has prototypes, RTMDet-R an angle per prior.
    let (total, losses) = match prototypes {
        Some(proto) => {
            let l = ins_loss(&outputs, proto, targets, assigner);
            (l.total.clone(), l.terms())
        }
        None if outputs.iter().any(|o| o.angle.is_some()) => {
            let l = rotated_loss(&outputs, targets, assigner);
            (l.total.clone(), l.terms())
        }
        None => {
            let l = detection_loss(&outputs, targets, assigner);
            (l.total.clone(), l.terms())
        }
    };
    let t2 = Instant::now();
    if losses.iter().any(|l| !l.is_finite()) {
        return Ok(Err(losses));
    }
    let grads = total.backward();
    let t3 = Instant::now();
    opt.step(model, &grads, lr)?;
    ema.update(model)?;
    let t4 = Instant::now();
    let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
    let times =
        StepTimes { forward: secs(t0, t1), loss: secs(t1, t2), backward: secs(t2, t3), optimizer: secs(t3, t4) };
    Ok(Ok(StepOutcome { losses, times }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(epochs: usize, batch: usize) -> TrainOptions {
        TrainOptions {
            data: "instances_train2017.json".into(),
            val_data: None,
            size: Size::Tiny,
            weights: None,
            epochs,
            batch,
            imgsz: 640,
            workers: 2,
            val_interval: 10,
            seed: 0,
            lr: None,
            scale_lr: false,
            warmup_iters: None,
            stage2_epochs: None,
            classes: None,
            mosaic: false,
            task: Task::Detect,
        }
    }

    fn coco() -> Vec<String> {
        crate::classes::COCO.iter().map(|s| s.to_string()).collect()
    }

    /// The defaults give the official recipe (spec §9.3) on COCO train2017 (117,266 images
    /// with objects) at batch 256, with or without `--scale-lr`.
    #[test]
    fn official_recipe_resolves_to_the_spec() {
        let cfg = TrainConfig::resolve(&options(300, 256), coco(), 117_266).unwrap();
        let spec = LrSchedule {
            base_lr: 0.004,
            warmup_iters: 1000,
            warmup_start_factor: 1e-5,
            cosine_begin: 150 * 459,
            total_iters: 300 * 459,
            min_lr_ratio: 0.05,
        };
        assert_eq!(cfg.schedule(), spec);
        assert_eq!((cfg.stage2_epochs, cfg.lr_policy), (20, LrPolicy::Recipe));
        let scaled = TrainConfig::resolve(&TrainOptions { scale_lr: true, ..options(300, 256) }, coco(), 117_266);
        assert_eq!(scaled.unwrap().schedule(), spec);
        assert_eq!(
            cfg.schedule_summary(),
            "lr 4.00e-3 (the recipe's, not scaled with batch 256), warm-up 1000 iterations, flat to epoch 150, \
             cosine to 2.00e-4 over epochs 151-300, stage 2 from epoch 281; 459 iterations per epoch"
        );
    }

    /// coco8 at batch 4 for 30 epochs: 30 iterations, of which a third warm up to the recipe's
    /// lr (the linear batch scaling and the 1000-iteration warm-up left the loss where it was).
    #[test]
    fn a_small_run_warms_up_within_the_run_at_the_recipe_lr() {
        let cfg = TrainConfig::resolve(&options(30, 4), coco(), 4).unwrap();
        assert_eq!((cfg.lr, cfg.warmup_iters, cfg.iters_per_epoch, cfg.stage2_epochs), (0.004, 10, 1, 2));
        assert_eq!(cfg.schedule().lr(10), 0.004);
        assert_eq!(
            cfg.schedule_summary(),
            "lr 4.00e-3 (the recipe's, not scaled with batch 4), warm-up 10 iterations, flat to epoch 15, \
             cosine to 2.00e-4 over epochs 16-30, stage 2 from epoch 29; 1 iteration per epoch"
        );
        let resolve = |o: TrainOptions| TrainConfig::resolve(&o, coco(), 4).unwrap();
        let scaled = resolve(TrainOptions { scale_lr: true, ..options(30, 4) });
        assert_eq!((scaled.lr, scaled.lr_policy), (6.25e-5, LrPolicy::Scaled));
        assert!(scaled.schedule_summary().starts_with("lr 6.25e-5 (scaled to batch 4)"));
        let given = resolve(TrainOptions { lr: Some(0.01), scale_lr: true, warmup_iters: Some(3), ..options(30, 4) });
        assert_eq!((given.lr, given.lr_policy, given.warmup_iters), (0.01, LrPolicy::Given, 3));
        assert!(given.schedule_summary().starts_with("lr 1.00e-2 (given), warm-up 3 iterations"));
        // Each recipe's own lr: RTMDet-Ins-x 0.002, RTMDet-R (a DOTA folder) 2.5e-4.
        let ins_x = resolve(TrainOptions { size: Size::X, task: Task::Segment, ..options(30, 4) });
        assert_eq!(ins_x.lr, 0.002);
        let rotated = resolve(TrainOptions { data: std::env::temp_dir(), ..options(30, 4) });
        assert_eq!(rotated.lr, 2.5e-4);
        assert!(!rotated.schedule_summary().contains("stage 2"), "one pipeline: no switch");
    }

    #[test]
    fn a_resumed_run_keeps_its_iterations_per_epoch() {
        let cfg = TrainConfig::resolve(&options(30, 4), coco(), 9).unwrap();
        assert_eq!(cfg.iters_per_epoch, 3);
        let dir = Path::new("runs/train/1");
        assert!(check_iters_per_epoch(dir, &mut cfg.clone(), 12).is_ok());
        let e = check_iters_per_epoch(dir, &mut cfg.clone(), 13).unwrap_err().to_string();
        assert!(e.contains("now gives 4 batches per epoch, the run started with 3"), "{e}");
        // A run started before the values were recorded: lr scaled as then, the data's count.
        let mut json: serde_json::Value = serde_json::to_value(&cfg).unwrap();
        let fields = json.as_object_mut().unwrap();
        fields.remove("lr_policy");
        fields.remove("iters_per_epoch");
        let mut old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!((old.lr_policy, old.iters_per_epoch), (LrPolicy::Scaled, 0));
        check_iters_per_epoch(dir, &mut old, 13).unwrap();
        assert_eq!(old.iters_per_epoch, 4);
    }
}
