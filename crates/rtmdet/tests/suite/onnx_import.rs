//! Import of the official mmdeploy ONNX export of RTMDet-nano (BatchNorm folded into the
//! convs) into our model, checked against that model's own outputs on `people.jpg`.

use crate::common::*;
use rtmdet::detector::LoadOptions;
use rtmdet::engine::EngineKind;
use rtmdet::postprocess::{self, DetectParams};
use rtmdet::{Detector, Size};

/// Both engines: burn, and the fused CPU engine (depthwise 3×3 stride-2 paths of nano).
#[test]
fn nano_onnx_reproduces_its_raw_outputs_and_detections() {
    for engine in [EngineKind::Burn, EngineKind::Cpu] {
        check_nano(engine);
    }
}

fn check_nano(engine: EngineKind) {
    println!("engine {engine:?}");
    let opts = LoadOptions { engine, ..Default::default() };
    let det = Detector::load(&shared("assets/onnx/rtmdet_nano_person.onnx"), &opts).unwrap();
    assert_eq!(det.cpu_engine().is_some(), engine == EngineKind::Cpu);
    let cfg = det.config();
    assert_eq!((cfg.size, cfg.num_classes, cfg.use_depthwise, cfg.share_conv), (Size::Nano, 1, true, false));
    assert_eq!(cfg.input_size, 320);

    let mut npz = Npz::open(shared("assets/onnx/rtmdet_nano_person__people_640.npz"));
    let outs = det.forward(&npz.f32("input").1, [1, 3, 640, 640]).unwrap();
    for (l, o) in outs.levels.iter().enumerate() {
        let stride = 8 << l;
        let (shape, cls) = npz.f32(&format!("cls_s{stride}"));
        let reg: Vec<f32> = npz.f32(&format!("reg_s{stride}")).1.iter().map(|v| v * stride as f32).collect();
        let (ours_cls, ours_reg) = (o.cls.clone(), o.reg.clone());
        assert_eq!(o.dims.to_vec(), shape);
        let (dc, dr) = (max_abs_diff(&ours_cls, &cls), max_abs_diff(&ours_reg, &reg));
        // The reference is ONNX Runtime running BN-folded convs of a trained model whose
        // activations are large (logits up to 41, distances up to 183 px), so the comparison sits
        // at relative fp32 noise. Measured as `|d| / max(|ref|, 1)`: ONNX Runtime vs PyTorch on
        // tiny differ by 5.2e-4 (cls) and 6.2e-3 (reg); we allow 1e-3 and 6.2e-3 (we measure
        // 6.9e-4 and 2.6e-3).
        let mixed =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0f32, f32::max);
        let (rc, rr) = (mixed(&ours_cls, &cls), mixed(&ours_reg, &reg));
        println!(
            "stride {stride}: cls max abs {dc:.2e} mixed rel {rc:.2e}; reg max abs {dr:.2e} px mixed rel {rr:.2e}"
        );
        assert!(rc <= 1e-3, "stride {stride}: logits differ by {dc} (mixed relative {rc})");
        assert!(rr <= 6.2e-3, "stride {stride}: distances differ by {dr} px (mixed relative {rr})");
    }

    // mmdeploy's graph: score > 0.05, no clamping, NMS IoU 0.6, top 100, input pixels.
    let params = DetectParams { score_thr: 0.05, nms_pre: 30000, iou_thr: 0.6, max_det: 100 };
    let ours = postprocess::postprocess(&outs, 0, &params, None, None);
    let (_, dets) = npz.f32("dets");
    let labels = npz.i64("labels");
    let reference: Vec<Row> = (0..labels.len())
        .map(|i| {
            ([dets[5 * i], dets[5 * i + 1], dets[5 * i + 2], dets[5 * i + 3]], dets[5 * i + 4], labels[i] as usize)
        })
        .collect();
    let (wb, ws) = match_sets(&det_rows(&ours), &reference, SetTol::strict(0.05, 1e-4)).unwrap();
    println!("nano final detections: {} matched, worst box {wb:.2e} px, worst score {ws:.2e}", ours.len());
}

#[test]
fn onnx_model_survives_a_round_trip_through_our_format() {
    let det = Detector::from_checkpoint(shared("assets/onnx/rtmdet_nano_person.onnx")).unwrap();
    let dir = std::env::temp_dir().join(format!("rtmdet-onnx-rt-{}", std::process::id()));
    let path = dir.join("nano.safetensors");
    det.save(&path).unwrap();
    let back = Detector::from_checkpoint(&path).unwrap();
    assert_eq!(back.config(), det.config());
    let img = rtmdet::image_io::read_image(&shared("assets/images/people.jpg")).unwrap();
    let params = DetectParams { score_thr: 0.05, ..DetectParams::DEPLOY };
    let a = det.predict_batch_with(std::slice::from_ref(&img), &params).unwrap().remove(0);
    let b = back.predict_batch_with(std::slice::from_ref(&img), &params).unwrap().remove(0);
    assert!(!a.is_empty());
    assert_eq!(a, b);
    std::fs::remove_dir_all(dir).ok();
}

/// The model built into the library is the shared nano person export, byte for byte: same
/// configuration, same tensors.
#[test]
fn embedded_default_model_is_the_nano_person_detector() {
    let shared_copy = std::fs::read(shared("assets/onnx/rtmdet_nano_person.onnx")).unwrap();
    assert!(rtmdet::weights::embedded::NANO_PERSON_ONNX == shared_copy.as_slice());
    let det = Detector::embedded(&LoadOptions::default()).unwrap();
    let file = Detector::from_checkpoint(shared("assets/onnx/rtmdet_nano_person.onnx")).unwrap();
    assert_eq!(det.config(), file.config());
    assert_eq!(det.config().class_name(0), "person");
    assert_eq!(det.weights(), file.weights());
}
