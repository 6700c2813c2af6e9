//! One training step of RTMDet-tiny (seed 1) on two coco8 images against the original:
//! train-mode head outputs, assignment, per-level losses, gradients of named parameters and
//! the BatchNorm running-statistics update.

use crate::common::*;
use burn::tensor::{Device, Tensor, TensorData};
use rtmdet::Instances;
use rtmdet::assign::DynamicSoftLabelAssigner;
use rtmdet::loss::detection::detection_loss;
use rtmdet::model::RtmDet;
use rtmdet::weights::{ReadOptions, collect, load_into, to_vec};

#[test]
fn training_step_matches_the_original() {
    let device = Device::default().autodiff();
    let (cfg, map) =
        rtmdet::weights::read(&reference("checkpoints/rtmdet_tiny_ref_seed1.pth"), &ReadOptions::default()).unwrap();
    let mut model = RtmDet::new(&cfg, &device).unwrap();
    load_into(&mut model, &map, &device).unwrap();

    let mut npz = Npz::open(reference("train/tiny_seed1_batch2.npz"));
    let (shape, inputs) = npz.f32("inputs");
    let x = Tensor::<4>::from_data(TensorData::new(inputs, [shape[0], shape[1], shape[2], shape[3]]), &device);
    let outputs = model.forward(x);
    for (l, o) in outputs.iter().enumerate() {
        let dc = max_abs_diff(&to_vec(&o.cls), &npz.f32(&format!("cls_l{l}")).1);
        let dr = max_abs_diff(&to_vec(&o.reg), &npz.f32(&format!("reg_l{l}")).1);
        println!("train-mode level {l}: max |cls| {dc:.2e}, max |reg| {dr:.2e} px");
        assert!(dc <= 2e-3 && dr <= 0.03, "level {l}: cls {dc}, reg {dr}");
    }

    let targets: Vec<Instances> = (0..2)
        .map(|b| {
            Instances::targets(
                npz.f32(&format!("gt_bboxes_{b}")).1.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect(),
                npz.i64(&format!("gt_labels_{b}")).iter().map(|&l| l as usize).collect(),
            )
        })
        .collect();
    let loss = detection_loss(&outputs, &targets, &DynamicSoftLabelAssigner::default());
    for (b, r) in loss.assignments.iter().enumerate() {
        assert_eq!(r.gt_inds, npz.i64(&format!("assign{b}_gt_inds")), "image {b}: assignment");
    }
    let rel = |a: f32, b: f32| (a - b).abs() / b.abs().max(1e-6);
    for l in 0..3 {
        for (name, t) in [("cls", &loss.cls[l]), ("bbox", &loss.bbox[l])] {
            let ours = to_vec(t)[0];
            let theirs = npz.f32(&format!("loss_{name}_l{l}")).1[0];
            println!("loss_{name}_l{l}: {ours} vs {theirs} (rel {:.1e})", rel(ours, theirs));
            assert!(rel(ours, theirs) <= 1e-5, "loss_{name}_l{l}: {ours} vs {theirs}");
        }
    }
    let total = to_vec(&loss.total)[0];
    let expected = npz.f32("loss_total").1[0];
    println!("loss_total: {total} vs {expected} (rel {:.1e})", rel(total, expected));
    assert!(rel(total, expected) <= 1e-5);

    let grads = loss.total.backward();
    let gradients = named_gradients(&mut npz, &mut model, &grads);
    assert_eq!(gradients.len(), 14);
    for (name, ours, theirs) in &gradients {
        let (ours, theirs) = (ours.as_slice(), theirs.as_slice());
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_abs_diff(ours, theirs);
        println!("grad {name}: max diff {:.1e} of max {scale:.1e}", d);
        // PyTorch with and without oneDNN differs by 6.5e-4 of the max (reference README).
        assert!(d <= 1e-3 * scale, "gradient of {name} differs by {d} (max {scale})");
    }

    // BatchNorm running statistics after one train-mode forward (momentum 0.1, unbiased var).
    let tensors = collect(&mut model);
    let mean = &tensors["backbone.stem.0.bn.running_mean"].data;
    let var = &tensors["backbone.stem.0.bn.running_var"].data;
    let dm = max_abs_diff(mean, &npz.f32("bn_stem_running_mean_after").1);
    let dv = max_abs_diff(var, &npz.f32("bn_stem_running_var_after").1);
    println!("stem BN running mean diff {dm:.1e}, var diff {dv:.1e}");
    assert!(dm <= 1e-5 && dv <= 1e-5, "running statistics: mean {dm}, var {dv}");
}
