//! `rtmdet track`: ByteTrack over sequences of frames — the image sources together as one
//! sequence (in source order), and each video, camera or stream as its own — each object with
//! a stable id in the drawings (annotated frames, annotated videos) and in JSON Lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use image::RgbImage;
use rtmdet::image_io::{BgrImage, read_image};
use rtmdet::track::{ByteTracker, TrackedObject, TrackerConfig};
use rtmdet::video::VideoSource;
use rtmdet::{Detection, Instances, ModelConfig};
use serde::Serialize;

use crate::args::{self, DetectorArgs, OutputArgs, SourceArgs, ThresholdArgs};
use crate::exit::{Interrupted, Skipped};
use crate::video_job::{self, DrawJob, VideoJob};
use crate::{output, sources};

/// Track objects through image sequences, videos, cameras and streams (ByteTrack): stable ids
/// in drawings and JSON Lines.
#[derive(Args)]
pub struct TrackArgs {
    #[command(flatten)]
    pub input: SourceArgs,
    #[command(flatten)]
    pub detector: DetectorArgs,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Network input size (square) [default: the model's].
    #[arg(long, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: Option<usize>,
    /// Detections at or above this score take part in the first association.
    #[arg(long, default_value_t = 0.25, value_parser = args::unit_interval, allow_negative_numbers = true)]
    pub track_high_thresh: f32,
    /// Detections above this (and below the high threshold) rescue unmatched tracks.
    #[arg(long, default_value_t = 0.1, value_parser = args::unit_interval, allow_negative_numbers = true)]
    pub track_low_thresh: f32,
    /// An unmatched detection starts a track from this score on.
    #[arg(long, default_value_t = 0.25, value_parser = args::unit_interval, allow_negative_numbers = true)]
    pub new_track_thresh: f32,
    /// Frames a lost track is kept (at 30 frames/s).
    #[arg(long, default_value_t = 30, value_parser = args::positive, allow_negative_numbers = true)]
    pub track_buffer: usize,
    /// Cost limit of the first association (1 − IoU·score).
    #[arg(long, default_value_t = 0.8, value_parser = args::unit_interval, allow_negative_numbers = true)]
    pub match_thresh: f32,
    /// Do not weigh the first association's IoU by the detection score.
    #[arg(long)]
    pub no_fuse_score: bool,
    /// Frames per second of the sequence (scales --track-buffer) [default: a video's own rate
    /// divided by --vid-stride; 30 for image sequences].
    #[arg(long, value_parser = args::positive_number, allow_negative_numbers = true)]
    pub frame_rate: Option<f64>,
    /// Videos, cameras and streams: track every N-th frame.
    #[arg(long, default_value_t = 1, value_parser = args::positive, allow_negative_numbers = true)]
    pub vid_stride: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Serialize)]
struct JsonTrack {
    id: usize,
    bbox: [f32; 4],
    score: f32,
    label: usize,
    class: String,
}

/// One line of the JSON Lines output: the per-frame record (`frame`, `time_s`,
/// `detections`), each detection with its track id, and where the frame came from (`image`
/// for image sequences, `source` for videos, cameras and streams).
#[derive(Serialize)]
struct JsonFrame {
    frame: usize,
    /// Image sequences: `frame / --frame-rate`; videos: the frame's presentation time.
    time_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    detections: Vec<JsonTrack>,
}

/// Centres kept per track for the drawn trails.
const TRAIL: usize = 30;

/// A track's id and its recent centres.
type Trail = (usize, Vec<[f32; 2]>);

/// One sequence's tracker and the trails of its tracks.
struct Sequence {
    tracker: ByteTracker,
    trails: HashMap<usize, Vec<[f32; 2]>>,
}

impl Sequence {
    fn new(args: &TrackArgs, frame_rate: f64) -> Self {
        let cfg = TrackerConfig {
            track_high_thresh: args.track_high_thresh,
            track_low_thresh: args.track_low_thresh,
            new_track_thresh: args.new_track_thresh,
            track_buffer: args.track_buffer,
            match_thresh: args.match_thresh,
            fuse_score: !args.no_fuse_score,
            frame_rate: frame_rate as f32,
        };
        Sequence { tracker: ByteTracker::new(cfg), trails: HashMap::new() }
    }

    /// Tracks after this frame's detections, and their trails.
    fn step(&mut self, dets: &Instances) -> (Vec<TrackedObject>, Vec<Trail>) {
        let tracks = self.tracker.update(dets);
        for t in &tracks {
            let trail = self.trails.entry(t.id).or_default();
            trail.push([(t.bbox[0] + t.bbox[2]) / 2.0, (t.bbox[1] + t.bbox[3]) / 2.0]);
            if trail.len() > TRAIL {
                trail.remove(0);
            }
        }
        let live = tracks.iter().filter_map(|t| self.trails.get(&t.id).map(|p| (t.id, p.clone()))).collect();
        (tracks, live)
    }
}

fn json_tracks(tracks: &[TrackedObject], cfg: &ModelConfig) -> Vec<JsonTrack> {
    tracks
        .iter()
        .map(|t| JsonTrack { id: t.id, bbox: t.bbox, score: t.score, label: t.label, class: cfg.class_name(t.label) })
        .collect()
}

pub fn run(args: TrackArgs) -> Result<()> {
    let sources::Expanded { paths, videos, skipped } = args.input.expand()?;
    if let Some(json) = &args.output.save_json {
        let mut inputs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        inputs.extend(videos.iter().filter_map(|v| match v {
            VideoSource::File(p) => Some(p.as_path()),
            _ => None,
        }));
        inputs.extend(args.detector.weights.as_deref());
        output::check(json, args.output.exist_ok, &inputs)?;
    }
    let mut det = args.detector.load()?;
    if let Some(s) = args.imgsz {
        det.input_size = s;
    }
    det.params = args.thresholds.over(det.params);
    // The tracker sees detections down to its low threshold (ByteTrack's second association).
    det.params.score_thr = det.params.score_thr.min(args.track_low_thresh);
    let run_dir = if args.output.no_draw && args.output.out.is_none() {
        PathBuf::new()
    } else {
        sources::run_dir(args.output.out.as_deref(), "runs/track")?
    };
    let cfg = Arc::new(det.config().clone());
    let mut lines =
        args.output.save_json.as_deref().map(|j| output::JsonLines::create(j, args.output.exist_ok)).transpose()?;
    let mut failures = skipped;
    if !paths.is_empty() {
        let read = track_images(&args, &det, &paths, &run_dir, &cfg, lines.as_mut())?;
        failures += paths.len() - read;
        if read == 0 && videos.is_empty() {
            bail!("none of the {} frames could be read; nothing was written", paths.len());
        }
        if !args.output.no_draw {
            eprintln!("annotated frames saved to {}", run_dir.display());
        }
    }
    let mut interrupted = false;
    if !videos.is_empty() {
        let on_stop = "stopping after this frame; finishing the video and tracks";
        let (failed, stopped) = video_job::run_each(&videos, on_stop, |source, stop| {
            track_video(&args, &det, source, &run_dir, &cfg, stop, lines.as_mut())
        });
        failures += failed;
        interrupted = stopped;
    }
    if let (Some(l), Some(json)) = (lines, &args.output.save_json) {
        if l.lines() == 0 {
            bail!("no frame could be read; nothing was written");
        }
        l.finish()?;
        eprintln!("tracks written to {} (JSON Lines, one frame per line)", json.display());
    }
    if interrupted {
        return Err(Interrupted("the tracks up to the last frame were saved".into()).into());
    }
    if failures > 0 {
        let inputs = paths.len() + videos.len() + skipped;
        return Err(Skipped(format!("{failures} of {inputs} inputs were skipped or incomplete")).into());
    }
    Ok(())
}

/// The image sources as one sequence; returns how many frames could be read.
fn track_images(
    args: &TrackArgs,
    det: &rtmdet::Detector,
    paths: &[PathBuf],
    run_dir: &Path,
    cfg: &ModelConfig,
    mut lines: Option<&mut output::JsonLines>,
) -> Result<usize> {
    let rate = args.frame_rate.unwrap_or(30.0);
    let mut seq = Sequence::new(args, rate);
    let mut read = 0;
    for (frame, path) in paths.iter().enumerate() {
        let img = match read_image(path) {
            Ok(img) => img,
            Err(e) => {
                eprintln!("skipping {}: {e}", path.display());
                continue;
            }
        };
        read += 1;
        let (tracks, trails) = seq.step(&det.predict(&img)?);
        eprintln!("{}: {} tracks", path.display(), tracks.len());
        if !args.output.no_draw {
            let canvas = draw(&img, &tracks, &trails, cfg);
            save_frame(run_dir, path, &canvas)?;
        }
        if let Some(l) = lines.as_deref_mut() {
            let image = Some(path.display().to_string());
            l.push(&JsonFrame {
                frame,
                time_s: frame as f64 / rate,
                image,
                source: None,
                detections: json_tracks(&tracks, cfg),
            })?;
        }
    }
    Ok(read)
}

/// One video, camera or stream as a sequence, drawn into `<run>/<name>.mp4`.
fn track_video(
    args: &TrackArgs,
    det: &rtmdet::Detector,
    source: &VideoSource,
    run_dir: &Path,
    cfg: &Arc<ModelConfig>,
    stop: &std::sync::atomic::AtomicBool,
    mut lines: Option<&mut output::JsonLines>,
) -> Result<video_job::Outcome> {
    let out = (!args.output.no_draw).then(|| sources::free_path(run_dir, &source.stem(), "mp4"));
    let job = VideoJob { source, stride: args.vid_stride, out, replace: false, stop, max_frames: None };
    let mut seq: Option<Sequence> = None;
    video_job::run(job, |frame, info| {
        let seq = seq
            .get_or_insert_with(|| Sequence::new(args, args.frame_rate.unwrap_or(info.fps / args.vid_stride as f64)));
        let (tracks, trails) = seq.step(&det.predict(&frame.image)?);
        if let Some(l) = lines.as_deref_mut() {
            let source = Some(source.display());
            let detections = json_tracks(&tracks, cfg);
            l.push(&JsonFrame { frame: frame.index, time_s: frame.time_s, image: None, source, detections })?;
        }
        if args.output.no_draw {
            return Ok(None);
        }
        let (image, cfg) = (frame.image.clone(), cfg.clone());
        let job: DrawJob = Box::new(move || draw(&image, &tracks, &trails, &cfg));
        Ok(Some(job))
    })
}

/// The frame with each track's box labelled `#id class score`, coloured by id, and its trail.
fn draw(img: &BgrImage, tracks: &[TrackedObject], trails: &[Trail], cfg: &ModelConfig) -> RgbImage {
    let mut canvas = img.to_rgb();
    // Labels are the track ids, so colours follow the ids and the text names the track.
    let set: Instances = tracks.iter().map(|t| Detection { bbox: t.bbox, score: t.score, label: t.id }).collect();
    let class: HashMap<usize, String> = tracks.iter().map(|t| (t.id, cfg.class_name(t.label))).collect();
    rtmdet::viz::draw_trails(&mut canvas, trails);
    rtmdet::viz::draw_instances(&mut canvas, &set, |id| format!("#{id} {}", class[&id]));
    canvas
}

fn save_frame(dir: &Path, src: &Path, canvas: &RgbImage) -> Result<()> {
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("frame");
    let out = sources::free_path(dir, stem, "jpg");
    let mut bytes = std::io::Cursor::new(Vec::new());
    canvas.write_to(&mut bytes, image::ImageFormat::Jpeg).with_context(|| format!("encoding {}", out.display()))?;
    rtmdet::files::write_new_atomically(&out, bytes.get_ref())?;
    Ok(())
}
