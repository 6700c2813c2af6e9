//! Measurements shared by the bench commands (`bench`, `bench train`, `bench data`): medians,
//! the timing of training steps, and model names in reports. A leaf module, so the commands
//! import it and not each other.

use anyhow::Result;
use rtmdet::assign::DynamicSoftLabelAssigner;
use rtmdet::config::Task;
use rtmdet::model::RtmDet;
use rtmdet::train::ema::ExpMomentumEma;
use rtmdet::train::optim::AdamW;
use rtmdet::train::trainer::{StepTimes, optimisation_step};
use rtmdet::{Instances, ModelConfig};
use serde::Serialize;

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `rtmdet-tiny`, `rtmdet-ins-s`, `rtmdet-r-l`: the model's name in reports.
pub fn model_name(cfg: &ModelConfig) -> String {
    let task = match cfg.task {
        Task::Detect => "",
        Task::Segment => "ins-",
        Task::Rotated => "r-",
    };
    format!("rtmdet-{task}{}", cfg.size.name())
}

/// The median time (s) of each phase of the timed training steps, and of the whole step.
#[derive(Serialize, Clone, Copy)]
pub struct StepSummary {
    pub step_s: f64,
    pub forward_s: f64,
    pub loss_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
}

impl StepSummary {
    fn of(times: &[StepTimes]) -> StepSummary {
        let col = |f: fn(&StepTimes) -> f64| median(&mut times.iter().map(f).collect::<Vec<_>>());
        StepSummary {
            step_s: col(|t| t.forward + t.loss + t.backward + t.optimizer),
            forward_s: col(|t| t.forward),
            loss_s: col(|t| t.loss),
            backward_s: col(|t| t.backward),
            optimizer_s: col(|t| t.optimizer),
        }
    }
}

/// `iters` optimisation steps (after one warm-up step, which allocates) of a freshly
/// initialised `cfg` model on one batch (`input` NCHW at `imgsz`, one target set per image),
/// on the current rayon pool and `device`: the measurement of `bench train` and of the model
/// in `bench data`.
pub fn time_training_steps(
    cfg: &ModelConfig,
    input: &[f32],
    targets: &[Instances],
    imgsz: usize,
    iters: usize,
    device: &rtmdet::burn::tensor::Device,
) -> Result<StepSummary> {
    let device = device.clone().autodiff();
    let dims = [targets.len(), 3, imgsz, imgsz];
    let mut model = RtmDet::new(cfg, &device)?;
    let (mut opt, mut ema) = (AdamW::default(), ExpMomentumEma::default());
    let assigner = DynamicSoftLabelAssigner::default();
    let mut times = Vec::new();
    for _ in 0..iters + 1 {
        let x = rtmdet::burn::tensor::Tensor::<4>::from_data(
            rtmdet::burn::tensor::TensorData::new(input.to_vec(), dims),
            &device,
        );
        let step = optimisation_step(&mut model, &mut opt, &mut ema, x, targets, &assigner, 1e-4)?
            .map_err(|l| anyhow::anyhow!("the loss is not finite: {l:?}"))?;
        times.push(step.times);
    }
    Ok(StepSummary::of(&times[1..]))
}
