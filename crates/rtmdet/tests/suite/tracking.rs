//! ByteTrack (`track/`): the Kalman filter's numbers against ByteTrack's own numpy/scipy
//! formulas (`tools/kalman_reference.py`), and id stability on synthetic sequences — crossing
//! objects, an occlusion, a low-score stretch rescued by the second association, an object
//! that leaves and one that arrives — with seeded detection noise and dropouts.

use rtmdet::structures::Instances;
use rtmdet::structures::boxes::{OverlapMode, overlap};
use rtmdet::track::kalman;
use rtmdet::track::{ByteTracker, TrackerConfig};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn kalman_filter_equals_bytetracks_numbers() {
    let (mut m, mut p) = kalman::initiate([100.0, 50.0, 0.5, 80.0]);
    for z in [[104.0, 52.0, 0.52, 82.0], [109.0, 55.0, 0.51, 83.0]] {
        (m, p) = kalman::predict(&m, &p);
        (m, p) = kalman::update(&m, &p, z);
    }
    let mean = [
        107.9301126907082,
        54.351298555877555,
        0.5006684449291173,
        82.80632971378374,
        2.3097682466362928,
        1.3126011337249932,
        4.741953630843481e-10,
        0.6817330920976069,
    ];
    for (i, (&a, &b)) in m.iter().zip(&mean).enumerate() {
        assert!(close(a, b), "mean[{i}]: {a} vs {b}");
    }
    let row0 = [13.032621020311218, 0.0, 0.0, 0.0, 5.321702209355205, 0.0, 0.0, 0.0];
    let row4 = [5.321702209355205, 0.0, 0.0, 0.0, 12.96751735058312, 0.0, 0.0, 0.0];
    for j in 0..8 {
        assert!(close(p[0][j], row0[j]) && close(p[4][j], row4[j]), "cov column {j}");
    }
    assert!(close(p[3][3], 13.032621020311218) && close(p[7][7], 12.96751735058312));
    assert!((p[2][6] - 2.8946865691025166e-10).abs() < 1e-20);
}

/// A seeded generator of small noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// One object of a synthetic sequence: a box moving at constant velocity, seen with a score
/// on the frames `visible` says.
struct Object {
    start: [f32; 2],
    velocity: [f32; 2],
    size: [f32; 2],
    score: fn(usize) -> Option<f32>,
}

fn frames(objects: &[Object], n: usize, seed: u64) -> Vec<(Instances, Vec<Option<usize>>)> {
    let mut noise = Noise(seed);
    (0..n)
        .map(|f| {
            let mut set = Instances::default();
            let mut which = Vec::new();
            for (k, o) in objects.iter().enumerate() {
                if let Some(score) = (o.score)(f) {
                    let (cx, cy) = (o.start[0] + o.velocity[0] * f as f32, o.start[1] + o.velocity[1] * f as f32);
                    let (w, h) = (o.size[0] + noise.next(), o.size[1] + noise.next());
                    let (cx, cy) = (cx + noise.next(), cy + noise.next());
                    set.push(rtmdet::Detection {
                        bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                        score,
                        label: 0,
                    });
                    which.push(Some(k));
                }
            }
            (set, which)
        })
        .collect()
}

/// Runs the tracker and returns, per object, the ids it was reported with (in frame order),
/// matching reported tracks to objects by their boxes.
fn ids_per_object(objects: &[Object], n: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut tracker = ByteTracker::new(TrackerConfig::default());
    let mut ids = vec![Vec::new(); objects.len()];
    // A new track is reported from its second frame on (ByteTrack confirms it then), except
    // on the sequence's first frame.
    let mut seen_before = vec![false; objects.len()];
    for (f, (set, which)) in frames(objects, n, seed).into_iter().enumerate() {
        let out = tracker.update(&set);
        let mut seen_now = vec![false; objects.len()];
        for (d, who) in set.iter().zip(&which) {
            let Some(k) = *who else { continue };
            seen_now[k] = true;
            let iou = |b: &[f32; 4]| overlap(b, &d.bbox, OverlapMode::Iou, None);
            let best = out.iter().filter(|t| iou(&t.bbox) > 0.5).max_by(|a, b| iou(&a.bbox).total_cmp(&iou(&b.bbox)));
            match best {
                Some(t) => ids[k].push(t.id),
                None => assert!(f > 0 && !seen_before[k], "frame {f}: object {k} is not reported"),
            }
        }
        seen_before = seen_now;
    }
    ids
}

fn one_id(ids: &[usize]) -> usize {
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|&i| i == ids[0]), "the id changed: {ids:?}");
    ids[0]
}

#[test]
fn crossing_objects_keep_their_ids() {
    let objects = [
        Object { start: [100.0, 200.0], velocity: [8.0, 0.0], size: [40.0, 90.0], score: |_| Some(0.9) },
        Object { start: [400.0, 210.0], velocity: [-8.0, 0.0], size: [42.0, 95.0], score: |_| Some(0.85) },
    ];
    for seed in 1..=5 {
        let ids = ids_per_object(&objects, 40, seed);
        let (a, b) = (one_id(&ids[0]), one_id(&ids[1]));
        assert_ne!(a, b, "seed {seed}");
    }
}

#[test]
fn an_occluded_object_comes_back_with_its_id() {
    // Missing for 10 frames (within the 30-frame buffer), then seen again.
    let objects = [Object {
        start: [100.0, 100.0],
        velocity: [5.0, 2.0],
        size: [50.0, 100.0],
        score: |f| (!(15..25).contains(&f)).then_some(0.8),
    }];
    for seed in 1..=5 {
        one_id(&ids_per_object(&objects, 50, seed)[0]);
    }
}

#[test]
fn low_scores_are_rescued_by_the_second_association() {
    // Scores of 0.15 (below the high threshold, above the low one) for 8 frames.
    let objects = [Object {
        start: [300.0, 300.0],
        velocity: [-3.0, 4.0],
        size: [60.0, 60.0],
        score: |f| Some(if (10..18).contains(&f) { 0.15 } else { 0.7 }),
    }];
    let mut tracker = ByteTracker::new(TrackerConfig::default());
    let mut seen = Vec::new();
    for (set, _) in frames(&objects, 30, 7) {
        let out = tracker.update(&set);
        assert!(out.len() <= 1);
        seen.extend(out.iter().map(|t| t.id));
    }
    // Reported on every frame from the second on (the first activates it), one id throughout.
    assert_eq!(seen.len(), 30);
    one_id(&seen);
}

#[test]
fn a_track_lost_beyond_the_buffer_gets_a_new_id() {
    // Leaves after frame 10 and reappears at frame 60 (50 frames > 30): a new object.
    let objects = [Object {
        start: [100.0, 100.0],
        velocity: [0.0, 0.0],
        size: [50.0, 100.0],
        score: |f| (!(10..60).contains(&f)).then_some(0.9),
    }];
    let ids = &ids_per_object(&objects, 70, 3)[0];
    let (before, after) = (ids[0], *ids.last().unwrap());
    assert_ne!(before, after, "{ids:?}");
    assert!(ids.iter().take_while(|&&i| i == before).count() >= 10);
}

#[test]
fn a_single_low_score_detection_starts_no_track() {
    let mut tracker = ByteTracker::new(TrackerConfig::default());
    let mut set = Instances::default();
    set.push(rtmdet::Detection { bbox: [0.0, 0.0, 10.0, 10.0], score: 0.2, label: 0 });
    for _ in 0..5 {
        assert!(tracker.update(&set).is_empty());
    }
}
