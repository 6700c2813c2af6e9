//! Video in and out. The fixture `walk.mp4` (480×360, 15 frames/s, 30 frames, H.264 High
//! profile with B-frames and two key frames; `assets/person.jpg` moving over grey) was made by
//! FFmpeg/libx264; `walk_yuv_sha256.txt` holds FFmpeg's own decoding of every frame (yuv420p)
//! and `walk_frame7_ffmpeg.png` its RGB conversion of frame 7.

use std::path::{Path, PathBuf};

use rtmdet::image_io::{BgrImage, read_image};
use rtmdet::video::{self, Backend, FrameSource, OpenOptions, VideoSource, VideoWriter, mp4_in::Mp4H264Reader};
use sha2::Digest;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/video").join(name)
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rtmdet-video-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn frames(source: &VideoSource, opts: OpenOptions) -> Vec<video::Frame> {
    let mut src = video::open(source, opts).unwrap();
    std::iter::from_fn(|| src.next_frame().unwrap()).collect()
}

/// H.264 decoding is exact by the standard: every picture's planes equal FFmpeg's bit for bit,
/// in presentation order (the file has B-frames, so decode order differs).
#[test]
fn builtin_decoder_matches_ffmpeg_bit_for_bit() {
    let expected: Vec<String> =
        std::fs::read_to_string(fixture("walk_yuv_sha256.txt")).unwrap().lines().map(str::to_string).collect();
    let mut reader = Mp4H264Reader::open(&fixture("walk.mp4"), 1).unwrap().unwrap();
    let mut got = Vec::new();
    while let Some((index, time_s, yuv)) = reader.next_yuv().unwrap() {
        assert_eq!(index, got.len());
        assert!((time_s - index as f64 / 15.0).abs() < 1e-9, "frame {index} at {time_s} s");
        assert_eq!((yuv.width, yuv.height), (480, 360));
        got.push(format!("{:x}", sha2::Sha256::digest(&yuv.data)));
    }
    assert_eq!(got, expected);
    let info = reader.info();
    assert_eq!((info.width, info.height, info.frames, info.backend), (480, 360, Some(30), "builtin"));
    assert!((info.fps - 15.0).abs() < 1e-9);
}

/// Max per-channel difference between two images of the same size.
fn max_diff(a: &BgrImage, b: &BgrImage) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.data.iter().zip(&b.data).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

/// Peak signal-to-noise ratio in dB.
fn psnr(a: &BgrImage, b: &BgrImage) -> f64 {
    let mse = a.data.iter().zip(&b.data).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>()
        / a.data.len() as f64;
    10.0 * (255.0 * 255.0 / mse.max(1e-12)).log10()
}

/// Mean per-channel difference.
fn mean_diff(a: &BgrImage, b: &BgrImage) -> f64 {
    a.data.iter().zip(&b.data).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.data.len() as f64
}

/// Our BGR pixels are those OpenCV/FFmpeg give (BT.601 limited range, chroma replicated over
/// its 2×2 block), up to FFmpeg's rounding: swscale's fixed-point tables truncate, ours round,
/// so its values lie 0–3 levels below ours (measured on this fixture: max 3, mean 1.26). Another
/// matrix (BT.709) or full range would be off by 10–20 levels.
fn assert_conversion_close(ours: &BgrImage, ffmpeg: &BgrImage, what: &str) {
    let (max, mean) = (max_diff(ours, ffmpeg), mean_diff(ours, ffmpeg));
    assert!(max <= 3 && mean <= 1.5, "{what}: differs from FFmpeg's conversion by max {max}, mean {mean:.2} levels");
}

#[test]
fn colour_conversion_matches_ffmpeg() {
    let ours = &frames(&VideoSource::File(fixture("walk.mp4")), OpenOptions::default())[7];
    let theirs = read_image(&fixture("walk_frame7_ffmpeg.png")).unwrap();
    assert_conversion_close(&ours.image, &theirs, "frame 7");
}

/// A stride keeps every n-th frame, the same pictures with their own indices and times.
#[test]
fn stride_keeps_every_nth_frame() {
    let source = VideoSource::File(fixture("walk.mp4"));
    let all = frames(&source, OpenOptions::default());
    let third = frames(&source, OpenOptions { stride: 3, ..Default::default() });
    assert_eq!(third.len(), 10);
    for f in &third {
        let same = &all[f.index];
        assert_eq!(f.index % 3, 0);
        assert_eq!((f.time_s, &f.image), (same.time_s, &same.image));
    }
}

/// The prefetching thread gives the same frames in the same order.
#[test]
fn prefetch_is_transparent() {
    let source = VideoSource::File(fixture("walk.mp4"));
    let direct = frames(&source, OpenOptions::default());
    let mut pre = video::Prefetch::new(video::open(&source, OpenOptions::default()).unwrap(), 2);
    let ahead: Vec<video::Frame> = std::iter::from_fn(|| pre.next_frame().unwrap()).collect();
    assert_eq!(ahead.len(), direct.len());
    assert!(ahead.iter().zip(&direct).all(|(a, b)| a.index == b.index && a.image == b.image));
}

/// What the writer encodes, the reader decodes: every frame, its rate, its size, and pictures
/// within H.264's loss (PSNR over 35 dB at the writer's QP 22–26; measured 40.5–42.7 dB). An odd
/// size is padded by one pixel.
#[test]
fn writer_round_trip() {
    let dir = tmp_dir("roundtrip");
    let input = frames(&VideoSource::File(fixture("walk.mp4")), OpenOptions::default());
    let out = dir.join("out.mp4");
    let mut w = VideoWriter::create(&out, 480, 360, 15.0, false).unwrap();
    for f in &input {
        w.write(&f.image).unwrap();
    }
    assert!(!out.exists(), "the file appears only when finished");
    assert_eq!(w.finish().unwrap(), Some(out.clone()));
    let back = frames(&VideoSource::File(out.clone()), OpenOptions { backend: Backend::Builtin, ..Default::default() });
    assert_eq!(back.len(), input.len());
    for (a, b) in back.iter().zip(&input) {
        assert!((a.time_s - b.time_s).abs() < 1e-6);
        let p = psnr(&a.image, &b.image);
        assert!(p > 35.0, "frame {}: PSNR {p:.1} dB", a.index);
    }
    // Nothing is replaced unless asked.
    assert!(VideoWriter::create(&out, 480, 360, 15.0, false).is_err());
    // Odd sides: padded to even, the picture kept.
    let odd = BgrImage::new(33, 17, vec![90; 33 * 17 * 3]).unwrap();
    let path = dir.join("odd.mp4");
    let mut w = VideoWriter::create(&path, 33, 17, 30000.0 / 1001.0, false).unwrap();
    for _ in 0..3 {
        w.write(&odd).unwrap();
    }
    w.finish().unwrap();
    let back = frames(&VideoSource::File(path), OpenOptions::default());
    assert_eq!((back.len(), back[0].image.width, back[0].image.height), (3, 34, 18));
    assert!((back[2].time_s - 2.0 * 1001.0 / 30000.0).abs() < 1e-4);
    // No frames: no file.
    let empty = dir.join("empty.mp4");
    assert_eq!(VideoWriter::create(&empty, 64, 64, 25.0, false).unwrap().finish().unwrap(), None);
    assert!(!empty.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// A writer dropped before `finish` (a failed run) leaves nothing behind.
#[test]
fn unfinished_writer_leaves_no_file() {
    let dir = tmp_dir("unfinished");
    let mut w = VideoWriter::create(&dir.join("x.mp4"), 64, 48, 25.0, false).unwrap();
    w.write(&BgrImage::new(64, 48, vec![10; 64 * 48 * 3]).unwrap()).unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

fn open_error(source: VideoSource, backend: Backend) -> String {
    match video::open(&source, OpenOptions { backend, ..Default::default() }) {
        Ok(mut s) => match std::iter::from_fn(|| s.next_frame().transpose()).find_map(Result::err) {
            Some(e) => e.to_string(),
            None => panic!("{source:?} read without error"),
        },
        Err(e) => e.to_string(),
    }
}

/// Bad files give errors that name the file and the problem, never a panic.
#[test]
fn bad_videos_are_clear_errors() {
    let dir = tmp_dir("bad");
    let missing = open_error(VideoSource::File(dir.join("nope.mp4")), Backend::Builtin);
    assert!(missing.contains("nope.mp4") && missing.contains("does not exist"), "{missing}");

    let garbage = dir.join("garbage.mp4");
    std::fs::write(&garbage, b"this is not a video at all, just text").unwrap();
    let e = open_error(VideoSource::File(garbage), Backend::Builtin);
    assert!(e.contains("garbage.mp4") && e.contains("not a readable MP4"), "{e}");

    // Cut inside the sample data.
    let bytes = std::fs::read(fixture("walk.mp4")).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = open_error(VideoSource::File(cut), Backend::Auto);
    assert!(e.contains("cut.mp4") && e.contains("truncated"), "{e}");
    // Damaged sample data (the header intact): damaged pictures are skipped and counted, or the
    // file is refused; never a panic.
    let mut noisy = bytes.clone();
    let start = noisy.len() - 6000;
    for (k, b) in noisy[start..].iter_mut().enumerate().step_by(7) {
        *b ^= (k as u8).wrapping_mul(31) | 1;
    }
    let damaged = dir.join("damaged.mp4");
    std::fs::write(&damaged, &noisy).unwrap();
    if let Ok(mut src) = video::open(&VideoSource::File(damaged), OpenOptions::default()) {
        while let Ok(Some(_)) = src.next_frame() {}
    }

    // Another codec with the built-in reader: named.
    let e = open_error(VideoSource::File(fixture("mpeg4_part2.mp4")), Backend::Builtin);
    assert!(e.contains("mp4v") && e.contains("H.264"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Source arguments: camera numbers, stream URLs, video files by extension.
#[test]
fn source_arguments() {
    assert_eq!(VideoSource::parse("0"), Some(VideoSource::Webcam(0)));
    assert_eq!(VideoSource::parse("rtsp://cam/stream"), Some(VideoSource::Stream("rtsp://cam/stream".into())));
    assert_eq!(VideoSource::parse("HTTPS://x/y.m3u8"), Some(VideoSource::Stream("HTTPS://x/y.m3u8".into())));
    assert_eq!(VideoSource::parse("a/clip.MP4"), Some(VideoSource::File("a/clip.MP4".into())));
    assert_eq!(VideoSource::parse("a/photo.jpg"), None);
    assert_eq!(VideoSource::Webcam(2).stem(), "webcam2");
}

/// FFmpeg, when installed, reads what the built-in reader cannot. CI installs it and sets
/// `RTMDET_REQUIRE_FFMPEG=1`, so there these checks cannot be skipped.
fn ffmpeg_or_skip() -> bool {
    if video::ffmpeg::available() {
        return true;
    }
    assert!(
        std::env::var_os("RTMDET_REQUIRE_FFMPEG").is_none(),
        "RTMDET_REQUIRE_FFMPEG is set but ffmpeg does not run"
    );
    eprintln!("ffmpeg is not installed: the FFmpeg reader is not tested here");
    false
}

/// Through FFmpeg: the same pictures as the built-in reader (within the colour conversion's
/// rounding) and another codec the built-in reader refuses; a missing camera is named.
#[test]
fn ffmpeg_reader() {
    if !ffmpeg_or_skip() {
        return;
    }
    let source = VideoSource::File(fixture("walk.mp4"));
    let ours = frames(&source, OpenOptions::default());
    let theirs = frames(&source, OpenOptions { backend: Backend::Ffmpeg, stride: 2 });
    assert_eq!(theirs.len(), 15);
    for f in &theirs {
        assert_eq!(f.index % 2, 0);
        assert!((f.time_s - ours[f.index].time_s).abs() < 1e-9);
        assert_conversion_close(&ours[f.index].image, &f.image, &format!("frame {}", f.index));
    }
    let other = frames(&VideoSource::File(fixture("mpeg4_part2.mp4")), OpenOptions::default());
    assert_eq!((other.len(), other[0].image.width, other[0].image.height), (10, 96, 64));
    let e = open_error(VideoSource::Webcam(97), Backend::Auto);
    assert!(e.contains("no webcam 97"), "{e}");
    // What our writer writes, FFmpeg plays: every frame, at its rate.
    let dir = tmp_dir("ffmpeg-plays");
    let path = dir.join("ours.mp4");
    let mut w = VideoWriter::create(&path, 480, 360, 15.0, false).unwrap();
    for f in &ours {
        w.write(&f.image).unwrap();
    }
    w.finish().unwrap();
    let played = frames(&VideoSource::File(path.clone()), OpenOptions { backend: Backend::Ffmpeg, stride: 1 });
    assert_eq!(played.len(), ours.len());
    let info = video::open(&VideoSource::File(path), OpenOptions { backend: Backend::Ffmpeg, stride: 1 })
        .unwrap()
        .info()
        .clone();
    assert!((info.fps - 15.0).abs() < 1e-6 && info.codec == "h264", "{info:?}");
    for (a, b) in played.iter().zip(&ours) {
        assert!(psnr(&a.image, &b.image) > 35.0, "frame {}", a.index);
    }
    let _ = std::fs::remove_dir_all(dir);
}
