//! `rtmdet export`: any of our models as a standard ONNX file (see `rtmdet::export`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use rtmdet::config::Task;
use rtmdet::export::{ExportOptions, Mode, check_opset, check_options, export};

use crate::args::{self, DetectorArgs, ThresholdArgs};
use crate::output;

/// Write a model as a standard ONNX file (no custom operators): mmdeploy's end-to-end
/// interface (NMS and masks inside) or the raw head maps.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// end2end (dets, labels, masks: mmdeploy's interface, NMS inside) or raw (head maps).
    #[arg(long, default_value = "end2end")]
    pub mode: String,
    /// Input size (square, a multiple of 32) of a static export [default: the model's].
    #[arg(long, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: Option<usize>,
    /// Images per batch of a static export.
    #[arg(long, default_value_t = 1, value_parser = args::positive, allow_negative_numbers = true, conflicts_with = "dynamic")]
    pub batch: usize,
    /// Dynamic batch and image size (height and width multiples of 32).
    #[arg(long)]
    pub dynamic: bool,
    /// FP16 weights and compute (FP32 input and outputs).
    #[arg(long)]
    pub half: bool,
    /// ONNX operator set (13 to 17).
    #[arg(long, default_value_t = 17, allow_negative_numbers = true)]
    pub opset: i64,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Output file [default: beside the weights, `<name>[-raw][-fp16].onnx`].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long, visible_alias = "exist-ok")]
    pub force: bool,
}

/// `<weights stem>[-raw][-fp16].onnx` beside the weights (or the model name in the current
/// folder).
fn default_out(args: &ExportArgs, mode: Mode) -> PathBuf {
    let (dir, stem) = match &args.detector.weights {
        Some(w) => (
            w.parent().map(Path::to_path_buf).unwrap_or_default(),
            w.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned()),
        ),
        None => (PathBuf::new(), args.detector.model.clone().unwrap_or_else(|| "model".into())),
    };
    let mut name = stem;
    if mode == Mode::Raw {
        name.push_str("-raw");
    }
    if args.half {
        name.push_str("-fp16");
    }
    dir.join(format!("{name}.onnx"))
}

pub fn run(args: ExportArgs) -> Result<()> {
    let mode = Mode::parse(&args.mode)?;
    // Before loading the model: a wrong opset should not cost a checkpoint read.
    check_opset(args.opset, args.half)?;
    let out = args.out.clone().unwrap_or_else(|| default_out(&args, mode));
    let inputs: Vec<&Path> = args.detector.weights.as_deref().into_iter().collect();
    if out == Path::new("") || out.extension().is_none_or(|e| !e.eq_ignore_ascii_case("onnx")) {
        bail!("--out {}: give a file name ending in .onnx", out.display());
    }
    output::check(&out, args.force, &inputs)?;

    let det = args.detector.load()?;
    let cfg = det.config().clone();
    // The task's deployment thresholds (or those an end-to-end export being re-exported
    // carries), overridden by flags.
    let params = args.thresholds.over(det.params);
    let opts = ExportOptions {
        mode,
        imgsz: args.imgsz.unwrap_or(det.input_size),
        batch: args.batch,
        dynamic: args.dynamic,
        half: args.half,
        opset: args.opset,
        params,
    };
    check_options(&cfg, &opts)?;
    let bytes = export(&cfg, det.graph(), det.weights(), &opts)?;
    output::write(&out, &bytes, args.force)?;

    let task = match cfg.task {
        Task::Detect => "detection",
        Task::Segment => "instance segmentation",
        Task::Rotated => "rotated boxes",
    };
    let shape = if opts.dynamic {
        "[batch, 3, height, width] (dynamic)".to_string()
    } else {
        format!("[{}, 3, {s}, {s}]", opts.batch, s = opts.imgsz)
    };
    eprintln!(
        "exported RTMDet-{} ({task}, {} classes) to {} ({:.1} MB, opset {}, {}{})",
        cfg.size.name(),
        cfg.num_classes,
        out.display(),
        bytes.len() as f64 / 1e6,
        opts.opset,
        if opts.half { "fp16" } else { "fp32" },
        match mode {
            Mode::Raw => ", raw head maps".to_string(),
            Mode::End2end => format!(
                ", end2end: conf {} iou {} nms_pre {} max_det {}",
                params.score_thr, params.iou_thr, params.nms_pre, params.max_det
            ),
        }
    );
    let outputs = match (mode, cfg.task) {
        (Mode::End2end, Task::Segment) => "dets [N, K, 5], labels [N, K], masks [N, K, H, W]",
        (Mode::End2end, _) => "dets [N, K, 5] (x1, y1, x2, y2, score), labels [N, K]",
        (Mode::Raw, Task::Segment) => "cls_l0..2, reg_l0..2, kernel_l0..2, mask_feat",
        (Mode::Raw, Task::Rotated) => "cls_l0..2, reg_l0..2, angle_l0..2",
        (Mode::Raw, Task::Detect) => "cls_l0..2, reg_l0..2",
    };
    eprintln!("input 'input' {shape}, normalised BGR; outputs {outputs}");
    Ok(())
}
