//! Every size is built from its configuration alone: parameter counts against the reference
//! checkpoints (tiny, s: exact) and the published table (m 24.71 M, l 52.3 M, x 94.86 M), and
//! a save → load round trip of a randomly initialised m.

use burn::module::{Param, RunningState};
use burn::tensor::{Device, Tensor};
use rtmdet::model::RtmDet;
use rtmdet::weights::{ParamVisitor, VisitWeights};
use rtmdet::{ModelConfig, Size};

/// Counts learnable values once per tensor (shared head convs once), as PyTorch's
/// `sum(p.numel() for p in model.parameters())`.
#[derive(Default)]
struct Counter(usize);

impl ParamVisitor for Counter {
    fn param<const D: usize>(&mut self, _: &[String], p: &mut Param<Tensor<D>>) -> rtmdet::Result<()> {
        self.0 += p.val().dims().iter().product::<usize>();
        Ok(())
    }
    fn buffer(&mut self, _: &str, _: &mut RunningState<Tensor<1>>) -> rtmdet::Result<()> {
        Ok(())
    }
}

fn params(size: Size) -> usize {
    let mut m = RtmDet::new(&ModelConfig::new(size), &Device::default()).unwrap();
    let mut c = Counter::default();
    m.visit_weights("", &mut c).unwrap();
    c.0
}

#[test]
fn parameter_counts_match_the_original() {
    assert_eq!(params(Size::Tiny), 4_896_168);
    assert_eq!(params(Size::S), 8_886_924);
    // Published to 2, 1 and 2 decimals: within half the last digit.
    for (size, millions, half_digit) in [(Size::M, 24.71, 0.005), (Size::L, 52.3, 0.05), (Size::X, 94.86, 0.005)] {
        let p = params(size) as f64 / 1e6;
        println!("{size:?}: {p:.3} M");
        assert!((p - millions).abs() <= half_digit, "{size:?}: {p} M, published {millions} M");
    }
}

#[test]
fn a_random_m_model_round_trips_through_our_format() {
    let device = Device::default();
    let cfg = ModelConfig::new(Size::M);
    let mut det = rtmdet::Detector::new(RtmDet::new(&cfg, &device).unwrap(), cfg.clone(), device);
    let path = std::env::temp_dir().join(format!("rtmdet-m-{}.safetensors", std::process::id()));
    det.save(&path).unwrap();
    let back = rtmdet::Detector::from_checkpoint(&path).unwrap();
    assert_eq!(back.config(), &cfg);
    let mut again = back;
    let (a, b) = (rtmdet::weights::collect(&mut det), rtmdet::weights::collect(&mut again));
    assert_eq!(a, b);
    std::fs::remove_file(path).ok();
}
