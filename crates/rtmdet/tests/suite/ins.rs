//! RTMDet-Ins network parity (spec §10.1) on `../shared/reference`'s Ins-tiny checkpoint
//! (seed 1): the official checkpoint loads by name (its `reg_convs` copies of the cls tower
//! read as aliases), and on the stored network inputs the burn model reproduces the raw head
//! outputs — class logits, ReLU distances, the 169 dynamic-conv parameters per prior — and
//! the mask feature module's 8 prototypes.

use burn::tensor::Device;

use crate::common::*;
use rtmdet::config::Task;
use rtmdet::engine::burn::BurnEngine;
use rtmdet::model::Graph;
use rtmdet::weights::{ReadOptions, read, to_vec};

const CKPT: &str = "checkpoints/rtmdet_ins_tiny_ref_seed1.pth";

/// Tolerances as for the detection heads (`parity.rs::head_outputs_match`, fp32 noise of the
/// same depth of network): logits and kernel parameters atol 2e-3, distances 0.03 px.
#[test]
fn ins_head_outputs_and_prototypes_match() {
    let (cfg, map) = read(&reference(CKPT), &ReadOptions::default()).unwrap();
    assert_eq!((cfg.task, cfg.num_classes, cfg.exp_on_reg), (Task::Segment, 80, false));
    let graph = Graph::new(&cfg).unwrap();
    let engine = BurnEngine::new(graph.clone(), &map, &Device::default()).unwrap();
    for key in ["demo", "coco049"] {
        let mut input = Npz::open(reference(&format!("inputs/{key}.npz")));
        let mut npz = Npz::open(reference(&format!("infer/rtmdet_ins_tiny_ref_seed1__{key}.npz")));
        let x = input.f32("input").1;
        let outs = engine.forward_tensors(&x, [1, 3, 640, 640]);
        let (mut w_cls, mut w_reg, mut w_kernel) = (0f32, 0f32, 0f32);
        for (l, o) in outs.iter().enumerate() {
            let (shape, cls) = npz.f32(&format!("cls_l{l}"));
            assert_eq!(o.cls.dims().to_vec(), shape);
            w_cls = w_cls.max(max_abs_diff(&to_vec(&o.cls), &cls));
            w_reg = w_reg.max(max_abs_diff(&to_vec(&o.reg), &npz.f32(&format!("reg_l{l}")).1));
            let kernel = o.kernel.as_ref().expect("Ins levels carry kernels");
            let (kshape, k) = npz.f32(&format!("kernel_l{l}"));
            assert_eq!(kernel.dims().to_vec(), kshape);
            w_kernel = w_kernel.max(max_abs_diff(&to_vec(kernel), &k));
        }
        let proto_node = graph.mask_feat.expect("Ins graphs have mask features");
        let proto = engine.model().run(engine.tensor(&x, [1, 3, 640, 640]), &[proto_node]).remove(0);
        let (pshape, p) = npz.f32("proto");
        assert_eq!(proto.dims().to_vec(), pshape);
        let w_proto = max_abs_diff(&to_vec(&proto), &p);
        println!("{key}: max |cls| {w_cls:.2e}, reg {w_reg:.2e} px, kernel {w_kernel:.2e}, proto {w_proto:.2e}");
        assert!(w_cls <= 2e-3, "{key}: cls logits differ by {w_cls}");
        assert!(w_reg <= 0.03, "{key}: distances differ by {w_reg} px");
        assert!(w_kernel <= 2e-3, "{key}: kernel parameters differ by {w_kernel}");
        assert!(w_proto <= 2e-3, "{key}: prototypes differ by {w_proto}");
    }
}

/// A misnamed or mis-shaped Ins tensor names itself; `predict` says what is missing.
#[test]
fn ins_weights_errors_name_the_tensor_and_detector_says_why() {
    let (cfg, mut map) = read(&reference(CKPT), &ReadOptions::default()).unwrap();
    let graph = Graph::new(&cfg).unwrap();
    let t = map.remove("bbox_head.mask_head.projection.weight").unwrap();
    let err = rtmdet::weights::check(&graph, map.clone()).unwrap_err().to_string();
    assert!(err.contains("bbox_head.mask_head.projection.weight"), "{err}");
    map.insert("bbox_head.mask_head.projection.weight".into(), t);
    assert!(rtmdet::weights::check(&graph, map.clone()).is_ok());
    let err = match rtmdet::detector::Detector::from_checkpoint(reference(CKPT)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("Ins models are not served by the detector yet"),
    };
    assert!(err.contains("RTMDet-Ins") && err.contains("mask post-processing"), "{err}");
}
