//! One training step of RTMDet-Ins-tiny (seed 1) on two coco8 images with synthetic octagon
//! masks against the original (`train/ins_tiny_seed1_batch2*.npz`): train-mode head outputs
//! and prototypes, assignment, the stride-8 and stride-4 mask logits of the positives, the
//! mask targets, per-positive dice, every loss term and the gradients of named parameters —
//! at the detection train step's tolerances.

use crate::common::*;
use burn::tensor::{Device, Tensor, TensorData};
use rtmdet::Instances;
use rtmdet::assign::DynamicSoftLabelAssigner;
use rtmdet::loss::ins::{MaskLossOptions, ins_loss_with};
use rtmdet::model::{LevelTensors, RtmDet};
use rtmdet::structures::mask::{Bitmap, encode};
use rtmdet::weights::{ReadOptions, load_into, to_vec};

#[test]
fn ins_training_step_matches_the_original() {
    let device = Device::default().autodiff();
    let (cfg, map) =
        rtmdet::weights::read(&reference("checkpoints/rtmdet_ins_tiny_ref_seed1.pth"), &ReadOptions::default())
            .unwrap();
    let mut model = RtmDet::new(&cfg, &device).unwrap();
    load_into(&mut model, &map, &device).unwrap();

    let mut npz = Npz::open(reference("train/ins_tiny_seed1_batch2.npz"));
    let mut head = Npz::open(reference("train/ins_tiny_seed1_batch2_head.npz"));
    let (shape, inputs) = npz.f32("inputs");
    let x = Tensor::<4>::from_data(TensorData::new(inputs, [shape[0], shape[1], shape[2], shape[3]]), &device);
    let (outputs, proto) = model.forward_with_prototypes(x);
    let proto = proto.expect("Ins prototypes");
    for (l, o) in outputs.iter().enumerate() {
        let dc = max_abs_diff(&to_vec(&o.cls), &head.f32(&format!("cls_l{l}")).1);
        let dr = max_abs_diff(&to_vec(&o.reg), &head.f32(&format!("reg_l{l}")).1);
        let dk = max_abs_diff(&to_vec(o.kernel.as_ref().unwrap()), &head.f32(&format!("kernel_l{l}")).1);
        println!("train-mode level {l}: max |cls| {dc:.2e}, |reg| {dr:.2e} px, |kernel| {dk:.2e}");
        assert!(dc <= 2e-3 && dr <= 0.03 && dk <= 2e-3, "level {l}: cls {dc}, reg {dr}, kernel {dk}");
    }
    let dp = max_abs_diff(&to_vec(&proto), &head.f32("proto").1);
    println!("train-mode prototypes: max diff {dp:.2e}");
    assert!(dp <= 2e-3, "prototypes differ by {dp}");

    let targets: Vec<Instances> = (0..2)
        .map(|b| {
            let boxes = npz.f32(&format!("gt_bboxes_{b}")).1.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
            let labels = npz.i64(&format!("gt_labels_{b}")).iter().map(|&l| l as usize).collect();
            let masks = npz.get::<u8>(&format!("gt_masks_{b}"));
            let (n, h, w) = (masks.shape()[0], masks.shape()[1], masks.shape()[2]);
            let flat: Vec<u8> = masks.iter().copied().collect();
            let mut t = Instances::targets(boxes, labels);
            t.masks = (0..n)
                .map(|k| encode(&Bitmap { height: h, width: w, data: flat[k * h * w..(k + 1) * h * w].to_vec() }))
                .collect();
            t
        })
        .collect();
    // The loss on the original's own head outputs first (no network noise in between): the
    // assignment — whose soft centre prior uses each mask's centre of mass — the stride-4
    // logits, the dice of every positive and every term.
    let stored: Vec<LevelTensors> = (0..3)
        .map(|l| {
            let mut t = |name: &str| {
                let (s, v) = head.f32(&format!("{name}_l{l}"));
                Tensor::<4>::from_data(TensorData::new(v, [s[0], s[1], s[2], s[3]]), &device)
            };
            let reg = t("reg");
            LevelTensors {
                cls: t("cls"),
                reg_raw: reg.clone(),
                reg,
                angle: None,
                kernel: Some(t("kernel")),
                stride: 8 << l,
            }
        })
        .collect();
    let (ps, pv) = head.f32("proto");
    let stored_proto = Tensor::<4>::from_data(TensorData::new(pv, [ps[0], ps[1], ps[2], ps[3]]), &device);
    let keep = MaskLossOptions { keep_logits: true, ..Default::default() };
    let loss = ins_loss_with(&stored, stored_proto, &targets, &DynamicSoftLabelAssigner::default(), keep);
    for (b, r) in loss.detection.assignments.iter().enumerate() {
        let theirs = npz.i64(&format!("assign{b}_gt_inds"));
        let differ: Vec<(usize, i64, i64)> =
            (0..theirs.len()).filter(|&i| r.gt_inds[i] != theirs[i]).map(|i| (i, r.gt_inds[i], theirs[i])).collect();
        assert!(differ.is_empty(), "image {b}: assignment differs at (prior, ours, theirs) {differ:?}");
    }
    // Stride-4 logits and dice per positive (images in order, positives by prior index).
    let dl = max_abs_diff(&to_vec(loss.logits_s4.as_ref().unwrap()), &npz.f32("mask_logits_s4").1);
    let dd = max_abs_diff(&to_vec(&loss.dice), &npz.f32("mask_dice_elem").1);
    println!("stride-4 mask logits: max diff {dl:.2e}; dice per positive: max diff {dd:.2e}");
    assert!(dl <= 2e-3, "mask logits differ by {dl}");
    // Weighted dice values are ≈ 2; float32 sums over 25,600 pixels give 3.9e-6.
    assert!(dd <= 1e-5, "dice differs by {dd}");

    let rel = |a: f32, b: f32| (a - b).abs() / b.abs().max(1e-6);
    let det = &loss.detection;
    for l in 0..3 {
        for (name, t) in [("cls", &det.cls[l]), ("bbox", &det.bbox[l])] {
            let (ours, theirs) = (to_vec(t)[0], npz.f32(&format!("loss_{name}_l{l}")).1[0]);
            println!("loss_{name}_l{l}: {ours} vs {theirs} (rel {:.1e})", rel(ours, theirs));
            assert!(rel(ours, theirs) <= 1e-5, "loss_{name}_l{l}: {ours} vs {theirs}");
        }
    }
    for (name, t) in [("loss_mask", &loss.mask), ("loss_total", &loss.total)] {
        let (ours, theirs) = (to_vec(t)[0], npz.f32(name).1[0]);
        println!("{name}: {ours} vs {theirs} (rel {:.1e})", rel(ours, theirs));
        assert!(rel(ours, theirs) <= 1e-5, "{name}: {ours} vs {theirs}");
    }
    assert_eq!(loss.terms().len(), 3);

    // Gradients through our own network (its assignment is the original's too), with the mask
    // term in chunks of 7 positives, so that several chunks per image and their summed
    // gradients are what is compared (training's chunks hold all positives of this small step).
    let chunked = MaskLossOptions { chunk: Some(7), ..Default::default() };
    let loss = ins_loss_with(&outputs, proto, &targets, &DynamicSoftLabelAssigner::default(), chunked);
    let positives = loss.dice.dims()[0];
    assert!(positives > 2 * 7, "{positives} positives: too few for several chunks");
    for (b, r) in loss.detection.assignments.iter().enumerate() {
        assert_eq!(r.gt_inds, npz.i64(&format!("assign{b}_gt_inds")), "image {b}: assignment on our outputs");
    }
    let grads = loss.total.backward();
    let gradients = named_gradients(&mut npz, &mut model, &grads);
    assert!(gradients.len() >= 5, "{} gradients stored", gradients.len());
    for (name, ours, theirs) in &gradients {
        let (ours, theirs) = (ours.as_slice(), theirs.as_slice());
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(ours, theirs);
        println!("grad {name}: max diff {d:.1e} of max {scale:.1e}");
        // As the detection step: PyTorch with and without oneDNN differs by 6.5e-4 of the max.
        // The mask-feature module is reached only through the prototypes, whose forward noise
        // between two PyTorch back-ends (8.1e-5, reference README) is what ours shows (9.6e-5
        // above); its gradients sit at 0.3–1.0e-3 of their max, and moved by about 2e-5 of the max
        // when burn's own kernels changed order (SIMD and threads on): the reference README's
        // suggested gradient bound, 2e-3 of the max, applies there.
        let bound = if name.starts_with("bbox_head.mask_head.") { 2e-3 } else { 1e-3 };
        assert!(d <= bound * scale, "gradient of {name} differs by {d} (max {scale})");
    }
}
