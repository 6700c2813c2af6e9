//! A command's work over one video source (file, camera or stream), as `predict` and `track`
//! share it: frames decoded ahead in their own thread, the command's detection on this one, the
//! annotated frames drawn and encoded in a third, a progress bar with frames/s, and Ctrl-C or a
//! failing source ending the video cleanly (the annotated video and results so far stay valid).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{Result, anyhow};
use image::RgbImage;
use rtmdet::video::{self, Frame, FrameSource, OpenOptions, Prefetch, VideoInfo, VideoSource, VideoWriter};

/// Draws one annotated frame; run on the encoding thread.
pub type DrawJob = Box<dyn FnOnce() -> RgbImage + Send>;

/// Frames decoded ahead of the model (a few: each is a full picture in memory).
const DECODE_AHEAD: usize = 4;
/// Annotated frames queued for the encoder.
const ENCODE_QUEUE: usize = 4;

pub struct VideoJob<'a> {
    pub source: &'a VideoSource,
    /// Every `stride`-th frame is processed.
    pub stride: usize,
    /// Where the annotated video goes; `None`: nothing is drawn.
    pub out: Option<PathBuf>,
    pub replace: bool,
    pub stop: &'a AtomicBool,
    /// Stop after this many processed frames (`bench video`).
    pub max_frames: Option<usize>,
}

/// How a video went.
pub struct Outcome {
    pub frames: usize,
    pub seconds: f64,
    /// The annotated video, when one was written.
    pub video: Option<PathBuf>,
    /// Why the source ended early (a stream that dropped, a damaged file), if it did.
    pub failure: Option<String>,
    /// Damaged frames the decoder skipped.
    pub damaged: usize,
    pub interrupted: bool,
}

impl Outcome {
    /// Whether the run should end with a non-zero exit code for this video.
    pub fn incomplete(&self) -> bool {
        self.failure.is_some() || self.damaged > 0
    }
}

/// Frame progress: a bar on a terminal; in a log (stderr redirected, as under `nohup`, CI or
/// a service) a line at the first frame and then every [`LOG_EVERY`], since a bar draws
/// nothing there and a long stream would otherwise say nothing for hours.
struct Progress {
    bar: indicatif::ProgressBar,
    log: Option<LogProgress>,
}

struct LogProgress {
    name: String,
    total: Option<usize>,
    started: Instant,
    last: Option<Instant>,
}

/// How often a log line reports a video's progress.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Progress {
    fn new(info: &VideoInfo, stride: usize, name: &str) -> Self {
        use std::io::IsTerminal;
        let total = info.frames.map(|n| n.div_ceil(stride));
        let (bar, template) = match total {
            Some(n) => (
                indicatif::ProgressBar::new(n as u64),
                "{prefix} {bar:30} {pos}/{len} frames, {per_sec} [{elapsed_precise}<{eta_precise}]",
            ),
            None => (indicatif::ProgressBar::no_length(), "{prefix} {pos} frames, {per_sec} [{elapsed_precise}]"),
        };
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("template"));
        bar.set_prefix(name.to_string());
        let log = (!std::io::stderr().is_terminal()).then(|| LogProgress {
            name: name.to_string(),
            total,
            started: Instant::now(),
            last: None,
        });
        Progress { bar, log }
    }

    /// One more frame processed (`done` in all).
    fn inc(&mut self, done: usize) {
        self.bar.inc(1);
        let Some(log) = &mut self.log else { return };
        let now = Instant::now();
        if log.last.is_some_and(|t| now - t < LOG_EVERY) {
            return;
        }
        log.last = Some(now);
        let seconds = (now - log.started).as_secs_f64();
        let of = log.total.map(|n| format!("/{n}")).unwrap_or_default();
        eprintln!("{}: frame {done}{of}, {:.1} frames/s", log.name, done as f64 / seconds.max(1e-9));
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// Runs `per_frame` on every kept frame of the source; it returns the drawing of the frame
/// (or `None` when nothing is drawn). Errors of `per_frame` and of the encoder end the run
/// with an error, after the video so far has been completed.
pub fn run(
    job: VideoJob<'_>,
    mut per_frame: impl FnMut(&Frame, &VideoInfo) -> Result<Option<DrawJob>>,
) -> Result<Outcome> {
    let opts = OpenOptions { stride: job.stride, backend: video::Backend::from_env()? };
    let mut frames = Prefetch::new(video::open(job.source, opts)?, DECODE_AHEAD);
    let info = frames.info().clone();
    eprintln!(
        "{}: {}x{}, {:.2} frames/s{}, {} ({} reader){}",
        job.source.display(),
        info.width,
        info.height,
        info.fps,
        info.frames.map(|n| format!(", {n} frames")).unwrap_or_default(),
        info.codec,
        info.backend,
        if job.stride > 1 { format!(", 1 frame in {}", job.stride) } else { String::new() },
    );
    let encoder = match &job.out {
        Some(path) => {
            let writer = VideoWriter::create(path, info.width, info.height, info.fps / job.stride as f64, job.replace)?;
            let (tx, rx) = sync_channel::<DrawJob>(ENCODE_QUEUE);
            let thread = std::thread::spawn(move || -> Result<Option<PathBuf>> {
                let mut writer = writer;
                for draw in rx {
                    writer.write_rgb(&draw())?;
                }
                Ok(writer.finish()?)
            });
            Some((tx, thread))
        }
        None => None,
    };
    let mut progress = Progress::new(&info, job.stride, &job.source.stem());
    let started = Instant::now();
    let (mut count, mut failure, mut error) = (0usize, None, None);
    let mut sender = encoder.as_ref().map(|(tx, _)| tx.clone());
    while !job.stop.load(Ordering::SeqCst) && job.max_frames.is_none_or(|m| count < m) {
        let frame = match frames.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        match per_frame(&frame, &info) {
            Ok(Some(draw)) => {
                // A closed channel: the encoder failed; its error is reported below.
                if sender.as_ref().is_some_and(|tx| tx.send(draw).is_err()) {
                    sender = None;
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        count += 1;
        progress.inc(count);
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    drop(sender);
    let video = match encoder {
        Some((tx, thread)) => {
            drop(tx);
            thread.join().map_err(|_| anyhow!("the video encoder thread failed"))??
        }
        None => None,
    };
    if let Some(e) = error {
        return Err(e);
    }
    Ok(Outcome {
        frames: count,
        seconds,
        video,
        failure,
        damaged: frames.damaged(),
        interrupted: job.stop.load(Ordering::SeqCst),
    })
}

/// The drawing of a frame's detections (boxes, labels, masks), as `predict` draws images.
pub fn draw_detections(
    image: &rtmdet::image_io::BgrImage,
    dets: rtmdet::Instances,
    cfg: &std::sync::Arc<rtmdet::ModelConfig>,
) -> DrawJob {
    let (image, cfg) = (image.clone(), cfg.clone());
    Box::new(move || {
        let mut canvas = image.to_rgb();
        rtmdet::viz::draw_instances(&mut canvas, &dets, |l| cfg.class_name(l));
        canvas
    })
}

/// Runs `one` on each video source in turn, with Ctrl-C installed (printing `on_stop`), and
/// reports each; a source that cannot be opened is reported and skipped. Returns how many
/// sources were skipped or incomplete, and whether Ctrl-C ended the run.
pub fn run_each(
    videos: &[VideoSource],
    on_stop: &'static str,
    mut one: impl FnMut(&VideoSource, &AtomicBool) -> Result<Outcome>,
) -> (usize, bool) {
    let stop = crate::interrupt::stop_flag(on_stop);
    let mut failures = 0;
    for source in videos {
        match one(source, &stop) {
            Ok(o) => {
                failures += usize::from(report(source, &o));
                if o.interrupted {
                    return (failures, true);
                }
            }
            Err(e) => {
                eprintln!("skipping {}: {e:#}", source.display());
                failures += 1;
            }
        }
    }
    (failures, false)
}

/// Prints how a video went; true when it counts as incomplete (exit code 3 at the end).
pub fn report(source: &VideoSource, o: &Outcome) -> bool {
    let rate = o.frames as f64 / o.seconds.max(1e-9);
    eprintln!("{}: {} frames in {:.1} s ({rate:.1} frames/s)", source.display(), o.frames, o.seconds);
    if let Some(v) = &o.video {
        eprintln!("annotated video saved to {}", v.display());
    }
    if o.damaged > 0 {
        eprintln!("warning: {}: {} damaged frames were skipped", source.display(), o.damaged);
    }
    if let Some(why) = &o.failure {
        eprintln!("error: {why} (the results up to there are kept)");
    }
    o.incomplete()
}
