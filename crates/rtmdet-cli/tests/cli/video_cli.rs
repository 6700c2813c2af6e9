//! `predict` and `track` on videos: JSON Lines per frame, annotated videos, `--vid-stride`,
//! Ctrl-C, and bad video sources. The clip is the library's fixture `walk.mp4` (the bundled
//! person moving over grey, 30 frames at 15 frames/s), read by the embedded detector.

use std::path::{Path, PathBuf};
use std::process::Command;

use rtmdet::video::{self, OpenOptions, VideoSource, VideoWriter};

use crate::common::*;

fn walk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rtmdet/tests/data/video/walk.mp4")
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn decode(path: &Path) -> Vec<video::Frame> {
    let mut src = video::open(&VideoSource::File(path.to_path_buf()), OpenOptions::default()).unwrap();
    std::iter::from_fn(|| src.next_frame().unwrap()).collect()
}

/// Each frame's line holds what `predict` finds in that frame as a still image, with the
/// frame's index and presentation time; the annotated video has every frame at the source's
/// size and rate.
#[test]
fn predict_video_writes_frames_and_json_lines() {
    let d = tmp("video-predict");
    let (json, out) = (d.join("dets.jsonl"), d.join("run"));
    let o = rtmdet(&[
        "predict",
        walk().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_lines(&json);
    assert_eq!(lines.len(), 30);
    // The same frames as still images, through the image path.
    let frames_dir = d.join("frames");
    std::fs::create_dir_all(&frames_dir).unwrap();
    let frames = decode(&walk());
    for f in &frames {
        rtmdet::image_io::write_png(&frames_dir.join(format!("{:03}.png", f.index)), &f.image).unwrap();
    }
    let still = d.join("still.json");
    let o = rtmdet(&["predict", frames_dir.to_str().unwrap(), "--no-draw", "--save-json", still.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let still: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&still).unwrap()).unwrap();
    for (k, (line, image)) in lines.iter().zip(&still).enumerate() {
        assert_eq!(line["source"], walk().to_str().unwrap());
        assert_eq!(
            (line["frame"].as_u64(), line["width"].as_u64(), line["height"].as_u64()),
            (Some(k as u64), Some(480), Some(360))
        );
        assert!((line["time_s"].as_f64().unwrap() - k as f64 / 15.0).abs() < 1e-9);
        assert_eq!(line["detections"], image["detections"], "frame {k}");
        assert!(!line["detections"].as_array().unwrap().is_empty(), "frame {k}: the person is found");
    }
    let annotated = decode(&out.join("walk.mp4"));
    assert_eq!(annotated.len(), 30);
    assert_eq!((annotated[0].image.width, annotated[0].image.height), (480, 360));
    assert!((annotated[29].time_s - 29.0 / 15.0).abs() < 1e-6);
    // Drawn: the annotated frame differs from the source frame around the person.
    assert_ne!(annotated[5].image.data, frames[5].image.data);
    // Existing results are not replaced.
    let o = rtmdet(&["predict", walk().to_str().unwrap(), "--no-draw", "--save-json", json.to_str().unwrap()]);
    assert!(!o.status.success());
    assert_eq!(json_lines(&json).len(), 30);
    let _ = std::fs::remove_dir_all(d);
}

/// `--vid-stride 3` tracks every third frame: one id for the one person throughout, the
/// annotated video at a third of the rate.
#[test]
fn track_video_with_stride_keeps_one_id() {
    let d = tmp("video-track");
    let (json, out) = (d.join("tracks.jsonl"), d.join("run"));
    let o = rtmdet(&[
        "track",
        "--source",
        walk().to_str().unwrap(),
        "--vid-stride",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = json_lines(&json);
    assert_eq!(lines.len(), 10);
    for (k, line) in lines.iter().enumerate() {
        assert_eq!(line["frame"], 3 * k);
        assert!((line["time_s"].as_f64().unwrap() - 3.0 * k as f64 / 15.0).abs() < 1e-9);
        let people: Vec<&serde_json::Value> =
            line["detections"].as_array().unwrap().iter().filter(|t| t["score"].as_f64().unwrap() > 0.5).collect();
        assert_eq!(people.len(), 1, "frame {}", 3 * k);
        assert_eq!(people[0]["id"], 1);
    }
    let mut annotated = video::open(&VideoSource::File(out.join("walk.mp4")), OpenOptions::default()).unwrap();
    assert!((annotated.info().fps - 5.0).abs() < 1e-6);
    assert_eq!(std::iter::from_fn(|| annotated.next_frame().unwrap()).count(), 10);
    let _ = std::fs::remove_dir_all(d);
}

/// Ctrl-C during a video: the frames so far are a playable video and a complete JSON Lines
/// file, and the exit code is 130.
#[test]
fn ctrl_c_finishes_the_video_cleanly() {
    use std::io::{BufRead, BufReader, Read};
    let d = tmp("video-interrupt");
    // A long clip: the walk, 20 times over.
    let long = d.join("long.mp4");
    let frames = decode(&walk());
    let mut w = VideoWriter::create(&long, 480, 360, 15.0, false).unwrap();
    for _ in 0..20 {
        for f in &frames {
            w.write(&f.image).unwrap();
        }
    }
    w.finish().unwrap();
    let (json, out) = (d.join("dets.jsonl"), d.join("run"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args([
            "predict",
            long.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--save-json",
            json.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // Interrupted once the first frame is done (stderr is a pipe here, so progress comes as
    // log lines): a Ctrl-C before any frame leaves nothing to keep, which proves nothing.
    while !seen.contains(": frame 1/600,") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the video did not start: {seen}");
        seen.push_str(&line);
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    stderr.read_to_string(&mut seen).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130), "{seen}");
    let lines = json_lines(&json);
    let annotated = decode(&out.join("long.mp4"));
    assert!(!lines.is_empty() && lines.len() < 600, "{} lines", lines.len());
    assert_eq!(annotated.len(), lines.len(), "one annotated frame per JSON line");
    let _ = std::fs::remove_dir_all(d);
}

/// Bad video sources: a clear message each, the other inputs still processed, a non-zero
/// exit code, and no temporary files left.
#[test]
fn bad_video_sources() {
    let d = tmp("video-bad");
    let garbage = d.join("garbage.mp4");
    std::fs::write(&garbage, b"not a video").unwrap();
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/person.jpg");
    let (json, out) = (d.join("dets.jsonl"), d.join("run"));
    let o = rtmdet(&[
        "predict",
        image.to_str().unwrap(),
        garbage.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("garbage.mp4") && err.contains("not a readable MP4"), "{err}");
    // The image's line is there.
    let lines = json_lines(&json);
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["image"].as_str().unwrap().ends_with("person.jpg"));
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["person.jpg"], "no video and no temporary file for the bad video");

    // A missing video file is named before any work.
    let o = rtmdet(&["predict", d.join("missing.mp4").to_str().unwrap(), "--no-draw"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("missing.mp4") && err.contains("does not exist"), "{err}");

    // A camera that is not there: named (or FFmpeg's absence is).
    let o = rtmdet(&["track", "--source", "7", "--no-draw"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("no webcam 7") || err.contains("FFmpeg is not installed"), "{err}");
    let _ = std::fs::remove_dir_all(d);
}

/// FFmpeg, when installed, reads streams. CI installs it and sets `RTMDET_REQUIRE_FFMPEG=1`,
/// so there these checks cannot be skipped.
fn ffmpeg_or_skip() -> bool {
    if video::ffmpeg::available() {
        return true;
    }
    assert!(
        std::env::var_os("RTMDET_REQUIRE_FFMPEG").is_none(),
        "RTMDET_REQUIRE_FFMPEG is set but ffmpeg does not run"
    );
    eprintln!("ffmpeg is not installed: streams are not tested here");
    false
}

/// A local HTTP server for `bytes`, sending the first `send` of them and then closing the
/// connection (a stream that drops when `send` is short). Serves every request the same way.
fn serve(bytes: Vec<u8>, send: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/clip.mp4", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = conn.write_all(header.as_bytes());
            let _ = conn.write_all(&bytes[..send]);
        }
    });
    url
}

/// An HTTP stream is read through FFmpeg like a file; one that drops half-way is reported
/// (exit code 3), and the frames up to the drop are a playable video and complete JSON Lines.
#[test]
fn http_streams_and_a_stream_that_drops() {
    if !ffmpeg_or_skip() {
        return;
    }
    let d = tmp("video-stream");
    let bytes = std::fs::read(walk()).unwrap();
    let run = |name: &str, url: &str| {
        let (json, out) = (d.join(format!("{name}.jsonl")), d.join(name));
        let o = rtmdet(&["predict", url, "--out", out.to_str().unwrap(), "--save-json", json.to_str().unwrap()]);
        (o, json_lines(&json), decode(&out.join("stream.mp4")))
    };
    let (o, lines, annotated) = run("whole", &serve(bytes.clone(), bytes.len()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!((lines.len(), annotated.len()), (30, 30));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ffmpeg reader"));

    let (o, lines, annotated) = run("dropped", &serve(bytes.clone(), bytes.len() * 2 / 3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("ended with errors after") && err.contains("results up to there are kept"), "{err}");
    assert!(!lines.is_empty() && lines.len() < 30, "{} frames", lines.len());
    assert_eq!(annotated.len(), lines.len());
    let _ = std::fs::remove_dir_all(d);
}
