//! The CPU engine against the burn model for every size (random weights, small inputs): the
//! plan builder must handle every configuration (m/l/x stems and block counts, exp_on_reg,
//! nano's depthwise convolutions and unshared head), not only the sizes with reference data.

use rtmdet::burn::tensor::Device;
use rtmdet::detector::Detector;
use rtmdet::engine::cpu::{CpuEngine, CpuOptions};
use rtmdet::engine::{Engine, EngineKind};
use rtmdet::model::{Graph, RtmDet};
use rtmdet::weights::TensorMap;
use rtmdet::{ModelConfig, Size};

/// Replaces every tensor by deterministic pseudo-random values of a plausible scale, so no
/// layer is an identity and the outputs vary across pixels and classes.
fn randomise(map: &mut TensorMap) {
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32 // [0, 1)
    };
    for (name, t) in map.iter_mut() {
        let fan_in = t.shape.iter().skip(1).product::<usize>().max(1) as f32;
        for v in t.data.iter_mut() {
            let u = next();
            *v = if name.ends_with("running_var") || name.ends_with("bn.weight") {
                0.5 + u
            } else if name.ends_with("bias") || name.ends_with("running_mean") {
                0.4 * u - 0.2
            } else {
                (2.0 * u - 1.0) * (3.0 / fan_in).sqrt()
            };
        }
    }
}

/// Shared head convs hold the same values under every level's name (the loader checks it):
/// the graph lists those names on one conv parameter.
fn share_head_convs(map: &mut TensorMap, graph: &Graph) {
    for p in graph.convs.iter().filter(|p| p.weight.len() > 1) {
        let v = map[&p.weight[0]].clone();
        for name in &p.weight[1..] {
            map.insert(name.clone(), v.clone());
        }
    }
}

fn input(s: usize) -> Vec<f32> {
    (0..3 * s * s).map(|i| ((i * 2654435761usize) % 2000) as f32 / 1000.0 - 1.0).collect()
}

#[test]
fn engine_equals_burn_for_every_size() {
    // Every detection size, RTMDet-R (its angle predictor) on tiny, and RTMDet-Ins of every
    // COCO size (kernels, ReLU distances and the mask feature module; the reference data has
    // Ins-tiny only).
    let ins = [Size::Tiny, Size::S, Size::M, Size::L, Size::X].map(ModelConfig::ins);
    let configs = Size::ALL.map(ModelConfig::new).into_iter().chain([ModelConfig::rotated(Size::Tiny)]).chain(ins);
    for cfg in configs {
        let size = (cfg.size, cfg.task);
        let device = Device::flex();
        let mut model = RtmDet::new(&cfg, &device).unwrap();
        let mut map = rtmdet::weights::collect(&mut model);
        randomise(&mut map);
        share_head_convs(&mut map, &Graph::new(&cfg).unwrap());
        let det = Detector::with_engine(cfg.clone(), map, device, EngineKind::Burn, CpuOptions::default()).unwrap();
        // 96 is odd at stride 32 (3×3 maps): Winograd tiles hang over the edge.
        let s = 96;
        let want = det.forward(&input(s), [1, 3, s, s]).unwrap();
        let graph = Graph::new(&cfg).unwrap();
        for direct_3x3 in [false, true] {
            let opts = CpuOptions { direct_3x3, ..Default::default() };
            let engine = CpuEngine::new(&graph, det.weights(), opts).unwrap();
            let got = engine.forward(&input(s), [1, 3, s, s]);
            for (g, w) in got.levels.iter().zip(&want.levels) {
                assert_eq!(g.dims, w.dims, "{size:?}");
                let worst = |a: &[f32], b: &[f32]| {
                    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0f32, f32::max)
                };
                let (dc, dr) = (worst(&g.cls, &w.cls), worst(&g.reg, &w.reg).max(worst(&g.angle, &w.angle)));
                let dk = worst(&g.kernel, &w.kernel);
                assert_eq!((g.angle.len(), g.kernel.len()), (w.angle.len(), w.kernel.len()), "{size:?}");
                let spread = w.cls.iter().fold(0f32, |m, v| m.max((v - w.cls[0]).abs()));
                assert!(spread > 0.01, "{size:?}: the logits barely vary ({spread}), the test would be blind");
                println!("{size:?} stride {} direct {direct_3x3}: cls {dc:.2e} reg {dr:.2e} kernel {dk:.2e}", g.stride);
                assert!(
                    dc < 1e-4 && dr < 1e-4 && dk < 1e-4,
                    "{size:?} stride {}: cls {dc}, reg {dr}, kernel {dk}",
                    g.stride
                );
            }
            assert_eq!(got.mask_feat.is_some(), want.mask_feat.is_some(), "{size:?}");
            if let (Some(g), Some(w)) = (&got.mask_feat, &want.mask_feat) {
                let dp = g.data.iter().zip(&w.data).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0f32, f32::max);
                println!("{size:?} direct {direct_3x3}: prototypes {dp:.2e}");
                assert!(dp < 1e-4, "{size:?}: prototypes differ by {dp}");
            }
        }
    }
}
