//! `rtmdet eval`: score prediction files against ground truth without a model: COCO results
//! JSON against COCO ground truth (pycocotools' semantics), or DOTA `Task1_<class>.txt` files
//! against a `labelTxt` folder (mmrotate's `eval_rbbox_map`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use rtmdet::eval::coco::{Masks, evaluate, evaluate_segm};
use rtmdet::eval::coco_files::{read_ground_truth, read_ground_truth_segm, read_results, read_results_segm};
use rtmdet::eval::dota::{self, ApMode};
use rtmdet::eval::dota_files;
use serde_json::json;

use crate::output;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Coco,
    Dota,
}

/// What COCO's IoU compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IouType {
    /// Boxes (`bbox`).
    Bbox,
    /// Instance masks (`segmentation`: polygons or RLE), pycocotools' `segm`.
    Segm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ApModeArg {
    /// VOC2007 11-point AP (mmrotate's DOTAMetric default).
    #[value(name = "11points")]
    ElevenPoints,
    /// Area under the precision envelope.
    Area,
}

#[derive(Args)]
pub struct EvalArgs {
    /// coco: GT and predictions are COCO JSON files; dota: GT is a folder of labelTxt files and
    /// predictions a folder of Task1_<class>.txt files.
    #[arg(long, value_enum, default_value = "coco")]
    pub format: Format,
    /// COCO ground-truth JSON, or (dota) a folder of labelTxt files.
    #[arg(long)]
    pub gt: PathBuf,
    /// COCO results JSON (`[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`), or
    /// (dota) a folder of `Task1_<class>.txt` files (`image score x1 y1 ... x4 y4`).
    #[arg(long)]
    pub pred: PathBuf,
    /// (coco) Score boxes or instance masks.
    #[arg(long, value_enum, default_value = "bbox")]
    pub iou_type: IouType,
    /// Also write the numbers as JSON (COCO: `{"AP": .., "AP50": .., ...}`; DOTA: `{"mAP", "per_class"}`);
    /// a new file, unless --exist-ok, and never one of the inputs.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace existing output files (by default rtmdet refuses to overwrite a file).
    #[arg(long)]
    pub exist_ok: bool,
    /// (dota) IoU threshold of a match.
    #[arg(long, default_value_t = 0.5, value_parser = crate::args::match_iou, allow_negative_numbers = true)]
    pub iou_thr: f32,
    /// (dota) How AP summarises the precision/recall curve.
    #[arg(long, value_enum, default_value = "11points")]
    pub ap_mode: ApModeArg,
    /// (dota) Classes: dota (v1.0), dota1.5, dota2.0, dior, hrsc, or a comma-separated list
    /// [default: dior for XML labels, else dota].
    #[arg(long)]
    pub classes: Option<String>,
    /// (dota) Objects with a difficulty above this are ignored: 0 ignores DOTA's difficult
    /// objects (the DOTA server's rule); 100 ignores none (mmrotate's DOTADataset default).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub diff_thr: u32,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(j) = &args.json {
        if [&args.pred, &args.gt].iter().any(|input| output::inside(j, input)) {
            bail!("--json {} is inside an input folder: it would overwrite an input; give another path", j.display());
        }
        output::check(j, args.exist_ok, &[&args.pred, &args.gt])?;
    }
    match args.format {
        Format::Coco => coco(&args),
        Format::Dota => dota(&args),
    }
}

impl From<ApModeArg> for ApMode {
    fn from(m: ApModeArg) -> ApMode {
        match m {
            ApModeArg::ElevenPoints => ApMode::ElevenPoints,
            ApModeArg::Area => ApMode::Area,
        }
    }
}

fn coco(args: &EvalArgs) -> Result<()> {
    let (gt, dets, e, t);
    if args.iou_type == IouType::Segm {
        let (g, gt_masks) = read_ground_truth_segm(&args.gt)?;
        let (d, det_masks, det_areas) = read_results_segm(&args.pred, &args.gt)?;
        t = std::time::Instant::now();
        e = evaluate_segm(&g, &d, Masks { gt: &gt_masks, dets: &det_masks, det_areas: &det_areas })?;
        (gt, dets) = (g, d);
    } else {
        (gt, dets) = (read_ground_truth(&args.gt)?, read_results(&args.pred)?);
        t = std::time::Instant::now();
        e = evaluate(&gt, &dets)?;
    }
    eprintln!(
        "{} images, {} detections evaluated in {:.2} s",
        gt.image_ids.len(),
        dets.len(),
        t.elapsed().as_secs_f64()
    );
    print!("{}", e.summary());
    if let Some(path) = &args.json {
        output::write_json(path, &e.stats_json(), args.exist_ok)?;
    }
    Ok(())
}

fn dota(args: &EvalArgs) -> Result<()> {
    let classes = match &args.classes {
        Some(c) => rtmdet::classes::rotated_preset(c),
        None => rtmdet::data::dota::default_classes(&args.gt),
    };
    if classes.is_empty() {
        bail!("--classes names no class");
    }
    let gt = dota_files::read_ground_truth(&args.gt, &classes, args.diff_thr)?;
    let (dets, warnings) = dota_files::read_task1(&args.pred, &classes, &gt.images)?;
    for w in gt.warnings.iter().chain(&warnings) {
        eprintln!("warning: {w}");
    }
    let mode = args.ap_mode.into();
    let t = std::time::Instant::now();
    let e = dota::evaluate(&dets, &gt.gts, classes.len(), args.iou_thr, mode);
    eprintln!(
        "{} images, {} detections evaluated in {:.2} s",
        gt.images.len(),
        dets.iter().map(|d| d.scores.len()).sum::<usize>(),
        t.elapsed().as_secs_f64()
    );
    print!("{}", dota_files::table(&e, &classes));
    if let Some(path) = &args.json {
        output::write_json(path, &dota_json(&e, &classes), args.exist_ok)?;
    }
    Ok(())
}

/// `{"mAP", "per_class": [{"class", "gts", "dets", "recall", "ap"}]}`.
pub fn dota_json(e: &dota::DotaEval, classes: &[String]) -> serde_json::Value {
    let per_class: Vec<serde_json::Value> = classes
        .iter()
        .zip(&e.classes)
        .map(|(name, c)| {
            json!({"class": name, "gts": c.num_gts, "dets": c.num_dets,
                   "recall": c.recall.last().copied().unwrap_or(0.0), "ap": c.ap})
        })
        .collect();
    json!({"mAP": e.map, "per_class": per_class})
}
