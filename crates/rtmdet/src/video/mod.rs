//! Video in and out: frames from video files, webcams and network streams, and annotated
//! H.264 MP4 out.
//!
//! Built in, with no system library: H.264 in MP4/MOV/M4V files ([`mp4_in`]: a Rust MP4
//! demuxer and Cisco's OpenH264, compiled from its bundled source) and H.264 MP4 writing
//! ([`mp4_out`]). Everything else — other codecs and containers, webcams, RTSP/RTMP/HTTP
//! streams — is read through the system's `ffmpeg` ([`ffmpeg`]) when one is installed, and
//! otherwise refused with a message that says so. [`Prefetch`] decodes ahead of the model in
//! its own thread.

pub mod ffmpeg;
pub mod h264;
pub mod mp4_in;
pub mod mp4_out;
mod prefetch;
pub mod yuv;

use std::path::{Path, PathBuf};

pub use mp4_out::VideoWriter;
pub use prefetch::Prefetch;

use crate::error::{Error, Result};
use crate::image_io::BgrImage;

/// What a source is.
#[derive(Clone, Debug)]
pub struct VideoInfo {
    pub width: usize,
    pub height: usize,
    /// Frames per second of the source (as the container or camera states it).
    pub fps: f64,
    /// Frames in the source, when known (files), before any stride.
    pub frames: Option<usize>,
    /// Codec name (`h264`, `hevc`, `rawvideo`, ...).
    pub codec: String,
    /// Which reader decodes it: `builtin` or `ffmpeg`.
    pub backend: &'static str,
}

/// One decoded frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Index in the source (counting every frame, also those a stride skips).
    pub index: usize,
    /// Presentation time from the start of the source, in seconds.
    pub time_s: f64,
    pub image: BgrImage,
}

/// A source of frames in presentation order.
pub trait FrameSource: Send {
    fn info(&self) -> &VideoInfo;
    /// The next frame, `None` at the end. An error ends the source (frames before it were
    /// good).
    fn next_frame(&mut self) -> Result<Option<Frame>>;
    /// Damaged frames that were skipped so far (corrupt data the decoder refused).
    fn damaged(&self) -> usize {
        0
    }
}

/// Where frames come from.
#[derive(Clone, Debug, PartialEq)]
pub enum VideoSource {
    File(PathBuf),
    /// A camera by number: `/dev/video<N>` on Linux.
    Webcam(usize),
    /// A network stream (`rtsp://`, `rtmp://`, `http(s)://`, `udp://`, `srt://`, ...).
    Stream(String),
}

/// File extensions read as videos.
pub const VIDEO_EXTENSIONS: [&str; 13] =
    ["mp4", "m4v", "mov", "3gp", "mkv", "webm", "avi", "wmv", "flv", "mpg", "mpeg", "ts", "asf"];

/// Extensions whose files are ISO-BMFF (MP4) containers, which the built-in reader demuxes.
const MP4_EXTENSIONS: [&str; 4] = ["mp4", "m4v", "mov", "3gp"];

const STREAM_SCHEMES: [&str; 9] =
    ["rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "udp://", "tcp://", "srt://"];

fn has_extension(path: &Path, list: &[&str]) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| list.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether a path names a video file (by its extension).
pub fn is_video_file(path: &Path) -> bool {
    has_extension(path, &VIDEO_EXTENSIONS)
}

impl VideoSource {
    /// A source argument read as a video source: a camera number (`0`, when no file has that
    /// name), a stream URL, or a video file (by extension, existing or not, so that a missing
    /// video is reported as one). Anything else is `None`.
    pub fn parse(arg: &str) -> Option<VideoSource> {
        let lower = arg.to_ascii_lowercase();
        if STREAM_SCHEMES.iter().any(|s| lower.starts_with(s)) {
            return Some(VideoSource::Stream(arg.to_string()));
        }
        let path = Path::new(arg);
        if !path.exists()
            && let Ok(n) = arg.parse::<usize>()
        {
            return Some(VideoSource::Webcam(n));
        }
        is_video_file(path).then(|| VideoSource::File(path.to_path_buf()))
    }

    /// A short name for messages and output files: the file's stem, `webcam0`, `stream`.
    pub fn stem(&self) -> String {
        match self {
            VideoSource::File(p) => p.file_stem().and_then(|s| s.to_str()).unwrap_or("video").to_string(),
            VideoSource::Webcam(n) => format!("webcam{n}"),
            VideoSource::Stream(_) => "stream".to_string(),
        }
    }

    /// What a user typed, for messages and the JSON `source` field.
    pub fn display(&self) -> String {
        match self {
            VideoSource::File(p) => p.display().to_string(),
            VideoSource::Webcam(n) => n.to_string(),
            VideoSource::Stream(url) => url.clone(),
        }
    }
}

/// Which reader to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The built-in reader where it can (H.264 in MP4), FFmpeg otherwise.
    #[default]
    Auto,
    Builtin,
    Ffmpeg,
}

impl Backend {
    /// `RTMDET_VIDEO_BACKEND` (`auto`, `builtin`, `ffmpeg`), default auto.
    pub fn from_env() -> Result<Backend> {
        match std::env::var("RTMDET_VIDEO_BACKEND").as_deref() {
            Err(_) | Ok("" | "auto") => Ok(Backend::Auto),
            Ok("builtin") => Ok(Backend::Builtin),
            Ok("ffmpeg") => Ok(Backend::Ffmpeg),
            Ok(other) => Err(Error::Other(format!("RTMDET_VIDEO_BACKEND={other}: expected auto, builtin or ffmpeg"))),
        }
    }
}

/// How to read a source.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Yield every `stride`-th frame (1 = all). Skipped frames are still decoded (later
    /// frames depend on them) but not converted.
    pub stride: usize,
    pub backend: Backend,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { stride: 1, backend: Backend::Auto }
    }
}

pub(crate) fn video_error(source: &VideoSource, reason: impl std::fmt::Display) -> Error {
    Error::Video { input: source.display(), reason: reason.to_string() }
}

/// Opens a source with the reader that can decode it.
pub fn open(source: &VideoSource, opts: OpenOptions) -> Result<Box<dyn FrameSource>> {
    let stride = opts.stride.max(1);
    if let VideoSource::File(path) = source {
        if let Some(why) = crate::files::not_a_regular_file(path) {
            return Err(video_error(source, why));
        }
        if opts.backend != Backend::Ffmpeg && has_extension(path, &MP4_EXTENSIONS) {
            match mp4_in::Mp4H264Reader::open(path, stride)? {
                Ok(reader) => return Ok(Box::new(reader)),
                Err(codec) if opts.backend == Backend::Builtin || !ffmpeg::available() => {
                    return Err(video_error(
                        source,
                        format!(
                            "its video is {codec}, which the built-in reader does not decode (it reads H.264); install FFmpeg to read it"
                        ),
                    ));
                }
                Err(_) => {}
            }
        } else if opts.backend == Backend::Builtin {
            return Err(video_error(source, "the built-in reader reads only H.264 in MP4/MOV/M4V files"));
        }
    }
    if opts.backend == Backend::Builtin {
        return Err(video_error(source, "cameras and streams are read through FFmpeg"));
    }
    Ok(Box::new(ffmpeg::FfmpegReader::open(source, stride)?))
}
