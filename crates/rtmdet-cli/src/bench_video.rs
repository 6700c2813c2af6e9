//! `rtmdet bench video`: what the video pipeline costs on top of the model. In one run, on the
//! same frames: decoding alone, encoding alone, inference alone (frames already in memory),
//! and the whole pipeline as `predict` runs it (decode thread → detection → draw and encode
//! thread). Rounds alternate inference and pipeline, and each reports its best round, so that
//! machine drift hits both alike.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use rtmdet::video::{self, Frame, OpenOptions, VideoSource, VideoWriter};
use serde::Serialize;

use crate::args::{self, DetectorArgs};
use crate::measure::model_name;
use crate::output;
use crate::video_job::{self, VideoJob};

#[derive(Args)]
pub struct BenchVideoArgs {
    /// The video (H.264 MP4/MOV built in; other formats through an installed FFmpeg).
    pub source: PathBuf,
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Network input size (square) [default: the model's].
    #[arg(long, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: Option<usize>,
    /// Frames timed, from the start of the video.
    #[arg(long, default_value_t = 150, value_parser = args::positive, allow_negative_numbers = true)]
    pub frames: usize,
    /// Rounds of inference-alone and pipeline, alternating.
    #[arg(long, default_value_t = 3, value_parser = args::positive, allow_negative_numbers = true)]
    pub rounds: usize,
    /// Write the results as JSON (a new file, unless --exist-ok).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace an existing --json file.
    #[arg(long)]
    pub exist_ok: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    imgsz: usize,
    width: usize,
    height: usize,
    frames: usize,
    threads: usize,
    decode_fps: f64,
    encode_fps: f64,
    infer_fps: f64,
    pipeline_fps: f64,
    /// `infer_fps / pipeline_fps − 1`: what decoding, drawing and encoding add.
    overhead: f64,
}

fn fps(frames: usize, seconds: f64) -> f64 {
    frames as f64 / seconds.max(1e-9)
}

pub fn run(args: BenchVideoArgs) -> Result<()> {
    if let Some(json) = &args.json {
        output::check(json, args.exist_ok, &[args.source.as_path()])?;
    }
    let source = VideoSource::File(args.source.clone());
    let mut det = args.detector.load()?;
    if let Some(s) = args.imgsz {
        det.input_size = s;
    }
    // Decoding alone; the frames stay in memory for the other timings.
    let t = Instant::now();
    let mut reader = video::open(&source, OpenOptions { stride: 1, backend: video::Backend::from_env()? })?;
    let info = reader.info().clone();
    let mut frames: Vec<Frame> = Vec::new();
    while frames.len() < args.frames {
        match reader.next_frame()? {
            Some(f) => frames.push(f),
            None => break,
        }
    }
    let decode_fps = fps(frames.len(), t.elapsed().as_secs_f64());
    if frames.is_empty() {
        bail!("{} has no frames", args.source.display());
    }
    let n = frames.len();
    let dir = tempdir()?;
    // Encoding alone.
    let t = Instant::now();
    let mut w = VideoWriter::create(&dir.join("encode.mp4"), info.width, info.height, info.fps, true)?;
    for f in &frames {
        w.write(&f.image)?;
    }
    w.finish()?;
    let encode_fps = fps(n, t.elapsed().as_secs_f64());
    det.predict(&frames[0].image)?; // warm-up
    let (mut infer_s, mut pipeline_s) = (f64::INFINITY, f64::INFINITY);
    let stop = AtomicBool::new(false);
    let cfg = std::sync::Arc::new(det.config().clone());
    for round in 0..args.rounds {
        let t = Instant::now();
        for f in &frames {
            std::hint::black_box(det.predict(&f.image)?);
        }
        infer_s = infer_s.min(t.elapsed().as_secs_f64());
        let out = dir.join(format!("pipeline{round}.mp4"));
        let job =
            VideoJob { source: &source, stride: 1, out: Some(out), replace: true, stop: &stop, max_frames: Some(n) };
        let t = Instant::now();
        let o = video_job::run(job, |frame, _| {
            Ok(Some(video_job::draw_detections(&frame.image, det.predict(&frame.image)?, &cfg)))
        })?;
        pipeline_s = pipeline_s.min(t.elapsed().as_secs_f64());
        if o.frames != n {
            bail!("the pipeline processed {} of {n} frames", o.frames);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (infer_fps, pipeline_fps) = (fps(n, infer_s), fps(n, pipeline_s));
    let report = Report {
        model: model_name(det.config()),
        imgsz: det.input_size,
        width: info.width,
        height: info.height,
        frames: n,
        threads: args.detector.threads.unwrap_or_else(rtmdet::engine::cpu::default_threads),
        decode_fps,
        encode_fps,
        infer_fps,
        pipeline_fps,
        overhead: infer_fps / pipeline_fps - 1.0,
    };
    println!(
        "{} at {}, {}x{} video ({} reader), {n} frames, {} threads; best of {} rounds",
        report.model, report.imgsz, info.width, info.height, info.backend, report.threads, args.rounds
    );
    println!("{:>26} {:>10.1} frames/s", "decode alone", decode_fps);
    println!("{:>26} {:>10.1} frames/s", "encode alone", encode_fps);
    println!("{:>26} {:>10.1} frames/s", "inference alone", infer_fps);
    println!("{:>26} {:>10.1} frames/s", "decode+infer+draw+encode", pipeline_fps);
    println!("pipeline overhead over inference alone: {:+.1} %", 100.0 * report.overhead);
    if let Some(json) = &args.json {
        output::write_json(json, &report, args.exist_ok)?;
    }
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("rtmdet-bench-video-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
