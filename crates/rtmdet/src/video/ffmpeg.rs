//! Reading through the system's `ffmpeg` (any codec and container it knows, webcams, network
//! streams): `ffprobe` states the size and rate, `ffmpeg` pipes raw BGR frames. Nothing is
//! linked; without FFmpeg installed these sources are refused with a message that says how to
//! get it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use super::{Frame, FrameSource, VideoInfo, VideoSource, video_error};
use crate::error::Result;
use crate::image_io::BgrImage;

/// Whether `ffmpeg` and `ffprobe` run (checked once).
pub fn available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        ["ffmpeg", "ffprobe"].iter().all(|p| {
            Command::new(p)
                .arg("-version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    })
}

/// The input arguments for a source: a camera through the platform's capture device, a
/// stream with a network timeout.
fn input_args(source: &VideoSource) -> Result<Vec<String>> {
    Ok(match source {
        VideoSource::File(p) => vec!["-i".into(), p.display().to_string()],
        VideoSource::Stream(url) => {
            let mut a: Vec<String> = Vec::new();
            if url.to_ascii_lowercase().starts_with("rtsp") {
                // TCP: no lost packets behind firewalls and NAT.
                a.extend(["-rtsp_transport".into(), "tcp".into()]);
            }
            // Give up on a stream that sends nothing for 10 s (microseconds).
            a.extend(["-rw_timeout".into(), "10000000".into(), "-i".into(), url.clone()]);
            a
        }
        VideoSource::Webcam(n) => camera_args(source, *n)?,
    })
}

#[cfg(target_os = "linux")]
fn camera_args(source: &VideoSource, n: usize) -> Result<Vec<String>> {
    let dev = format!("/dev/video{n}");
    if !std::path::Path::new(&dev).exists() {
        return Err(video_error(source, format!("no webcam {n}: {dev} does not exist")));
    }
    Ok(vec!["-f".into(), "v4l2".into(), "-i".into(), dev])
}

#[cfg(target_os = "macos")]
fn camera_args(_: &VideoSource, n: usize) -> Result<Vec<String>> {
    Ok(vec!["-f".into(), "avfoundation".into(), "-framerate".into(), "30".into(), "-i".into(), n.to_string()])
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn camera_args(source: &VideoSource, _: usize) -> Result<Vec<String>> {
    Err(video_error(source, "webcams by number are supported on Linux and macOS; give the camera as an FFmpeg URL"))
}

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<ProbeStream>,
}

#[derive(serde::Deserialize)]
struct ProbeStream {
    width: Option<usize>,
    height: Option<usize>,
    codec_name: Option<String>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    nb_frames: Option<String>,
}

/// `"30000/1001"` → 29.97; `None` for `0/0` and the like.
fn parse_rate(r: &str) -> Option<f64> {
    let (n, d) = r.split_once('/').unwrap_or((r, "1"));
    let v = n.parse::<f64>().ok()? / d.parse::<f64>().ok()?;
    (v.is_finite() && v > 0.0).then_some(v)
}

fn probe(source: &VideoSource, input: &[String]) -> Result<VideoInfo> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=width,height,codec_name,avg_frame_rate,r_frame_rate,nb_frames")
        .args(["-of", "json"])
        .args(input)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| video_error(source, format!("cannot run ffprobe: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(video_error(source, format!("FFmpeg cannot open it: {why}")));
    }
    let probe: Probe = serde_json::from_slice(&out.stdout)
        .map_err(|e| video_error(source, format!("unreadable ffprobe output: {e}")))?;
    let s = probe.streams.into_iter().next().ok_or_else(|| video_error(source, "it has no video stream"))?;
    let (Some(width), Some(height)) = (s.width.filter(|&w| w > 0), s.height.filter(|&h| h > 0)) else {
        return Err(video_error(source, "its video stream has no picture size"));
    };
    let fps =
        [&s.avg_frame_rate, &s.r_frame_rate].iter().find_map(|r| r.as_deref().and_then(parse_rate)).unwrap_or(30.0);
    Ok(VideoInfo {
        width,
        height,
        fps,
        frames: s.nb_frames.and_then(|n| n.parse().ok()).filter(|&n| n > 0),
        codec: s.codec_name.unwrap_or_else(|| "unknown".into()),
        backend: "ffmpeg",
    })
}

pub struct FfmpegReader {
    source: VideoSource,
    child: Child,
    stdout: ChildStdout,
    /// The last lines FFmpeg wrote to stderr, for the error message when it fails.
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    /// The thread collecting stderr; it ends when FFmpeg closes the pipe.
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    info: VideoInfo,
    next_index: usize,
    stride: usize,
    ended: bool,
}

impl FfmpegReader {
    pub fn open(source: &VideoSource, stride: usize) -> Result<Self> {
        if !available() {
            let what = match source {
                VideoSource::File(_) => "this video format",
                VideoSource::Webcam(_) => "webcams",
                VideoSource::Stream(_) => "network streams",
            };
            return Err(video_error(
                source,
                format!(
                    "FFmpeg is not installed, and {what} need it (built in: H.264 in MP4/MOV/M4V files); \
                     install it (apt install ffmpeg, brew install ffmpeg) and retry"
                ),
            ));
        }
        let input = input_args(source)?;
        let info = probe(source, &input)?;
        let mut child = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
            .args(&input)
            .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| video_error(source, format!("cannot run ffmpeg: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_thread = {
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(std::result::Result::ok) {
                    let mut t = tail.lock().expect("not poisoned");
                    t.push_back(line);
                    if t.len() > 5 {
                        t.pop_front();
                    }
                }
            })
        };
        Ok(FfmpegReader {
            source: source.clone(),
            child,
            stdout,
            stderr_tail,
            stderr_thread: Some(stderr_thread),
            info,
            next_index: 0,
            stride,
            ended: false,
        })
    }

    /// Reads one frame's bytes; `None` at a clean end of the pipe.
    fn read_raw(&mut self) -> Result<Option<Vec<u8>>> {
        let n = self.info.width * self.info.height * 3;
        let mut buf = vec![0u8; n];
        let mut filled = 0;
        while filled < n {
            match self.stdout.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(video_error(&self.source, format!("reading from ffmpeg: {e}"))),
            }
        }
        if filled == n {
            return Ok(Some(buf));
        }
        self.ended = true;
        let status = self.child.wait().map_err(|e| video_error(&self.source, e))?;
        // All of FFmpeg's messages, once the pipe is closed.
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let tail: Vec<String> = self.stderr_tail.lock().expect("not poisoned").iter().cloned().collect();
        if !status.success() {
            let why = if tail.is_empty() { status.to_string() } else { tail.join("; ") };
            return Err(video_error(&self.source, format!("ffmpeg stopped after {} frames: {why}", self.next_index)));
        }
        // FFmpeg ends a stream that dropped (or a damaged file) with success but reports the
        // errors (it runs at `-loglevel error`, so anything it prints is one): the video is
        // incomplete, and says why.
        if !tail.is_empty() && self.next_index > 0 {
            return Err(video_error(
                &self.source,
                format!("the video ended with errors after {} frames: {}", self.next_index, tail.join("; ")),
            ));
        }
        if filled > 0 {
            return Err(video_error(&self.source, format!("the video ended inside frame {}", self.next_index)));
        }
        if self.next_index == 0 {
            return Err(video_error(&self.source, "no frame could be decoded"));
        }
        Ok(None)
    }
}

impl FrameSource for FfmpegReader {
    fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let Some(data) = self.read_raw()? else { return Ok(None) };
            let index = self.next_index;
            self.next_index += 1;
            if index.is_multiple_of(self.stride) {
                let image = BgrImage::new(self.info.width, self.info.height, data)?;
                return Ok(Some(Frame { index, time_s: index as f64 / self.info.fps, image }));
            }
        }
    }
}

impl Drop for FfmpegReader {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn frame_rates() {
        assert_eq!(parse_rate("25/1"), Some(25.0));
        assert!((parse_rate("30000/1001").unwrap() - 29.97).abs() < 1e-3);
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(parse_rate("15"), Some(15.0));
    }
}
