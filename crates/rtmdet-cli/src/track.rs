//! `rtmdet track`: ByteTrack over a sequence of frames (image files, folders, globs or lists,
//! in source order), each object with a stable id in the drawings and in JSON Lines.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use rtmdet::image_io::read_image;
use rtmdet::track::{ByteTracker, TrackedObject, TrackerConfig};
use rtmdet::{Detection, Instances};
use serde::Serialize;

use crate::args::{self, DetectorArgs, OutputArgs, SourceArgs, ThresholdArgs};
use crate::exit::Skipped;
use crate::{output, sources};

/// Track objects through a sequence of frames (ByteTrack): stable ids in drawings and JSON Lines.
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
    /// Frames per second of the sequence (scales --track-buffer).
    #[arg(long, default_value_t = 30.0, value_parser = args::positive_number, allow_negative_numbers = true)]
    pub frame_rate: f64,
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
/// `detections`), each detection with its track id.
#[derive(Serialize)]
struct JsonFrame {
    frame: usize,
    /// `frame / --frame-rate`.
    time_s: f64,
    image: String,
    detections: Vec<JsonTrack>,
}

/// Centres kept per track for the drawn trails.
const TRAIL: usize = 30;

pub fn run(args: TrackArgs) -> Result<()> {
    let sources::Expanded { paths, skipped } = sources::expand(&args.input.sources, args.input.recursive)?;
    if let Some(json) = &args.output.save_json {
        let mut inputs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
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
    let cfg = TrackerConfig {
        track_high_thresh: args.track_high_thresh,
        track_low_thresh: args.track_low_thresh,
        new_track_thresh: args.new_track_thresh,
        track_buffer: args.track_buffer,
        match_thresh: args.match_thresh,
        fuse_score: !args.no_fuse_score,
        frame_rate: args.frame_rate as f32,
    };
    let mut tracker = ByteTracker::new(cfg);
    let run_dir = if args.output.no_draw && args.output.out.is_none() {
        PathBuf::new()
    } else {
        sources::run_dir(args.output.out.as_deref(), "runs/track")?
    };
    let (mut lines, mut failures) = (String::new(), 0usize);
    let mut trails: HashMap<usize, Vec<[f32; 2]>> = HashMap::new();
    for (frame, path) in paths.iter().enumerate() {
        let img = match read_image(path) {
            Ok(img) => img,
            Err(e) => {
                eprintln!("skipping {}: {e}", path.display());
                failures += 1;
                continue;
            }
        };
        let dets = det.predict(&img)?;
        let tracks = tracker.update(&dets);
        eprintln!("{}: {} tracks", path.display(), tracks.len());
        for t in &tracks {
            let trail = trails.entry(t.id).or_default();
            trail.push([(t.bbox[0] + t.bbox[2]) / 2.0, (t.bbox[1] + t.bbox[3]) / 2.0]);
            if trail.len() > TRAIL {
                trail.remove(0);
            }
        }
        if !args.output.no_draw {
            save_frame(&run_dir, path, &img, &tracks, &trails, &det)?;
        }
        let record = JsonFrame {
            frame,
            time_s: frame as f64 / args.frame_rate,
            image: path.display().to_string(),
            detections: tracks
                .iter()
                .map(|t| JsonTrack {
                    id: t.id,
                    bbox: t.bbox,
                    score: t.score,
                    label: t.label,
                    class: det.config().class_name(t.label),
                })
                .collect(),
        };
        lines.push_str(&serde_json::to_string(&record)?);
        lines.push('\n');
    }
    if lines.is_empty() {
        bail!("none of the {} frames could be read; nothing was written", paths.len());
    }
    if let Some(json) = &args.output.save_json {
        output::write(json, lines.as_bytes(), args.output.exist_ok)?;
        eprintln!("tracks written to {} (JSON Lines, one frame per line)", json.display());
    }
    if !args.output.no_draw {
        eprintln!("annotated frames saved to {}", run_dir.display());
    }
    if failures + skipped > 0 {
        return Err(Skipped(format!("{} of {} inputs were skipped", failures + skipped, paths.len() + skipped)).into());
    }
    Ok(())
}

/// The frame with each track's box labelled `#id class score`, coloured by id, and its trail.
fn save_frame(
    dir: &std::path::Path,
    src: &std::path::Path,
    img: &rtmdet::image_io::BgrImage,
    tracks: &[TrackedObject],
    trails: &HashMap<usize, Vec<[f32; 2]>>,
    det: &rtmdet::Detector,
) -> Result<()> {
    let mut canvas = img.to_rgb();
    // Labels are the track ids, so colours follow the ids and the text names the track.
    let set: Instances = tracks.iter().map(|t| Detection { bbox: t.bbox, score: t.score, label: t.id }).collect();
    let class: HashMap<usize, String> = tracks.iter().map(|t| (t.id, det.config().class_name(t.label))).collect();
    let live: Vec<(usize, Vec<[f32; 2]>)> =
        tracks.iter().filter_map(|t| trails.get(&t.id).map(|p| (t.id, p.clone()))).collect();
    rtmdet::viz::draw_trails(&mut canvas, &live);
    rtmdet::viz::draw_instances(&mut canvas, &set, |id| format!("#{id} {}", class[&id]));
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("frame");
    let out = sources::free_path(dir, stem, "jpg");
    let mut bytes = std::io::Cursor::new(Vec::new());
    canvas.write_to(&mut bytes, image::ImageFormat::Jpeg).with_context(|| format!("encoding {}", out.display()))?;
    rtmdet::files::write_new_atomically(&out, bytes.get_ref())?;
    Ok(())
}
