//! `rtmdet predict`: detections drawn into a run folder (annotated images, and annotated
//! videos for video sources) and, optionally, written as JSON (JSON Lines when videos are
//! among the sources).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rtmdet::image_io::{BgrImage, read_image};
use rtmdet::structures::rotated::corners;
use rtmdet::{Detector, Instances};
use serde::Serialize;

use crate::args::{self, DetectorArgs, OutputArgs, SourceArgs, ThresholdArgs};
use crate::exit::{Interrupted, Skipped};
use crate::video_job::{self, VideoJob};
use crate::{output, sources};

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub input: SourceArgs,
    #[command(flatten)]
    pub detector: DetectorArgs,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Network input size (square); defaults to the model's (640, nano 320).
    #[arg(long, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1, value_parser = args::positive, allow_negative_numbers = true)]
    pub batch: usize,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Sliced inference for large images: windows of this many pixels, detections merged by
    /// NMS (the DOTA patch scheme). Rotated models slice automatically at their input size
    /// when an image side exceeds twice the input size; `--slice 0` turns that off.
    #[arg(long, value_parser = args::slice_size, allow_negative_numbers = true)]
    pub slice: Option<usize>,
    /// Overlap between neighbouring slices: below 1 a fraction of the slice size (0.2 = 20 %),
    /// from 1 on pixels.
    #[arg(long, default_value = "200", value_parser = args::slice_overlap, allow_negative_numbers = true)]
    pub slice_overlap: args::Overlap,
    /// With --slice: also detect on the whole image at the input size (objects larger than a
    /// slice), merged with the slices.
    #[arg(long)]
    pub slice_full: bool,
    /// With --slice: how slices merge: nms (class-aware, at --iou) or wbf (weighted box
    /// fusion at --iou; axis-aligned models).
    #[arg(long, default_value = "nms", value_parser = ["nms", "wbf"])]
    pub slice_merge: String,
    /// (RTMDet-Ins) A pixel belongs to a mask where its probability exceeds this.
    #[arg(long, default_value_t = 0.5, value_parser = args::unit_interval, allow_negative_numbers = true)]
    pub mask_thr: f32,
    /// (RTMDet-Ins) Also write `<image>_masks.png` per image into the run folder: 16-bit
    /// instance ids (1 = the first detection of the JSON, 0 = background).
    #[arg(long)]
    pub save_masks: bool,
    /// Videos, cameras and streams: process every N-th frame.
    #[arg(long, default_value_t = 1, value_parser = args::positive, allow_negative_numbers = true)]
    pub vid_stride: usize,
}

/// A COCO compressed RLE, as `pycocotools.mask.encode` writes it.
#[derive(Serialize)]
struct JsonRle {
    /// `[height, width]` of the original image.
    size: [usize; 2],
    counts: String,
}

/// The slice size for an image: `--slice N`, or the input size for a rotated model when the
/// image is more than twice as large.
fn slice_for(args: &PredictArgs, det: &Detector, img: &BgrImage) -> Option<usize> {
    match args.slice {
        Some(0) => None,
        Some(n) => Some(n),
        None => (det.config().task == rtmdet::config::Task::Rotated && img.width.max(img.height) > 2 * det.input_size)
            .then_some(det.input_size),
    }
}

#[derive(Serialize)]
struct JsonDetection {
    /// The (enclosing) axis-aligned box.
    bbox: [f32; 4],
    score: f32,
    label: usize,
    class: String,
    /// Rotated models: `[cx, cy, w, h, angle]` (radians, le90).
    #[serde(skip_serializing_if = "Option::is_none")]
    rbox: Option<[f32; 5]>,
    /// Rotated models: the corners `x1, y1, ..., x4, y4` in mmrotate's `rbox2qbox` order.
    #[serde(skip_serializing_if = "Option::is_none")]
    poly: Option<[f32; 8]>,
    /// Instance segmentation models: the mask in original image pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    segmentation: Option<JsonRle>,
}

#[derive(Serialize)]
struct JsonImage {
    image: String,
    width: usize,
    height: usize,
    detections: Vec<JsonDetection>,
}

/// One line of the JSON Lines output for a video frame.
#[derive(Serialize)]
struct JsonVideoFrame {
    /// The video file, camera number or stream URL.
    source: String,
    /// Index in the source (with `--vid-stride`, every N-th).
    frame: usize,
    /// Presentation time in the source, in seconds.
    time_s: f64,
    width: usize,
    height: usize,
    detections: Vec<JsonDetection>,
}

fn json_detections(dets: &Instances, cfg: &rtmdet::ModelConfig) -> Vec<JsonDetection> {
    (0..dets.len())
        .map(|k| {
            let d = dets.get(k);
            let rbox = dets.rboxes.get(k).copied();
            JsonDetection {
                bbox: d.bbox,
                score: d.score,
                label: d.label,
                class: cfg.class_name(d.label),
                rbox,
                poly: rbox.map(|r| corners(&r).as_flattened().try_into().expect("8 numbers")),
                segmentation: dets
                    .masks
                    .get(k)
                    .map(|m| JsonRle { size: [m.height, m.width], counts: rtmdet::structures::mask::to_compressed(m) }),
            }
        })
        .collect()
}

/// Detections of one image: sliced when `--slice` (or a rotated model on a large image) asks.
fn detect_one(args: &PredictArgs, det: &Detector, img: &BgrImage) -> Result<Instances> {
    Ok(match slice_for(args, det, img) {
        Some(size) => {
            let merge = rtmdet::postprocess::merge::SliceMerge::parse(&args.slice_merge)?;
            let overlap = args.slice_overlap.pixels(size);
            let slicing = rtmdet::Slicing { size, overlap, batch: args.batch, full_image: args.slice_full, merge };
            det.predict_sliced(img, &slicing)?
        }
        None => det.predict(img)?,
    })
}

pub fn run(args: PredictArgs) -> Result<()> {
    if let Some(s) = args.slice
        && s != 0
        && args.slice_overlap.pixels(s) >= s
    {
        bail!("--slice-overlap ({} pixels) must be smaller than --slice ({s})", args.slice_overlap.pixels(s));
    }
    let sources::Expanded { paths, videos, skipped } = args.input.expand()?;
    if let Some(json) = &args.output.save_json {
        let mut inputs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
        inputs.extend(videos.iter().filter_map(|v| match v {
            rtmdet::video::VideoSource::File(p) => Some(p.as_path()),
            _ => None,
        }));
        inputs.extend(args.detector.weights.as_deref());
        output::check(json, args.output.exist_ok, &inputs)?;
    }
    let mut det = args.detector.load()?;
    if let Some(s) = args.imgsz {
        det.input_size = s;
    }
    // A batch never holds more images than there are.
    args::check_memory(args.batch.min(paths.len().max(1)), det.input_size, args::INFER_BYTES_PER_PIXEL, "inference")?;
    // The task's defaults (deployment settings, or RTMDet-R's test_cfg), overridden by flags.
    let d = det.params;
    det.params = args.thresholds.over(d);
    det.mask_thr = args.mask_thr;
    let cfg = det.config().clone();
    eprintln!(
        "RTMDet-{} ({} classes, exp_on_reg {}), input {}x{}",
        cfg.size.name(),
        cfg.num_classes,
        cfg.exp_on_reg,
        det.input_size,
        det.input_size
    );

    let run_dir = if args.output.no_draw && args.output.out.is_none() && !args.save_masks {
        PathBuf::new()
    } else {
        sources::run_dir(args.output.out.as_deref(), "runs/predict")?
    };

    let mut records = Vec::new();
    // Sources that gave nothing (reported by `expand`) count with the unreadable images.
    let (mut failures, started) = (skipped, Instant::now());
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
        let (sliced, whole): (Vec<usize>, Vec<usize>) =
            (0..images.len()).partition(|&i| slice_for(&args, &det, &images[i].1).is_some());
        let batch: Vec<BgrImage> = whole.iter().map(|&i| images[i].1.clone()).collect();
        let mut results: Vec<Instances> = vec![Instances::default(); images.len()];
        for (&i, r) in whole.iter().zip(det.predict_batch(&batch)?) {
            results[i] = r;
        }
        for &i in &sliced {
            let img = &images[i].1;
            let size = slice_for(&args, &det, img).expect("sliced");
            eprintln!(
                "{}: {}x{} in {size}px slices, overlap {}px{}, merged by {}",
                images[i].0.display(),
                img.width,
                img.height,
                args.slice_overlap.pixels(size),
                if args.slice_full { " and the whole image" } else { "" },
                args.slice_merge,
            );
            results[i] = detect_one(&args, &det, img)?;
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / images.len() as f64;
        for ((path, img), dets) in images.iter().zip(results) {
            eprintln!("{}: {}x{} {}, {ms:.1} ms", path.display(), img.width, img.height, summary(&dets, &det));
            if !args.output.no_draw {
                save_annotated(&run_dir, path, img, &dets, &det)?;
            }
            if args.save_masks {
                save_mask_ids(&run_dir, path, img, &dets)?;
            }
            records.push(JsonImage {
                image: path.display().to_string(),
                width: img.width,
                height: img.height,
                detections: json_detections(&dets, &cfg),
            });
        }
    }
    if !paths.is_empty() {
        eprintln!("{} images in {:.2} s", records.len(), started.elapsed().as_secs_f64());
    }
    if records.is_empty() && videos.is_empty() {
        // Nothing to report: an existing results file is left as it is rather than emptied.
        bail!("none of the {} images could be read; nothing was written", paths.len());
    }
    let mut interrupted = false;
    if videos.is_empty() {
        if let Some(json) = &args.output.save_json {
            output::write_json(json, &records, args.output.exist_ok)?;
            eprintln!("detections written to {}", json.display());
        }
    } else {
        // Videos among the sources: JSON Lines, the images' records first.
        let mut lines =
            args.output.save_json.as_deref().map(|j| output::JsonLines::create(j, args.output.exist_ok)).transpose()?;
        if let Some(l) = &mut lines {
            for r in &records {
                l.push(r)?;
            }
        }
        let on_stop = "stopping after this frame; finishing the video and results";
        let (failed, stopped) = video_job::run_each(&videos, on_stop, |source, stop| {
            predict_video(&args, &det, source, &run_dir, stop, lines.as_mut())
        });
        failures += failed;
        interrupted = stopped;
        if let (Some(l), Some(json)) = (lines, &args.output.save_json) {
            let n = l.lines();
            l.finish()?;
            eprintln!("detections written to {} (JSON Lines, {n} lines: one per image or frame)", json.display());
        }
    }
    if !args.output.no_draw && !paths.is_empty() {
        eprintln!("annotated images saved to {}", run_dir.display());
    }
    if interrupted {
        return Err(Interrupted("the results up to the last frame were saved".into()).into());
    }
    if failures > 0 {
        let inputs = paths.len() + videos.len() + skipped;
        return Err(Skipped(format!("{failures} of {inputs} inputs were skipped or incomplete")).into());
    }
    Ok(())
}

/// One video source: each kept frame detected, drawn into `<run>/<name>.mp4` and written as a
/// JSON line.
fn predict_video(
    args: &PredictArgs,
    det: &Detector,
    source: &rtmdet::video::VideoSource,
    run_dir: &std::path::Path,
    stop: &std::sync::atomic::AtomicBool,
    mut lines: Option<&mut output::JsonLines>,
) -> Result<video_job::Outcome> {
    let out = (!args.output.no_draw).then(|| sources::free_path(run_dir, &source.stem(), "mp4"));
    let job = VideoJob { source, stride: args.vid_stride, out, replace: false, stop, max_frames: None };
    let cfg = Arc::new(det.config().clone());
    video_job::run(job, |frame, _| {
        let dets = detect_one(args, det, &frame.image)?;
        if let Some(l) = lines.as_deref_mut() {
            l.push(&JsonVideoFrame {
                source: source.display(),
                frame: frame.index,
                time_s: frame.time_s,
                width: frame.image.width,
                height: frame.image.height,
                detections: json_detections(&dets, &cfg),
            })?;
        }
        if args.output.no_draw {
            return Ok(None);
        }
        Ok(Some(video_job::draw_detections(&frame.image, dets, &cfg)))
    })
}

/// `<stem>_masks.png`: the instance-id map of an image (nothing for models without masks).
fn save_mask_ids(dir: &std::path::Path, src: &std::path::Path, img: &BgrImage, dets: &Instances) -> Result<()> {
    if dets.masks.is_empty() && !dets.is_empty() {
        return Ok(());
    }
    let ids = rtmdet::structures::mask::instance_ids(&dets.masks, img.height, img.width);
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let out = sources::free_path(dir, &format!("{stem}_masks"), "png");
    rtmdet::image_io::write_png_u16(&out, img.width, img.height, ids)?;
    Ok(())
}

fn summary(dets: &Instances, det: &Detector) -> String {
    if dets.is_empty() {
        return "no detections".into();
    }
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for &label in &dets.labels {
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    counts.iter().map(|(l, n)| format!("{n} {}", det.config().class_name(*l))).collect::<Vec<_>>().join(", ")
}

fn save_annotated(
    dir: &std::path::Path,
    src: &std::path::Path,
    img: &BgrImage,
    dets: &Instances,
    det: &Detector,
) -> Result<()> {
    let mut canvas = img.to_rgb();
    rtmdet::viz::draw_instances(&mut canvas, dets, |l| det.config().class_name(l));
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let out = sources::free_path(dir, stem, "jpg");
    let mut bytes = std::io::Cursor::new(Vec::new());
    canvas.write_to(&mut bytes, image::ImageFormat::Jpeg).with_context(|| format!("encoding {}", out.display()))?;
    // A new name, never an existing file (free_path chose one; another process may race us).
    rtmdet::files::write_new_atomically(&out, bytes.get_ref())?;
    Ok(())
}
