//! The box coders against the original: RTMDet-R's distance-angle decoder on the raw head
//! outputs of the rotated reference (mmrotate 1.0.0rc1) reproduces its pre-NMS candidates.

use crate::common::*;
use rtmdet::coders::distance_angle;

/// Every (prior, class) with score > 0.05, the best 2000 per level, decoded: the candidates of
/// mmrotate's `_predict_by_feat_single` before the size filter, as `(box, score, label)`.
fn candidates(npz: &mut Npz) -> Vec<([f32; 5], f32, usize)> {
    let mut out = Vec::new();
    for (level, stride) in [8usize, 16, 32].into_iter().enumerate() {
        let (shape, cls) = npz.f32(&format!("cls_l{level}"));
        let reg = npz.f32(&format!("reg_l{level}")).1;
        let angle = npz.f32(&format!("angle_l{level}")).1;
        let (classes, h, w) = (shape[1], shape[2], shape[3]);
        let hw = h * w;
        let mut level_cands: Vec<(f32, usize, usize)> = Vec::new();
        for p in 0..hw {
            for c in 0..classes {
                let s = 1.0 / (1.0 + (-cls[c * hw + p]).exp());
                if s > 0.05 {
                    level_cands.push((s, p, c));
                }
            }
        }
        level_cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        level_cands.truncate(2000);
        for (s, p, c) in level_cands {
            let point = [(p % w * stride) as f32, (p / w * stride) as f32];
            let d = [reg[p], reg[hw + p], reg[2 * hw + p], reg[3 * hw + p]];
            out.push((distance_angle::decode(point, d, angle[p]), s, c));
        }
    }
    out
}

/// Same count; every reference candidate has a partner of the same class with the same
/// score (1e-6: our sigmoid and PyTorch's vectorised one differ in the last bit) and the same
/// box. w, h and the wrapped angle are bit-exact (measured 0); centres differ by at most one
/// float32 ulp of the coordinate (measured 6.1e-5 px = 2⁻¹⁴, the ulp between 512 and 1024):
/// `sin`/`cos` of the raw angle (Rust's libm vs PyTorch's vectorised code) and the order of the
/// 2×2 product's rounding differ in the last bit. The bound 1e-4 px sits just above that ulp.
#[test]
fn distance_angle_decoder_reproduces_the_rotated_candidates() {
    for image in ["aerial_demo", "dota_demo"] {
        let mut npz = Npz::open(reference(&format!("rotated/infer/rotated_rtmdet_tiny_ref_seed1__{image}.npz")));
        let ours = candidates(&mut npz);
        let (_, boxes) = npz.f32("pre_bboxes");
        let (_, scores) = npz.f32("pre_scores");
        let labels = npz.i64("pre_labels");
        assert_eq!(ours.len(), scores.len(), "{image}: number of candidates");
        let mut used = vec![false; ours.len()];
        let (mut worst_centre, mut worst_rest) = (0f32, 0f32);
        for i in 0..scores.len() {
            let rb: [f32; 5] = boxes[5 * i..5 * i + 5].try_into().unwrap();
            let partner = (0..ours.len())
                .filter(|&k| !used[k] && ours[k].2 == labels[i] as usize && (ours[k].1 - scores[i]).abs() <= 1e-6)
                .min_by(|&a, &b| {
                    let d = |k: usize| ours[k].0.iter().zip(&rb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                    d(a).total_cmp(&d(b))
                })
                .unwrap_or_else(|| panic!("{image}: no candidate for reference row {i}: {rb:?} {}", scores[i]));
            used[partner] = true;
            let b = ours[partner].0;
            worst_centre = worst_centre.max((b[0] - rb[0]).abs().max((b[1] - rb[1]).abs()));
            worst_rest = worst_rest.max((2..5).map(|j| (b[j] - rb[j]).abs()).fold(0f32, f32::max));
        }
        println!(
            "{image}: {} candidates, worst centre {worst_centre:.2e} px, worst w/h/angle {worst_rest:.2e}",
            ours.len()
        );
        assert!(worst_centre <= 1e-4, "{image}: centres differ by {worst_centre}");
        assert!(worst_rest <= 1e-4, "{image}: w, h or angle differ by {worst_rest}");
    }
}
