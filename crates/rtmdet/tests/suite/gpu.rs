//! The burn model on a wgpu/Vulkan device (builds with `--features wgpu` or `vulkan`) against
//! the fused CPU engine: raw head outputs and detections. Run on any adapter; on a machine
//! without a GPU, Mesa's software Vulkan driver (lavapipe, Debian's `mesa-vulkan-drivers`)
//! runs the same kernels: `RTMDET_TEST_DEVICE=wgpu:cpu` (the default).
//!
//! `cargo test --release -p rtmdet --features wgpu --test suite -- gpu::`

use rtmdet::detector::{Detector, LoadOptions};
use rtmdet::engine::{EngineKind, parse_device};
use rtmdet::image_io::read_image;

use crate::common::*;

fn device_name() -> String {
    std::env::var("RTMDET_TEST_DEVICE")
        .unwrap_or_else(|_| if cfg!(feature = "wgpu") { "wgpu:cpu".into() } else { "vulkan:cpu".into() })
}

/// The bounds between two float32 implementations of the network: `parity`'s tolerances for
/// ours against PyTorch (logits, kernel parameters and prototypes atol 2e-3; distances
/// 0.03 px). The differences measured on lavapipe are printed (tiny: logits ≤ 2e-4, distances
/// ≤ 2.8e-3 px).
const ATOL: f32 = 2e-3;
const DISTANCE_ATOL: f32 = 0.03;

/// Raw outputs of tiny and Ins-tiny on demo.jpg on the GPU device equal the CPU engine's to
/// those bounds (float32 kernels summing in another order), and the detections match.
#[test]
fn gpu_device_matches_the_cpu_engine() {
    let device = parse_device(&device_name()).unwrap();
    let image = read_image(&shared("assets/images/demo.jpg")).unwrap();
    for ckpt in ["rtmdet_tiny_ref_seed1", "rtmdet_ins_tiny_ref_seed1"] {
        let path = reference(&format!("checkpoints/{ckpt}.pth"));
        let cpu = Detector::load(&path, &LoadOptions { engine: EngineKind::Cpu, ..Default::default() }).unwrap();
        let gpu = Detector::load(&path, &LoadOptions { device: Some(device.clone()), ..Default::default() }).unwrap();
        assert_eq!(gpu.engine().name(), "burn", "a GPU device runs the burn model");
        let (input, _) = cpu.preprocess(std::slice::from_ref(&image));
        let dims = [1, 3, cpu.input_size, cpu.input_size];
        let (a, b) = (gpu.forward(&input, dims).unwrap(), cpu.forward(&input, dims).unwrap());
        for (l, (x, y)) in a.levels.iter().zip(&b.levels).enumerate() {
            for (name, p, q) in [("cls", &x.cls, &y.cls), ("reg", &x.reg, &y.reg), ("kernel", &x.kernel, &y.kernel)] {
                let d = max_abs_diff(p, q);
                println!("{ckpt} level {l} {name}: {d:.2e}");
                let bound = if name == "reg" { DISTANCE_ATOL } else { ATOL };
                assert!(d <= bound, "{ckpt} level {l} {name}: {d:e}");
            }
        }
        if let (Some(p), Some(q)) = (&a.mask_feat, &b.mask_feat) {
            let d = max_abs_diff(&p.data, &q.data);
            println!("{ckpt} prototypes: {d:.2e}");
            assert!(d <= ATOL, "{ckpt} prototypes: {d:e}");
        }
        let (dg, dc) = (gpu.predict(&image).unwrap(), cpu.predict(&image).unwrap());
        assert_eq!(dg.len(), dc.len(), "{ckpt}");
        for k in 0..dc.len() {
            let (g, c) = (dg.get(k), dc.get(k));
            assert_eq!(g.label, c.label, "{ckpt} detection {k}");
            assert!((g.score - c.score).abs() < 1e-4, "{ckpt} detection {k}: {} vs {}", g.score, c.score);
            assert!(g.bbox.iter().zip(c.bbox).all(|(x, y)| (x - y).abs() < 1e-2), "{ckpt} detection {k}");
        }
    }
}
