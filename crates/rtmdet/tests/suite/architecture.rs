//! Every size is built from its configuration alone: parameter counts against the reference
//! checkpoints (tiny, s: exact) and the published table (m 24.71 M, l 52.3 M, x 94.86 M), the
//! graph's tensor list against the burn module and a reference checkpoint, and a save → load
//! round trip of a randomly initialised m.

use burn::module::{Param, RunningState};
use burn::tensor::{Device, Tensor};
use rtmdet::model::{Graph, RtmDet};
use rtmdet::weights::{ParamVisitor, VisitWeights};
use rtmdet::{ModelConfig, Size};

/// Learnable values once per tensor (shared head convs once), as PyTorch's
/// `sum(p.numel() for p in model.parameters())`, from the graph description alone.
fn params(size: Size) -> usize {
    count(&ModelConfig::new(size))
}

fn count(cfg: &ModelConfig) -> usize {
    let graph = Graph::new(cfg).unwrap();
    graph.tensors().iter().filter(|t| !t.buffer).map(|t| t.shape.iter().product::<usize>()).sum()
}

/// Every tensor the burn module holds, with its names and shape.
#[derive(Default)]
struct Lister(Vec<(Vec<String>, Vec<usize>, bool)>);

impl ParamVisitor for Lister {
    fn param<const D: usize>(&mut self, names: &[String], p: &mut Param<Tensor<D>>) -> rtmdet::Result<()> {
        self.0.push((names.to_vec(), p.val().dims().to_vec(), false));
        Ok(())
    }
    fn buffer(&mut self, name: &str, s: &mut RunningState<Tensor<1>>) -> rtmdet::Result<()> {
        self.0.push((vec![name.to_string()], s.value_sync().dims().to_vec(), true));
        Ok(())
    }
}

#[test]
fn the_burn_module_and_checkpoints_hold_exactly_the_graph_tensors() {
    let rotated = [Size::Tiny, Size::S, Size::M, Size::L].map(ModelConfig::rotated);
    for cfg in Size::ALL.map(ModelConfig::new).into_iter().chain(rotated) {
        let size = (cfg.size, cfg.task);
        let graph = Graph::new(&cfg).unwrap();
        let mut want: Vec<_> = graph.tensors().into_iter().map(|t| (t.names, t.shape, t.buffer)).collect();
        let mut lister = Lister::default();
        RtmDet::new(&cfg, &Device::default()).unwrap().visit_weights("", &mut lister).unwrap();
        let mut got = lister.0;
        want.sort();
        got.sort();
        assert_eq!(got, want, "{size:?}");
    }
    // The key sets of real checkpoints (mmdet tiny, mmrotate rotated-tiny): every key is a
    // graph tensor or ignorable.
    for (file, cfg) in [
        ("checkpoints/rtmdet_tiny_ref_seed1.pth", ModelConfig::new(Size::Tiny)),
        ("rotated/checkpoints/rotated_rtmdet_tiny_ref_seed1.pth", ModelConfig::rotated(Size::Tiny)),
    ] {
        let map = rtmdet::weights::pth::read_state_dict(&crate::common::reference(file)).unwrap();
        let checked = rtmdet::weights::check(&Graph::new(&cfg).unwrap(), map.clone()).unwrap();
        let ignored: Vec<&String> = map.keys().filter(|k| !checked.contains_key(*k)).collect();
        let fine = |k: &&String| k.ends_with("num_batches_tracked") || k.starts_with("data_preprocessor.");
        assert!(ignored.iter().all(fine), "{file}: {ignored:?}");
    }
}

#[test]
fn parameter_counts_match_the_original() {
    assert_eq!(params(Size::Tiny), 4_896_168);
    assert_eq!(params(Size::S), 8_886_924);
    // RTMDet-R (mmrotate reference checkpoints: 15 classes and the angle predictor).
    assert_eq!(count(&ModelConfig::rotated(Size::Tiny)), 4_877_544);
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
    let map = rtmdet::weights::collect(&mut RtmDet::new(&cfg, &device).unwrap());
    let det = rtmdet::Detector::from_tensors(cfg.clone(), &map, device).unwrap();
    let path = std::env::temp_dir().join(format!("rtmdet-m-{}.safetensors", std::process::id()));
    det.save(&path).unwrap();
    let back = rtmdet::Detector::from_checkpoint(&path).unwrap();
    assert_eq!(back.config(), &cfg);
    assert_eq!(back.weights(), det.weights());
    assert_eq!(det.weights(), &map);
    std::fs::remove_file(path).ok();
}

/// Every size of every task is recognised from its tensor names and shapes alone (what a
/// held-out official checkpoint of a size without reference data relies on): task, size,
/// classes and decoding.
#[test]
fn every_size_and_task_is_recognised_from_its_tensors() {
    use rtmdet::config::Task;
    use rtmdet::weights::recognise::recognise;
    let sizes = [Size::Tiny, Size::S, Size::M, Size::L, Size::X];
    let configs = sizes
        .iter()
        .flat_map(|&s| [ModelConfig::new(s), ModelConfig::ins(s), ModelConfig::rotated(s)])
        .chain([ModelConfig::new(Size::Nano)]);
    for cfg in configs {
        let mut model = rtmdet::model::RtmDet::new(&cfg, &Default::default()).unwrap();
        let map = rtmdet::weights::collect(&mut model);
        let got = recognise(&map, None, None).unwrap();
        let what = format!("{:?} {:?}", cfg.task, cfg.size);
        assert_eq!((got.task, got.size, got.num_classes), (cfg.task, cfg.size, cfg.num_classes), "{what}");
        // Distances: exp for detection m/l/x, ReLU (no exp) for Ins, the size's rule for R.
        let expected_exp = cfg.task != Task::Segment && cfg.exp_on_reg;
        assert_eq!(got.exp_on_reg && got.task != Task::Segment, expected_exp, "{what}");
    }
}
