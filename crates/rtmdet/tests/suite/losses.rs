//! QualityFocalLoss and GIoULoss against the reference: values and gradients.

use crate::common::*;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rtmdet::loss::{AVG_EPS, giou::giou_loss, quality_focal::quality_focal_loss};

fn rel_close(a: f32, b: f32, rtol: f32) -> bool {
    (a - b).abs() <= rtol * b.abs().max(1e-6)
}

#[test]
fn quality_focal_loss_values_and_gradients() {
    let device = Device::default().autodiff();
    let mut npz = Npz::open(reference("standalone/qfl.npz"));
    for case in ["c0", "c1", "c2"] {
        let (shape, pred) = npz.f32(&format!("{case}_pred"));
        let labels = npz.i64(&format!("{case}_labels"));
        let scores = npz.f32(&format!("{case}_scores")).1;
        let weight = npz.f32(&format!("{case}_weight")).1;
        let x = Tensor::<2>::from_data(TensorData::new(pred, [shape[0], shape[1]]), &device).require_grad();
        let l = Tensor::<1, Int>::from_data(TensorData::new(labels, [shape[0]]), &device);
        let s = Tensor::<1>::from_data(TensorData::new(scores, [shape[0]]), &device);
        let w = Tensor::<1>::from_data(TensorData::new(weight, [shape[0]]), &device);
        let elem = quality_focal_loss(x.clone(), l, s, 2.0);
        let ours_elem = rtmdet::weights::to_vec(&elem);
        let theirs_elem = npz.f32(&format!("{case}_loss_elem")).1;
        for (a, b) in ours_elem.iter().zip(&theirs_elem) {
            assert!(rel_close(*a, *b, 1e-5), "{case}: element {a} vs {b}");
        }
        // As RTMDet calls it: weighted sum / (avg_factor 1 + eps).
        let loss = (elem * w).sum().div_scalar(1.0 + AVG_EPS);
        let value = rtmdet::weights::to_vec(&loss)[0];
        let expected = npz.f32(&format!("{case}_loss_w_avg1")).1[0];
        assert!(rel_close(value, expected, 1e-6), "{case}: loss {value} vs {expected}");
        let grads = loss.backward();
        let g = rtmdet::weights::to_vec(&x.grad(&grads).unwrap());
        let g_ref = npz.f32(&format!("{case}_grad_pred_of_loss_w_avg1")).1;
        let scale = g_ref.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(&g, &g_ref) <= 1e-5 * scale, "{case}: gradient differs by {}", max_abs_diff(&g, &g_ref));
    }
}

#[test]
fn giou_loss_values_and_gradients() {
    let device = Device::default().autodiff();
    let mut npz = Npz::open(reference("standalone/giou.npz"));
    let (shape, pred) = npz.f32("pred");
    let target = npz.f32("target").1;
    let weight = npz.f32("weight").1;
    let n = shape[0];
    let p = Tensor::<2>::from_data(TensorData::new(pred, [n, 4]), &device).require_grad();
    let t = Tensor::<2>::from_data(TensorData::new(target, [n, 4]), &device);
    let w = Tensor::<1>::from_data(TensorData::new(weight, [n]), &device);
    let elem = giou_loss(p.clone(), t, 1e-6);
    let ours = rtmdet::weights::to_vec(&elem);
    let theirs = npz.f32("loss_elem_unweighted").1;
    assert!(max_abs_diff(&ours, &theirs) <= 1e-6, "elements differ by {}", max_abs_diff(&ours, &theirs));
    let loss = (elem * w).sum().mul_scalar(2.0).div_scalar(1.0 + AVG_EPS);
    let value = rtmdet::weights::to_vec(&loss)[0];
    let expected = npz.f32("loss_w_avg1").1[0];
    assert!(rel_close(value, expected, 1e-6), "loss {value} vs {expected}");
    let grads = loss.backward();
    let g = rtmdet::weights::to_vec(&p.grad(&grads).unwrap());
    let g_ref = npz.f32("grad_pred_of_loss_w_avg1").1;
    let scale = g_ref.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_abs_diff(&g, &g_ref) <= 1e-5 * scale, "gradient differs by {}", max_abs_diff(&g, &g_ref));
}
