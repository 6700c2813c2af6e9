//! The built-in reader: the H.264 track of an MP4/MOV file, demuxed by the `mp4` crate and
//! decoded by OpenH264. Frames come out in presentation order (B-frames included) with their
//! presentation times from the sample tables.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;

use super::h264::{avcc_to_annexb, push_annexb};
use super::yuv::Yuv420;
use super::{Frame, FrameSource, VideoInfo, VideoSource, video_error};
use crate::error::Result;

/// Consecutive undecodable samples before the reader gives up: a damaged frame or two is
/// skipped (and counted), a file that is damaged throughout is an error.
const MAX_CONSECUTIVE_ERRORS: usize = 30;

pub struct Mp4H264Reader {
    source: VideoSource,
    mp4: mp4::Mp4Reader<BufReader<File>>,
    track_id: u32,
    /// Next sample to read (1-based, as the `mp4` crate counts).
    next_sample: u32,
    samples: u32,
    length_size: usize,
    /// SPS and PPS in Annex B, sent before the first sample.
    parameter_sets: Vec<u8>,
    decoder: Decoder,
    /// Presentation times in seconds, sorted (the k-th decoded picture has the k-th).
    times: Vec<f64>,
    /// Pictures decoded (also those a stride skips).
    decoded: usize,
    stride: usize,
    /// Decoded pictures the stride keeps: (index, presentation time, planes).
    ready: VecDeque<(usize, f64, Yuv420)>,
    flushed: bool,
    damaged: usize,
    consecutive_errors: usize,
    info: VideoInfo,
    packet: Vec<u8>,
}

impl Mp4H264Reader {
    /// Opens `path`. `Ok(Err(codec))` when the file is a readable MP4 whose video is not H.264.
    pub fn open(path: &Path, stride: usize) -> Result<std::result::Result<Self, String>> {
        let source = VideoSource::File(path.to_path_buf());
        let file = File::open(path).map_err(|e| video_error(&source, e))?;
        let size = file.metadata().map_err(|e| video_error(&source, e))?.len();
        let mp4 = mp4::Mp4Reader::read_header(BufReader::new(file), size).map_err(|e| {
            video_error(&source, format!("not a readable MP4 file ({e}); it may be truncated or damaged"))
        })?;
        let video = mp4.tracks().values().filter(|t| t.track_type().is_ok_and(|k| k == mp4::TrackType::Video));
        let Some(track) = video.clone().find(|t| t.media_type().is_ok_and(|m| m == mp4::MediaType::H264)) else {
            if video.count() == 0 {
                return Err(video_error(&source, "the file has no video track"));
            }
            let codec = video_sample_entry(path).unwrap_or_else(|| "an unknown codec".into());
            return Ok(Err(codec));
        };
        let stsd = &track.trak.mdia.minf.stbl.stsd;
        let avcc = &stsd.avc1.as_ref().expect("an H.264 track has avc1").avcc;
        let mut parameter_sets = Vec::new();
        for nal in avcc.sequence_parameter_sets.iter().chain(&avcc.picture_parameter_sets) {
            push_annexb(&nal.bytes, &mut parameter_sets);
        }
        let times = presentation_times(track);
        let samples = track.sample_count();
        let fps = if times.len() > 1 {
            (times.len() - 1) as f64 / (times[times.len() - 1] - times[0]).max(1e-9)
        } else {
            track.frame_rate()
        };
        let info = VideoInfo {
            width: usize::from(track.width()),
            height: usize::from(track.height()),
            fps: if fps.is_finite() && fps > 0.0 { fps } else { 30.0 },
            frames: Some(samples as usize),
            codec: "h264".into(),
            backend: "builtin",
        };
        if info.width == 0 || info.height == 0 {
            return Err(video_error(&source, "the video track has no picture size"));
        }
        // NoFlush: the decoder holds pictures back until their presentation turn (B-frames).
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(openh264::OpenH264API::from_source(), config)
            .map_err(|e| video_error(&source, format!("cannot start the H.264 decoder: {e}")))?;
        Ok(Ok(Mp4H264Reader {
            track_id: track.track_id(),
            next_sample: 1,
            samples,
            length_size: usize::from(avcc.length_size_minus_one & 3) + 1,
            parameter_sets,
            decoder,
            times,
            decoded: 0,
            stride,
            ready: VecDeque::new(),
            flushed: false,
            damaged: 0,
            consecutive_errors: 0,
            info,
            packet: Vec::new(),
            source,
            mp4,
        }))
    }

    /// Queues a decoded picture (converted only when the stride keeps it).
    fn push(&mut self, yuv: Option<Yuv420>) {
        let index = self.decoded;
        self.decoded += 1;
        if let Some(yuv) = yuv {
            let t0 = self.times.first().copied().unwrap_or(0.0);
            let time_s = self.times.get(index).map_or(index as f64 / self.info.fps, |t| t - t0);
            self.ready.push_back((index, time_s, yuv));
        }
    }

    fn keeps(&self, index: usize) -> bool {
        index.is_multiple_of(self.stride)
    }

    /// Decodes the next sample; false when there is none left.
    fn decode_next(&mut self) -> Result<bool> {
        if self.next_sample > self.samples {
            if !self.flushed {
                self.flushed = true;
                let keep: Vec<Option<Yuv420>> = {
                    let (stride, first) = (self.stride, self.decoded);
                    let rest = self.decoder.flush_remaining().unwrap_or_default();
                    rest.iter().enumerate().map(|(k, p)| (first + k).is_multiple_of(stride).then(|| copy(p))).collect()
                };
                for yuv in keep {
                    self.push(yuv);
                }
                return Ok(true);
            }
            return Ok(false);
        }
        let sample = self.mp4.read_sample(self.track_id, self.next_sample).map_err(|e| {
            video_error(
                &self.source,
                format!("cannot read sample {} ({e}); the file may be truncated", self.next_sample),
            )
        })?;
        self.next_sample += 1;
        let Some(sample) = sample else { return Ok(true) };
        self.packet.clear();
        if self.next_sample == 2 {
            self.packet.extend_from_slice(&self.parameter_sets);
        }
        if let Err(why) = avcc_to_annexb(&sample.bytes, self.length_size, &mut self.packet) {
            return self.count_damaged(why);
        }
        let keep = self.keeps(self.decoded);
        let picture = match self.decoder.decode(&self.packet) {
            Ok(p) => p.map(|p| keep.then(|| copy(&p))),
            Err(e) => return self.count_damaged(e.to_string()),
        };
        self.consecutive_errors = 0;
        if let Some(yuv) = picture {
            self.push(yuv);
        }
        Ok(true)
    }

    fn count_damaged(&mut self, why: String) -> Result<bool> {
        self.damaged += 1;
        self.consecutive_errors += 1;
        if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
            return Err(video_error(
                &self.source,
                format!(
                    "{MAX_CONSECUTIVE_ERRORS} samples in a row cannot be decoded ({why}); the H.264 data is damaged"
                ),
            ));
        }
        Ok(true)
    }
}

fn copy(p: &DecodedYUV<'_>) -> Yuv420 {
    Yuv420::from_planes(p.dimensions(), (p.y(), p.u(), p.v()), p.strides())
}

/// The four-character code of the first video track's sample entry (`hvc1`, `mp4v`, `av01`,
/// ...), read from the file's boxes (the `mp4` crate keeps only the codecs it knows). Top-level
/// boxes are skipped by seeking, so only `moov` is read.
fn video_sample_entry(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let mut header = [0u8; 8];
    let moov = loop {
        f.read_exact(&mut header).ok()?;
        let (size, kind) = (u64::from(u32::from_be_bytes(header[..4].try_into().ok()?)), &header[4..]);
        let (size, skip) = match size {
            1 => {
                let mut large = [0u8; 8];
                f.read_exact(&mut large).ok()?;
                (u64::from_be_bytes(large), 16)
            }
            0 => return None,
            s => (s, 8),
        };
        let body = size.checked_sub(skip)?;
        if kind == b"moov" {
            let mut moov = vec![0u8; usize::try_from(body).ok().filter(|&n| n < 1 << 30)?];
            f.read_exact(&mut moov).ok()?;
            break moov;
        }
        f.seek(SeekFrom::Current(i64::try_from(body).ok()?)).ok()?;
    };
    let tracks = children(&moov).into_iter().filter(|(k, _)| k == b"trak");
    tracks.filter_map(|(_, trak)| child(trak, b"mdia")).find_map(|mdia| {
        let hdlr = child(mdia, b"hdlr")?;
        // hdlr: version/flags (4), pre_defined (4), handler type (4).
        if hdlr.get(8..12)? != b"vide" {
            return None;
        }
        let stsd = [b"minf", b"stbl", b"stsd"].iter().try_fold(mdia, |b, k| child(b, k))?;
        // stsd: version/flags (4), entry count (4), then the first entry's size (4) and type (4).
        Some(String::from_utf8_lossy(stsd.get(12..16)?).into_owned())
    })
}

/// The (type, body) of the boxes in `data`; stops at the first malformed size.
fn children(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 8 {
        let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if size < 8 || size > rest.len() {
            break;
        }
        out.push(([rest[4], rest[5], rest[6], rest[7]], &rest[8..size]));
        rest = &rest[size..];
    }
    out
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(data).into_iter().find(|(k, _)| k == kind).map(|(_, body)| body)
}

/// Presentation times of a track's samples in seconds, sorted: decode times from `stts`
/// plus composition offsets from `ctts`.
fn presentation_times(track: &mp4::Mp4Track) -> Vec<f64> {
    let stbl = &track.trak.mdia.minf.stbl;
    let scale = f64::from(track.timescale().max(1));
    let mut dts = Vec::new();
    let mut t: i64 = 0;
    for e in &stbl.stts.entries {
        for _ in 0..e.sample_count {
            dts.push(t);
            t += i64::from(e.sample_delta);
        }
    }
    if let Some(ctts) = &stbl.ctts {
        let offsets =
            ctts.entries.iter().flat_map(|e| std::iter::repeat_n(i64::from(e.sample_offset), e.sample_count as usize));
        for (d, o) in dts.iter_mut().zip(offsets) {
            *d += o;
        }
    }
    let mut times: Vec<f64> = dts.into_iter().map(|d| d as f64 / scale).collect();
    times.sort_by(f64::total_cmp);
    times
}

impl Mp4H264Reader {
    /// The next picture the stride keeps, as decoded planes: (index, time in seconds, planes).
    pub fn next_yuv(&mut self) -> Result<Option<(usize, f64, Yuv420)>> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Ok(Some(p));
            }
            if !self.decode_next()? {
                return Ok(None);
            }
        }
    }
}

impl FrameSource for Mp4H264Reader {
    fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        Ok(self.next_yuv()?.map(|(index, time_s, yuv)| Frame { index, time_s, image: yuv.to_bgr() }))
    }

    fn damaged(&self) -> usize {
        self.damaged
    }
}
