//! `rtmdet val`: the model on a dataset with the evaluation settings, COCO metrics, and a
//! run folder with predictions, metrics and plots.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use rtmdet::DetectParams;
use rtmdet::Instances;
use rtmdet::config::Task;
use rtmdet::data::Dataset;
use rtmdet::eval::coco::CocoEval;
use rtmdet::eval::dota::RotatedDetections;
use rtmdet::eval::dota_files;
use rtmdet::eval::validate::{DotaSettings, validate, validate_rotated};
use rtmdet::postprocess::merge::{MERGE_IOU, merge_patches};
use rtmdet::viz::plots;
use serde_json::json;

use crate::args::{self, DetectorArgs};
use crate::eval::ApModeArg;
use crate::exit::Skipped;
use crate::{output, sources};

#[derive(Args)]
pub struct ValArgs {
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Dataset: a COCO .json, an Ultralytics .yaml, or (rotated models) a DOTA folder with
    /// `images/` and `labelTxt/` or `annfiles/`.
    #[arg(long)]
    pub data: PathBuf,
    /// Split of a YAML dataset.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Images folder of a COCO .json (default: found next to the file).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Network input size (default: the model's, 640 or 1024 for rotated models).
    #[arg(long, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: Option<usize>,
    #[arg(long, default_value_t = 1, value_parser = args::positive, allow_negative_numbers = true)]
    pub batch: usize,
    /// Run folder (default: runs/val/<n>); an existing folder is used only when it holds none
    /// of the files val writes, unless --exist-ok.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the files of an earlier run in --out (by default rtmdet refuses to overwrite).
    #[arg(long)]
    pub exist_ok: bool,
    #[command(flatten)]
    pub dota: DotaValArgs,
}

/// What only rotated models on DOTA data use.
#[derive(Args)]
pub struct DotaValArgs {
    /// (rotated) IoU threshold of a match.
    #[arg(long, default_value_t = 0.5, value_parser = args::match_iou, allow_negative_numbers = true)]
    pub iou_thr: f32,
    /// (rotated) How AP summarises the precision/recall curve.
    #[arg(long, value_enum, default_value = "11points")]
    pub ap_mode: ApModeArg,
    /// (rotated) Objects with a difficulty above this are ignored: 0 ignores DOTA's difficult
    /// objects; 100 ignores none (mmrotate's DOTADataset default).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub diff_thr: u32,
    /// (rotated) The images are patches (`NAME__SIZE__X___Y`): merge their detections back
    /// into the source images (rotated NMS, IoU 0.1) and write the DOTA submission files
    /// `Task1_<class>.txt` to `<run>/merged/`.
    #[arg(long)]
    pub merge_patches: bool,
    /// (rotated, with --merge-patches) labelTxt folder of the source images: also score the
    /// merged detections against it.
    #[arg(long)]
    pub full_labels: Option<PathBuf>,
}

/// What val writes into its run folder (files, and folders of DOTA submission files).
fn outputs(rotated: bool, merge: bool) -> Vec<&'static str> {
    match (rotated, merge) {
        (false, _) => vec!["predictions.json", "metrics.json", "pr_curve.png", "confusion_matrix.png"],
        (true, false) => vec!["metrics.json", "Task1"],
        (true, true) => vec!["metrics.json", "Task1", "merged"],
    }
}

/// Refuses an `--out` folder that already holds val's outputs (unless --exist-ok).
fn check_out_dir(args: &ValArgs, rotated: bool) -> Result<()> {
    let Some(dir) = &args.out else { return Ok(()) };
    if dir.exists() && !dir.is_dir() {
        bail!("--out {} is a file; give a folder", dir.display());
    }
    if args.exist_ok {
        return Ok(());
    }
    let taken: Vec<&str> =
        outputs(rotated, args.dota.merge_patches).into_iter().filter(|n| dir.join(n).exists()).collect();
    if !taken.is_empty() {
        bail!(
            "{} already holds {} from an earlier run; give another --out, or --exist-ok to replace them",
            dir.display(),
            taken.join(", ")
        );
    }
    Ok(())
}

/// Exit code 3 when images of the dataset were skipped (missing or unreadable).
fn skipped_images(data: &Dataset) -> Result<()> {
    let n = data.report.missing_images.len() + data.report.unreadable_images.len();
    if n > 0 {
        return Err(Skipped(format!("{n} images of the dataset were missing or unreadable and not evaluated")).into());
    }
    Ok(())
}

pub fn run(args: ValArgs) -> Result<()> {
    let mut det = args.detector.load()?;
    if let Some(size) = args.imgsz {
        det.input_size = size;
    }
    let rotated = det.config().task == Task::Rotated;
    check_out_dir(&args, rotated)?;
    let data = match &args.images {
        Some(dir) => rtmdet::data::coco::load(&args.data, Some(dir))?,
        None if rotated && args.data.is_dir() => rtmdet::data::dota::load(&args.data, &model_classes(&det))?,
        None => Dataset::load(&args.data, &args.split)?,
    };
    crate::train::print_report(&data);
    if data.images.is_empty() {
        bail!("the dataset has no readable images");
    }
    rtmdet::eval::validate::check_model(&det, &data)?;
    let batch = args.batch.min(data.images.len());
    args::check_memory(batch, det.input_size, args::INFER_BYTES_PER_PIXEL, "inference")?;
    let run_dir = sources::run_dir(args.out.as_deref(), "runs/val")?;
    if rotated {
        run_rotated(&args, &det, &data, &run_dir)?;
        return skipped_images(&data);
    }

    let bar = indicatif::ProgressBar::new(data.images.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "val {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
    )?);
    let params = DetectParams::eval_for_task(det.config().task);
    let v = validate(&det, &data, &params, args.batch, |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();

    let (n_img, n_inst) = (data.images.len(), data.report.annotations);
    match &v.segm {
        None => {
            print!("{}", v.eval.summary());
            println!("\n{:>20} {:>8} {:>10} {:>8} {:>8}", "class", "images", "instances", "AP50", "AP");
            println!("{:>20} {:>8} {:>10} {:>8.3} {:>8.3}", "all", n_img, n_inst, v.eval.stats[1], v.eval.stats[0]);
            for c in v.eval.per_class.iter().filter(|c| c.instances > 0) {
                println!("{:>20} {:>8} {:>10} {:>8.3} {:>8.3}", c.name, c.images, c.instances, c.ap50, c.ap);
            }
        }
        Some(segm) => print_box_and_mask(&v.eval, segm, n_img, n_inst),
    }
    println!(
        "Speed: {:.1} ms pre-process, {:.1} ms inference, {:.1} ms post-process per image at {}x{}",
        v.speed.preprocess, v.speed.inference, v.speed.postprocess, det.input_size, det.input_size
    );

    let write = |name: &str, value: &serde_json::Value| output::write_json(&run_dir.join(name), value, args.exist_ok);
    write("predictions.json", &predictions_json(&v)?)?;
    let mut metrics = v.eval.stats_json();
    metrics["per_class"] = serde_json::to_value(&v.eval.per_class)?;
    if let Some(segm) = &v.segm {
        metrics["segm"] = segm.stats_json();
        metrics["segm"]["per_class"] = serde_json::to_value(&segm.per_class)?;
    }
    metrics["speed_ms"] = serde_json::to_value(v.speed)?;
    metrics["images"] = json!(n_img);
    metrics["instances"] = json!(n_inst);
    write("metrics.json", &metrics)?;
    let names = data.class_names();
    let curves: Vec<(String, Vec<f64>)> = names.iter().cloned().zip(v.eval.pr_curves()).collect();
    plots::pr_curve(&run_dir.join("pr_curve.png"), &curves, v.eval.stats[1])?;
    plots::confusion_matrix(&run_dir.join("confusion_matrix.png"), &v.confusion.matrix, &names)?;
    eprintln!("results saved to {}", run_dir.display());
    skipped_images(&data)
}

/// Box and mask summaries (pycocotools' 12 lines each) and a per-class table with both APs.
fn print_box_and_mask(bbox: &CocoEval, segm: &CocoEval, n_img: usize, n_inst: usize) {
    println!("bbox:");
    print!("{}", bbox.summary());
    println!("segm:");
    print!("{}", segm.summary());
    let header = ["class", "images", "instances", "box AP50", "box AP", "mask AP50", "mask AP"];
    println!(
        "\n{:>20} {:>8} {:>10} {:>9} {:>8} {:>9} {:>8}",
        header[0], header[1], header[2], header[3], header[4], header[5], header[6]
    );
    let (b, m) = (&bbox.stats, &segm.stats);
    println!("{:>20} {:>8} {:>10} {:>9.3} {:>8.3} {:>9.3} {:>8.3}", "all", n_img, n_inst, b[1], b[0], m[1], m[0]);
    for (c, s) in bbox.per_class.iter().zip(&segm.per_class).filter(|(c, _)| c.instances > 0) {
        println!(
            "{:>20} {:>8} {:>10} {:>9.3} {:>8.3} {:>9.3} {:>8.3}",
            c.name, c.images, c.instances, c.ap50, c.ap, s.ap50, s.ap
        );
    }
}

/// COCO results: `{"image_id", "category_id", "bbox", "score"}`, with `"segmentation"` (RLE)
/// for an instance segmentation model.
fn predictions_json(v: &rtmdet::eval::validate::Validation) -> Result<serde_json::Value> {
    let mut rows = serde_json::to_value(&v.predictions)?;
    if let Some(rows) = rows.as_array_mut() {
        for (row, m) in rows.iter_mut().zip(&v.masks) {
            row["segmentation"] =
                json!({"size": [m.height, m.width], "counts": rtmdet::structures::mask::to_compressed(m)});
        }
    }
    Ok(rows)
}

/// The model's class names (a DOTA folder is read with them).
fn model_classes(det: &rtmdet::Detector) -> Vec<String> {
    (0..det.config().num_classes).map(|i| det.config().class_name(i)).collect()
}

/// DOTA mAP of a rotated model, the run folder's `Task1/` files, and the merged submission.
fn run_rotated(args: &ValArgs, det: &rtmdet::Detector, data: &Dataset, run_dir: &Path) -> Result<()> {
    let d = &args.dota;
    let settings = DotaSettings { iou_thr: d.iou_thr, mode: d.ap_mode.into(), diff_thr: d.diff_thr };
    let params = DetectParams::for_task(Task::Rotated);
    let bar = indicatif::ProgressBar::new(data.images.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "val {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
    )?);
    let v = validate_rotated(det, data, &params, args.batch, settings, |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let classes = data.class_names();
    let mode = if d.ap_mode == ApModeArg::Area { "area under the curve" } else { "VOC07 11-point" };
    println!("DOTA mAP at IoU {} ({mode}), {} images", d.iou_thr, data.images.len());
    print!("{}", dota_files::table(&v.eval, &classes));
    println!(
        "Speed: {:.1} ms pre-process, {:.1} ms inference, {:.1} ms post-process per image at {}x{}",
        v.speed.preprocess, v.speed.inference, v.speed.postprocess, det.input_size, det.input_size
    );
    let named: Vec<(String, Instances)> = v.names.iter().cloned().zip(v.results).collect();
    dota_files::write_task1(&run_dir.join("Task1"), &classes, &named)?;
    let mut metrics = crate::eval::dota_json(&v.eval, &classes);
    metrics["speed_ms"] = serde_json::to_value(v.speed)?;
    metrics["images"] = json!(data.images.len());
    if d.merge_patches {
        let merged = merge_patches(named, MERGE_IOU);
        dota_files::write_task1(&run_dir.join("merged"), &classes, &merged)?;
        eprintln!(
            "merged {} patches into {} images: {}",
            data.images.len(),
            merged.len(),
            run_dir.join("merged").display()
        );
        if let Some(labels) = &d.full_labels {
            let gt = dota_files::read_ground_truth(labels, &classes, d.diff_thr)?;
            let index: std::collections::HashMap<&str, &Instances> =
                merged.iter().map(|(n, s)| (n.as_str(), s)).collect();
            let dets: Vec<RotatedDetections> = gt
                .images
                .iter()
                .map(|n| index.get(n.as_str()).map(|s| RotatedDetections::from(*s)).unwrap_or_default())
                .collect();
            let e = rtmdet::eval::dota::evaluate(&dets, &gt.gts, classes.len(), d.iou_thr, settings.mode);
            println!("\nmerged, against {}:", labels.display());
            print!("{}", dota_files::table(&e, &classes));
            metrics["merged"] = crate::eval::dota_json(&e, &classes);
        }
    }
    output::write_json(&run_dir.join("metrics.json"), &metrics, args.exist_ok)?;
    eprintln!("results saved to {}", run_dir.display());
    Ok(())
}
