//! `rtmdet predict`: detections drawn into a run folder and, optionally, written as JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rtmdet::cpu::CpuOptions;
use rtmdet::detector::{Engine, LoadOptions, parse_device};
use rtmdet::image_io::{BgrImage, read_image};
use rtmdet::weights::{hub, own::write_atomically};
use rtmdet::{DetectParams, Detection, Detector, Size};
use serde::Serialize;

use crate::sources;

#[derive(Args)]
pub struct PredictArgs {
    /// Images or folders of images.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Weights: an OpenMMLab .pth, our .safetensors, or a BN-folded ONNX export.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Official model name (rtmdet-tiny, -s, -m, -l, -x, -nano): downloaded when no --weights
    /// is given, otherwise the size the weights must have.
    #[arg(long)]
    pub model: Option<String>,
    /// Minimum score of a detection.
    #[arg(long, default_value_t = 0.3)]
    pub conf: f32,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.65)]
    pub iou: f32,
    /// Candidates kept per pyramid level before NMS.
    #[arg(long, default_value_t = 1000)]
    pub nms_pre: usize,
    /// Maximum detections per image.
    #[arg(long, default_value_t = 100)]
    pub max_det: usize,
    /// Network input size (square); defaults to the model's (640, nano 320).
    #[arg(long)]
    pub imgsz: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Run folder (default: runs/predict/<n>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write all detections to this JSON file.
    #[arg(long)]
    pub save_json: Option<PathBuf>,
    /// Do not write annotated images.
    #[arg(long)]
    pub no_draw: bool,
    /// Override the box decoding: distances are exp(raw)*stride (true) or raw*stride (false).
    #[arg(long)]
    pub exp_on_reg: Option<bool>,
    /// cpu, or cuda[:N] in CUDA builds.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How inference runs on the CPU.
#[derive(Args, Clone, Debug)]
pub struct EngineArgs {
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// auto (the fused CPU engine on CPU, burn on GPU), cpu, or burn.
    #[arg(long, default_value = "auto")]
    pub engine: String,
}

impl EngineArgs {
    pub fn options(&self) -> Result<(Engine, CpuOptions)> {
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        Ok((Engine::parse(&self.engine)?, CpuOptions { threads: self.threads, ..Default::default() }))
    }
}

#[derive(Serialize)]
struct JsonDetection {
    bbox: [f32; 4],
    score: f32,
    label: usize,
    class: String,
}

#[derive(Serialize)]
struct JsonImage {
    image: String,
    width: usize,
    height: usize,
    detections: Vec<JsonDetection>,
}

/// Loads the detector the arguments name.
pub fn load_detector(
    weights: Option<&PathBuf>,
    model: Option<&str>,
    exp_on_reg: Option<bool>,
    device: &str,
    engine: &EngineArgs,
) -> Result<Detector> {
    let device = parse_device(device)?;
    let (engine, cpu) = engine.options()?;
    let size = model.map(Size::parse).transpose()?;
    let path = match (weights, model) {
        (Some(w), _) => w.clone(),
        (None, Some(m)) => hub::fetch(&hub::find(m)?)?,
        (None, None) => bail!("give --weights FILE or --model NAME (e.g. --model rtmdet-tiny)"),
    };
    let opts = LoadOptions { size, exp_on_reg, device: Some(device), engine, cpu };
    Ok(Detector::load(&path, &opts)?)
}

pub fn run(args: PredictArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.iou) {
        bail!("--iou must be within [0, 1]");
    }
    if args.batch == 0 || args.max_det == 0 || args.nms_pre == 0 {
        bail!("--batch, --max-det and --nms-pre must be at least 1");
    }
    let mut det =
        load_detector(args.weights.as_ref(), args.model.as_deref(), args.exp_on_reg, &args.device, &args.engine)?;
    if let Some(s) = args.imgsz {
        if s == 0 || s % 32 != 0 {
            bail!("--imgsz must be a positive multiple of 32");
        }
        det.input_size = s;
    }
    det.params = DetectParams { score_thr: args.conf, nms_pre: args.nms_pre, iou_thr: args.iou, max_det: args.max_det };
    let cfg = det.config().clone();
    eprintln!(
        "RTMDet-{} ({} classes, exp_on_reg {}), input {}x{}",
        cfg.size.name(),
        cfg.num_classes,
        cfg.exp_on_reg,
        det.input_size,
        det.input_size
    );

    let paths = sources::expand(&args.sources)?;
    let run_dir = if args.no_draw && args.out.is_none() {
        PathBuf::new()
    } else {
        sources::run_dir(args.out.as_deref(), "runs/predict")?
    };

    let mut records = Vec::new();
    let (mut failures, started) = (0usize, Instant::now());
    for chunk in paths.chunks(args.batch) {
        let mut images: Vec<(PathBuf, BgrImage)> = Vec::new();
        for p in chunk {
            match read_image(p) {
                Ok(img) => images.push((p.clone(), img)),
                Err(e) => {
                    eprintln!("skipping {}: {e}", p.display());
                    failures += 1;
                }
            }
        }
        if images.is_empty() {
            continue;
        }
        let t = Instant::now();
        let batch: Vec<BgrImage> = images.iter().map(|(_, i)| i.clone()).collect();
        let results = det.predict_batch(&batch)?;
        let ms = t.elapsed().as_secs_f64() * 1e3 / images.len() as f64;
        for ((path, img), dets) in images.iter().zip(results) {
            eprintln!("{}: {}x{} {}, {ms:.1} ms", path.display(), img.width, img.height, summary(&dets, &det));
            if !args.no_draw {
                save_annotated(&run_dir, path, img, &dets, &det)?;
            }
            records.push(JsonImage {
                image: path.display().to_string(),
                width: img.width,
                height: img.height,
                detections: dets
                    .iter()
                    .map(|d| JsonDetection {
                        bbox: d.bbox,
                        score: d.score,
                        label: d.label,
                        class: cfg.class_name(d.label),
                    })
                    .collect(),
            });
        }
    }
    eprintln!("{} images in {:.2} s", records.len(), started.elapsed().as_secs_f64());
    if let Some(json) = &args.save_json {
        let text = serde_json::to_string_pretty(&records)?;
        write_atomically(json, text.as_bytes()).with_context(|| format!("cannot write {}", json.display()))?;
        eprintln!("detections written to {}", json.display());
    }
    if !args.no_draw {
        eprintln!("annotated images saved to {}", run_dir.display());
    }
    if failures > 0 {
        bail!("{failures} of {} images could not be read", paths.len());
    }
    Ok(())
}

fn summary(dets: &[Detection], det: &Detector) -> String {
    if dets.is_empty() {
        return "no detections".into();
    }
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for d in dets {
        match counts.iter_mut().find(|(l, _)| *l == d.label) {
            Some((_, n)) => *n += 1,
            None => counts.push((d.label, 1)),
        }
    }
    counts.iter().map(|(l, n)| format!("{n} {}", det.config().class_name(*l))).collect::<Vec<_>>().join(", ")
}

fn save_annotated(
    dir: &std::path::Path,
    src: &std::path::Path,
    img: &BgrImage,
    dets: &[Detection],
    det: &Detector,
) -> Result<()> {
    let mut canvas = img.to_rgb();
    rtmdet::viz::draw_detections(&mut canvas, dets, |l| det.config().class_name(l));
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let out = sources::free_path(dir, stem, "jpg");
    canvas.save(&out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
