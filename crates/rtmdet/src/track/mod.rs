//! Multi-object tracking by detection: ByteTrack (Zhang et al. 2022), as Ultralytics runs it
//! (`BYTETracker.update`), over the detections of each frame.
//!
//! Per frame: tracks are predicted one frame ahead ([`kalman`]); the high-score detections
//! are matched to tracked and lost tracks by IoU distance fused with the score; the
//! low-score detections then rescue the tracks still unmatched (the "byte" step); unconfirmed
//! tracks (seen once) must match again or are dropped; unmatched high-score detections start
//! tracks; tracks lost for longer than the buffer are removed. Matching is the minimum-cost
//! assignment with a cost limit ([`assignment`]).

pub mod assignment;
pub mod kalman;

use serde::{Deserialize, Serialize};

use crate::structures::Instances;
use crate::structures::boxes::{Bbox, OverlapMode, overlap};
use assignment::linear_assignment;
use kalman::{Cov, Mean, Xyah};

/// ByteTrack's thresholds (Ultralytics `bytetrack.yaml` defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackerConfig {
    /// Detections at or above this take part in the first association.
    pub track_high_thresh: f32,
    /// Detections above this (and below the high threshold) take part in the second.
    pub track_low_thresh: f32,
    /// An unmatched detection starts a track from this score on.
    pub new_track_thresh: f32,
    /// Frames a lost track is kept (at 30 frames/s; scaled by the frame rate).
    pub track_buffer: usize,
    /// Cost limit of the first association (1 − IoU, fused with the score).
    pub match_thresh: f32,
    /// Multiply IoU by the detection score in the first association.
    pub fuse_score: bool,
    pub frame_rate: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            track_high_thresh: 0.25,
            track_low_thresh: 0.1,
            new_track_thresh: 0.25,
            track_buffer: 30,
            match_thresh: 0.8,
            fuse_score: true,
            frame_rate: 30.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Tracked,
    Lost,
}

/// One track (`STrack`).
#[derive(Clone, Debug)]
struct Track {
    id: usize,
    mean: Mean,
    cov: Cov,
    state: State,
    activated: bool,
    score: f32,
    label: usize,
    start_frame: usize,
    /// The last frame it was matched in.
    frame: usize,
}

impl Track {
    fn bbox(&self) -> Bbox {
        let (w, h) = (self.mean[2] * self.mean[3], self.mean[3]);
        let (x, y) = (self.mean[0] - w / 2.0, self.mean[1] - h / 2.0);
        [x as f32, y as f32, (x + w) as f32, (y + h) as f32]
    }
}

/// A detection of the current frame.
#[derive(Clone, Copy, Debug)]
struct Det {
    bbox: Bbox,
    score: f32,
    label: usize,
}

fn xyah(b: &Bbox) -> Xyah {
    let (w, h) = ((b[2] - b[0]) as f64, (b[3] - b[1]) as f64);
    [b[0] as f64 + w / 2.0, b[1] as f64 + h / 2.0, w / h, h]
}

/// A tracked object of one frame: the track's id and its current box.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TrackedObject {
    pub id: usize,
    /// The Kalman estimate after this frame's update.
    pub bbox: Bbox,
    pub score: f32,
    pub label: usize,
}

/// ByteTrack over a sequence of frames.
pub struct ByteTracker {
    cfg: TrackerConfig,
    tracked: Vec<Track>,
    lost: Vec<Track>,
    frame: usize,
    next_id: usize,
    max_time_lost: usize,
}

impl ByteTracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        let max_time_lost = (cfg.frame_rate / 30.0 * cfg.track_buffer as f32) as usize;
        ByteTracker { cfg, tracked: Vec::new(), lost: Vec::new(), frame: 0, next_id: 1, max_time_lost }
    }

    /// Feeds one frame's detections; returns the tracks confirmed on this frame.
    pub fn update(&mut self, dets: &Instances) -> Vec<TrackedObject> {
        self.frame += 1;
        let c = self.cfg;
        let all: Vec<Det> = dets.iter().map(|d| Det { bbox: d.bbox, score: d.score, label: d.label }).collect();
        let high: Vec<Det> = all.iter().copied().filter(|d| d.score >= c.track_high_thresh).collect();
        let low: Vec<Det> =
            all.iter().copied().filter(|d| d.score > c.track_low_thresh && d.score < c.track_high_thresh).collect();

        let (confirmed, unconfirmed): (Vec<Track>, Vec<Track>) =
            std::mem::take(&mut self.tracked).into_iter().partition(|t| t.activated);
        let mut pool: Vec<Track> = confirmed.into_iter().chain(std::mem::take(&mut self.lost)).collect();
        for t in &mut pool {
            if t.state != State::Tracked {
                t.mean[7] = 0.0;
            }
            (t.mean, t.cov) = kalman::predict(&t.mean, &t.cov);
        }

        // First association: high-score detections against tracked and lost tracks.
        let first = self.associate(&pool, &high, c.match_thresh, c.fuse_score);
        let mut out_tracks: Vec<Track> = Vec::new();
        self.take_matches(&pool, &high, &first.matches, &mut out_tracks);
        // Second: low-score detections rescue the still-tracked ones; lost ones wait.
        let (remaining, mut lost): (Vec<Track>, Vec<Track>) =
            first.unmatched_rows.iter().map(|&i| pool[i].clone()).partition(|t| t.state == State::Tracked);
        let second = self.associate(&remaining, &low, 0.5, false);
        self.take_matches(&remaining, &low, &second.matches, &mut out_tracks);
        for &i in &second.unmatched_rows {
            let mut t = remaining[i].clone();
            t.state = State::Lost;
            lost.push(t);
        }
        // Unconfirmed tracks (started last frame) need a match now, or are dropped.
        let rest: Vec<Det> = first.unmatched_cols.iter().map(|&i| high[i]).collect();
        let third = self.associate(&unconfirmed, &rest, 0.7, c.fuse_score);
        self.take_matches(&unconfirmed, &rest, &third.matches, &mut out_tracks);
        // New tracks from confident unmatched detections.
        for &di in &third.unmatched_cols {
            let d = rest[di];
            if d.score < c.new_track_thresh {
                continue;
            }
            let (mean, cov) = kalman::initiate(xyah(&d.bbox));
            out_tracks.push(Track {
                id: self.next_id,
                mean,
                cov,
                state: State::Tracked,
                activated: self.frame == 1,
                score: d.score,
                label: d.label,
                start_frame: self.frame,
                frame: self.frame,
            });
            self.next_id += 1;
        }
        // Lost tracks expire after the buffer.
        lost.retain(|t| self.frame - t.frame <= self.max_time_lost);
        let (tracked, lost) = remove_duplicates(out_tracks, lost);
        self.tracked = tracked;
        self.lost = lost;
        self.tracked
            .iter()
            .filter(|t| t.activated)
            .map(|t| TrackedObject { id: t.id, bbox: t.bbox(), score: t.score, label: t.label })
            .collect()
    }

    /// Tracks × detections by IoU distance (fused with the score on request), matched under
    /// `thresh`.
    fn associate(&self, tracks: &[Track], dets: &[Det], thresh: f32, fuse: bool) -> assignment::Assignment {
        let mut cost = Vec::with_capacity(tracks.len() * dets.len());
        for t in tracks {
            let tb = t.bbox();
            for d in dets {
                let iou = overlap(&tb, &d.bbox, OverlapMode::Iou, None) as f64;
                let sim = if fuse { iou * d.score as f64 } else { iou };
                cost.push(1.0 - sim);
            }
        }
        linear_assignment(&cost, tracks.len(), dets.len(), thresh as f64)
    }

    /// Each matched `(track, detection)` pair's track, corrected, into `out`.
    fn take_matches(&self, tracks: &[Track], dets: &[Det], matches: &[(usize, usize)], out: &mut Vec<Track>) {
        for &(ti, di) in matches {
            let mut t = tracks[ti].clone();
            self.correct(&mut t, &dets[di]);
            out.push(t);
        }
    }

    /// The track corrected by its matched detection (`update` / `re_activate`).
    fn correct(&self, t: &mut Track, d: &Det) {
        (t.mean, t.cov) = kalman::update(&t.mean, &t.cov, xyah(&d.bbox));
        t.state = State::Tracked;
        t.activated = true;
        t.score = d.score;
        t.label = d.label;
        t.frame = self.frame;
    }
}

/// ByteTrack's `remove_duplicate_stracks`: a tracked and a lost track closer than IoU
/// distance 0.15 are one object; the one followed for longer (first to last match) stays.
fn remove_duplicates(tracked: Vec<Track>, lost: Vec<Track>) -> (Vec<Track>, Vec<Track>) {
    let (mut drop_a, mut drop_b) = (vec![false; tracked.len()], vec![false; lost.len()]);
    for (i, a) in tracked.iter().enumerate() {
        for (j, b) in lost.iter().enumerate() {
            if 1.0 - overlap(&a.bbox(), &b.bbox(), OverlapMode::Iou, None) < 0.15 {
                let (age_a, age_b) = (a.frame - a.start_frame, b.frame - b.start_frame);
                if age_a > age_b {
                    drop_b[j] = true;
                } else {
                    drop_a[i] = true;
                }
            }
        }
    }
    let keep = |v: Vec<Track>, drop: &[bool]| v.into_iter().zip(drop).filter(|(_, d)| !**d).map(|(t, _)| t).collect();
    (keep(tracked, &drop_a), keep(lost, &drop_b))
}
