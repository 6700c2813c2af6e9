//! DynamicSoftLabelAssigner against the 20 standalone cases and the two training images of
//! the reference: exact indices, labels and IoUs.

use crate::common::*;
use rtmdet::assign::DynamicSoftLabelAssigner;

fn boxes(v: &[f32]) -> Vec<[f32; 4]> {
    v.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

fn check(npz: &mut Npz, prefix: &str, out_prefix: &str, name: &str) {
    let priors = boxes(&npz.f32(&format!("{prefix}priors")).1);
    let key = if prefix.is_empty() { "pred_logits".to_string() } else { format!("{prefix}scores") };
    let logits = npz.f32(&key).1;
    let pred = boxes(&npz.f32(&format!("{prefix}{}", if prefix.is_empty() { "pred_bboxes" } else { "bboxes" })).1);
    let gt = boxes(&npz.f32(&format!("{prefix}gt_bboxes")).1);
    let labels: Vec<usize> = npz.i64(&format!("{prefix}gt_labels")).iter().map(|&l| l as usize).collect();
    let r = DynamicSoftLabelAssigner::default().assign(&priors, &logits, &pred, &gt, &labels);
    assert_eq!(r.gt_inds, npz.i64(&format!("{out_prefix}gt_inds")), "{name}: gt_inds");
    assert_eq!(r.labels, npz.i64(&format!("{out_prefix}labels")), "{name}: labels");
    let ov = npz.f32(&format!("{out_prefix}max_overlaps")).1;
    assert_eq!(max_abs_diff(&r.max_overlaps, &ov), 0.0, "{name}: max_overlaps");
}

#[test]
fn standalone_cases_are_exact() {
    for i in 0..20 {
        let name = format!("assign_{i:02}");
        let mut npz = Npz::open(reference(&format!("standalone/{name}.npz")));
        check(&mut npz, "", "", &name);
    }
}

#[test]
fn training_images_are_exact() {
    let mut npz = Npz::open(reference("train/tiny_seed1_batch2.npz"));
    for b in 0..2 {
        check(&mut npz, &format!("assign{b}_"), &format!("assign{b}_"), &format!("image {b}"));
    }
}
