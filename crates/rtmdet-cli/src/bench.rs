//! `rtmdet bench train`: time of one training step (forward, assignment and loss, backward,
//! AdamW + EMA) at a given batch and image size, for each thread count.

use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use rtmdet::assign::DynamicSoftLabelAssigner;
use rtmdet::loss::detection::{ImageTargets, detection_loss};
use rtmdet::model::RtmDet;
use rtmdet::train::ema::ExpMomentumEma;
use rtmdet::train::optim::AdamW;
use rtmdet::{ModelConfig, Size};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// One training step of a model.
    Train(BenchTrainArgs),
}

#[derive(Args)]
pub struct BenchTrainArgs {
    #[arg(long, default_value = "tiny")]
    pub model: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 640)]
    pub imgsz: usize,
    /// Comma-separated thread counts.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Timed steps per thread count (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(args) => bench_train(args),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench_train(args: BenchTrainArgs) -> Result<()> {
    let cfg = ModelConfig::new(Size::parse(&args.model)?);
    let device = rtmdet::burn::tensor::Device::flex().autodiff();
    let (b, s) = (args.batch, args.imgsz);
    // A fixed pseudo-random input and 8 objects per image.
    let input: Vec<f32> = (0..b * 3 * s * s).map(|i| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0).collect();
    let targets: Vec<ImageTargets> = (0..b)
        .map(|i| ImageTargets {
            boxes: (0..8)
                .map(|k| {
                    let o = (40 + 60 * ((i + k) % 8)) as f32 * s as f32 / 640.0;
                    [o, o * 0.7, o + 80.0 * s as f32 / 640.0, o * 0.7 + 120.0 * s as f32 / 640.0]
                })
                .collect(),
            labels: (0..8).map(|k| (i * 8 + k) % cfg.num_classes).collect(),
        })
        .collect();
    println!("training step of RTMDet-{}, batch {b}, {s}x{s}", cfg.size.name());
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "threads", "step (s)", "forward", "loss", "backward", "optim+ema"
    );
    for &t in &args.threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
        let times = pool.install(|| -> Result<Vec<[f64; 4]>> {
            let mut model = RtmDet::new(&cfg, &device)?;
            let (mut opt, mut ema) = (AdamW::default(), ExpMomentumEma::default());
            let assigner = DynamicSoftLabelAssigner::default();
            let mut out = Vec::new();
            for _ in 0..args.iters + 1 {
                let t0 = Instant::now();
                let x = rtmdet::burn::tensor::Tensor::<4>::from_data(
                    rtmdet::burn::tensor::TensorData::new(input.clone(), [b, 3, s, s]),
                    &device,
                );
                let outputs = model.forward(x);
                let t1 = Instant::now();
                let loss = detection_loss(&outputs, &targets, &assigner);
                let t2 = Instant::now();
                let grads = loss.total.backward();
                let t3 = Instant::now();
                opt.step(&mut model, &grads, 1e-4)?;
                ema.update(&mut model)?;
                let t4 = Instant::now();
                out.push([t1 - t0, t2 - t1, t3 - t2, t4 - t3].map(|d| d.as_secs_f64()));
            }
            Ok(out[1..].to_vec())
        })?;
        let col = |i: usize| median(&mut times.iter().map(|r| r[i]).collect::<Vec<_>>());
        let parts = [col(0), col(1), col(2), col(3)];
        let mut totals: Vec<f64> = times.iter().map(|r| r.iter().sum()).collect();
        println!(
            "{t:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            median(&mut totals),
            parts[0],
            parts[1],
            parts[2],
            parts[3]
        );
    }
    Ok(())
}
