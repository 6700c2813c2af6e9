//! `rtmdet bench`: inference latency of the CPU engine (model alone and end to end) and
//! achieved vs measured-peak GFLOP/s, per thread count; `rtmdet bench train`: time of one
//! training step (forward, assignment and loss, backward, AdamW + EMA); `rtmdet bench data`
//! (in `bench_data.rs`): the data pipeline against that step.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use rtmdet::config::Task;
use rtmdet::engine::EngineKind;
use rtmdet::engine::cpu::peak::fma_peak_gflops;
use rtmdet::engine::cpu::{CpuOptions, Isa};
use rtmdet::image_io::{BgrImage, decode_image};
use rtmdet::model::RtmDet;
use rtmdet::{DetectParams, Detector, Instances};
use rtmdet::{ModelConfig, Size};
use serde::Serialize;

use crate::measure::{median, model_name, time_training_steps};
use crate::{args, output};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// One training step of a model.
    Train(BenchTrainArgs),
    /// Augmented images/s of the training data pipeline per worker count, against the
    /// model's training images/s.
    Data(crate::bench_data::BenchDataArgs),
    /// The video pipeline (decode + infer + draw + encode) against inference alone.
    Video(crate::bench_video::BenchVideoArgs),
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Model, as for `train`: tiny, s, m, l, x (or nano); ins-tiny … ins-x for RTMDet-Ins.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Objects per image, on a grid (with filled masks for RTMDet-Ins): many objects measure
    /// a crowded batch.
    #[arg(long, default_value_t = 8, value_parser = args::positive, allow_negative_numbers = true)]
    pub objects: usize,
    #[arg(long, default_value_t = 8, value_parser = args::positive, allow_negative_numbers = true)]
    pub batch: usize,
    #[arg(long, default_value_t = 640, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: usize,
    /// Comma-separated thread counts.
    #[arg(long, default_value = "1,2", value_delimiter = ',', value_parser = args::threads, allow_negative_numbers = true)]
    pub threads: Vec<usize>,
    /// Timed steps per thread count (after one warm-up step).
    #[arg(long, default_value_t = 3, value_parser = args::positive, allow_negative_numbers = true)]
    pub iters: usize,
    /// Device, as for `train`: cpu, or with a GPU build cuda[:N], wgpu[:N|:cpu], vulkan[...].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `rtmdet bench [OPTIONS]` (inference), `rtmdet bench train [OPTIONS]` or `rtmdet bench data [OPTIONS]`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub infer: BenchInferArgs,
}

#[derive(Args)]
pub struct BenchInferArgs {
    /// Model size (tiny, s, m, l, x, nano) with freshly initialised weights: speed does not
    /// depend on the values, and nothing is downloaded.
    #[arg(long, conflicts_with = "weights")]
    pub model: Option<String>,
    /// Weights file (.pth, .safetensors, .onnx) instead of --model.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[arg(long, default_value_t = 640, value_parser = args::imgsz, allow_negative_numbers = true)]
    pub imgsz: usize,
    #[arg(long, default_value_t = 1, value_parser = args::positive, allow_negative_numbers = true)]
    pub batch: usize,
    /// Comma-separated thread counts.
    #[arg(long, default_value = "1,2", value_delimiter = ',', value_parser = args::threads, allow_negative_numbers = true)]
    pub threads: Vec<usize>,
    /// Timed iterations per thread count (after warm-up).
    #[arg(long, default_value_t = 20, value_parser = args::positive, allow_negative_numbers = true)]
    pub iters: usize,
    /// Image decoded in the end-to-end timing (default: a synthetic 810×1080 JPEG).
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Instruction set: avx512, avx2 or scalar (default: the best available).
    #[arg(long)]
    pub isa: Option<String>,
    /// Print the time of every kernel call (first thread count).
    #[arg(long)]
    pub profile: bool,
    /// Direct 3×3 stride-1 convolutions instead of Winograd F(2×2, 3×3) (for comparison).
    #[arg(long)]
    pub direct_3x3: bool,
    /// Write the results as JSON (a new file, unless --exist-ok).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace existing output files (by default rtmdet refuses to overwrite a file).
    #[arg(long)]
    pub exist_ok: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.command {
        Some(BenchCommand::Train(a)) => bench_train(a),
        Some(BenchCommand::Data(a)) => crate::bench_data::run(a),
        Some(BenchCommand::Video(a)) => crate::bench_video::run(a),
        None => bench_infer(args.infer),
    }
}

#[derive(Serialize, Clone, Copy)]
struct Stats {
    median: f64,
    p90: f64,
    min: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Stats { median: at(0.5), p90: at(0.9), min: v[0] }
    }
}

#[derive(Serialize)]
struct Row {
    threads: usize,
    batch: usize,
    imgsz: usize,
    model_ms: Stats,
    e2e_ms: Stats,
    gflops: f64,
    peak_gflops: f64,
    images_per_s: f64,
    /// Median ms per batch of each end-to-end stage.
    decode_ms: f64,
    preprocess_ms: f64,
    postprocess_ms: f64,
    isa: String,
    model: String,
    peak_rss_mib: f64,
}

fn bench_infer(args: BenchInferArgs) -> Result<()> {
    args::check_memory(args.batch, args.imgsz, args::INFER_BYTES_PER_PIXEL, "inference")?;
    if let Some(json) = &args.json {
        let inputs: Vec<&std::path::Path> = args.weights.iter().chain(&args.source).map(PathBuf::as_path).collect();
        output::check(json, args.exist_ok, &inputs)?;
    }
    let isa =
        args.isa.as_deref().map(|s| Isa::parse(s).context("--isa: expected avx512, avx2 or scalar")).transpose()?;
    let mut det = match (&args.weights, &args.model) {
        (Some(w), _) => Detector::load(w, &Default::default())?,
        (None, m) => {
            let cfg = ModelConfig::new(Size::parse(m.as_deref().unwrap_or("tiny"))?);
            let map = rtmdet::weights::collect(&mut RtmDet::new(&cfg, &Default::default())?);
            Detector::from_tensors(cfg, &map, Default::default())?
        }
    };
    det.input_size = args.imgsz;
    let (b, s) = (args.batch, args.imgsz);
    let jpeg = match &args.source {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => synthetic_jpeg()?,
    };
    let image = decode_image(&jpeg).map_err(|e| anyhow::anyhow!("decoding the source image: {e}"))?;
    let images = vec![image; b];
    let (input, _) = det.preprocess(&images);
    // The task's own thresholds (RTMDet-Ins: NMS 0.6, 100 masks; RTMDet-R: its test_cfg).
    let params = det.params;
    let name = model_name(det.config());
    println!("{name}, {s}x{s}, batch {b}; model alone and end to end (decode + preprocess + model + post-process)");
    println!(
        "{:>7} {:>6} {:>11} {:>9} {:>9} {:>11} {:>9} {:>8} {:>13} {:>8}",
        "threads", "isa", "model ms", "p90", "min", "e2e ms", "img/s", "GFLOP/s", "peak GFLOP/s", "of peak"
    );
    let mut rows = Vec::new();
    for (ti, &t) in args.threads.iter().enumerate() {
        det.set_engine(EngineKind::Cpu, CpuOptions { threads: Some(t), isa, direct_3x3: args.direct_3x3 })?;
        let engine = det.cpu_engine().expect("CPU engine");
        let flops = engine.plan().flops(s, s) * b as f64;
        let isa_used = engine.isa();
        for _ in 0..3 {
            det.forward(&input, [b, 3, s, s])?;
        }
        let mut model_ms = Vec::new();
        for _ in 0..args.iters {
            let t0 = Instant::now();
            std::hint::black_box(det.forward(&input, [b, 3, s, s])?);
            model_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let EndToEnd { e2e, mut dec, mut pre, mut post } = end_to_end(&det, &jpeg, b, args.iters, &params)?;
        let peak = fma_peak_gflops(isa_used, t, 300);
        let m = Stats::of(model_ms);
        let e = Stats::of(e2e);
        let gflops = flops / m.median / 1e6;
        println!(
            "{t:>7} {:>6} {:>11.2} {:>9.2} {:>9.2} {:>11.2} {:>9.1} {:>8.0} {:>13.0} {:>7.0}%",
            isa_used.to_string(),
            m.median,
            m.p90,
            m.min,
            e.median,
            b as f64 * 1e3 / e.median,
            gflops,
            peak,
            100.0 * gflops / peak
        );
        let row = Row {
            threads: t,
            batch: b,
            imgsz: s,
            model_ms: m,
            e2e_ms: e,
            gflops,
            peak_gflops: peak,
            images_per_s: b as f64 * 1e3 / e.median,
            decode_ms: median(&mut dec),
            preprocess_ms: median(&mut pre),
            postprocess_ms: median(&mut post),
            isa: isa_used.to_string(),
            model: name.clone(),
            peak_rss_mib: peak_rss_mib(),
        };
        println!(
            "        end to end: decode {:.2} ms, preprocess {:.2} ms, model {:.2} ms, post-process {:.2} ms",
            row.decode_ms, row.preprocess_ms, m.median, row.postprocess_ms
        );
        if args.profile && ti == 0 {
            print_profile(&det, &input, [b, 3, s, s]);
        }
        if det.config().task == Task::Segment {
            compare_with_detection(
                &det,
                &jpeg,
                (b, args.iters),
                CpuOptions { threads: Some(t), isa, ..Default::default() },
                e.median,
            )?;
        }
        rows.push(row);
    }
    println!("peak RSS {:.0} MiB", peak_rss_mib());
    if let Some(path) = &args.json {
        output::write_json(path, &rows, args.exist_ok)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// Per-iteration times (ms) of decode → preprocess → model → post-process.
struct EndToEnd {
    e2e: Vec<f64>,
    dec: Vec<f64>,
    pre: Vec<f64>,
    post: Vec<f64>,
}

/// `iters` end-to-end runs of a batch of `b` copies of the JPEG.
fn end_to_end(det: &Detector, jpeg: &[u8], b: usize, iters: usize, params: &DetectParams) -> Result<EndToEnd> {
    let s = det.input_size;
    let mut t = EndToEnd { e2e: Vec::new(), dec: Vec::new(), pre: Vec::new(), post: Vec::new() };
    for _ in 0..iters {
        let t0 = Instant::now();
        let imgs: Vec<BgrImage> =
            (0..b).map(|_| decode_image(jpeg)).collect::<std::result::Result<_, _>>().map_err(anyhow::Error::msg)?;
        let t1 = Instant::now();
        let (x, boxes) = det.preprocess(&imgs);
        let t2 = Instant::now();
        let out = det.forward(&x, [b, 3, s, s])?;
        let t3 = Instant::now();
        std::hint::black_box(det.postprocess(&out, &boxes, params));
        let t4 = Instant::now();
        let ms = |a: Instant, z: Instant| (z - a).as_secs_f64() * 1e3;
        t.e2e.push(ms(t0, t4));
        t.dec.push(ms(t0, t1));
        t.pre.push(ms(t1, t2));
        t.post.push(ms(t3, t4));
    }
    Ok(t)
}

/// RTMDet-Ins against the detection model of its size (fresh weights, the same image,
/// threads and input size), end to end, in the same run.
fn compare_with_detection(
    ins: &Detector,
    jpeg: &[u8],
    (b, iters): (usize, usize),
    cpu: CpuOptions,
    ins_ms: f64,
) -> Result<()> {
    let cfg = ModelConfig::new(ins.config().size).with_num_classes(ins.config().num_classes);
    let map = rtmdet::weights::collect(&mut RtmDet::new(&cfg, &Default::default())?);
    let mut det = Detector::from_tensors(cfg, &map, Default::default())?;
    det.input_size = ins.input_size;
    det.set_engine(EngineKind::Cpu, cpu)?;
    let params = det.params;
    end_to_end(&det, jpeg, b, 2, &params)?;
    let mut t = end_to_end(&det, jpeg, b, iters, &params)?;
    let e = median(&mut t.e2e);
    println!(
        "        detection-{} end to end {e:.2} ms (post-process {:.2} ms): instance segmentation costs {:.2}×",
        det.config().size.name(),
        median(&mut t.post),
        ins_ms / e
    );
    Ok(())
}

/// Time per kernel kind and the slowest calls, averaged over 5 runs.
fn print_profile(det: &Detector, input: &[f32], dims: [usize; 4]) {
    let engine = det.cpu_engine().expect("CPU engine");
    let runs = 5;
    let mut steps: Vec<(String, &'static str, f64, f64)> = Vec::new();
    for r in 0..runs {
        let (_, times) = engine.forward_profiled(input, dims);
        if r == 0 {
            steps = times.iter().map(|t| (t.what.clone(), t.kind, 0.0, t.flops)).collect();
        }
        for (s, t) in steps.iter_mut().zip(&times) {
            s.2 += t.ms / runs as f64;
        }
    }
    let mut kinds: Vec<(&str, f64, f64)> = Vec::new();
    for (_, kind, ms, fl) in &steps {
        match kinds.iter_mut().find(|k| k.0 == *kind) {
            Some(k) => {
                k.1 += ms;
                k.2 += fl;
            }
            None => kinds.push((kind, *ms, *fl)),
        }
    }
    let total: f64 = kinds.iter().map(|k| k.1).sum();
    println!("        kernel time by kind ({total:.1} ms in {} calls):", steps.len());
    for (kind, ms, fl) in &kinds {
        println!("          {kind:<10} {ms:8.2} ms {:5.1}% {:7.0} GFLOP/s", 100.0 * ms / total, fl / ms / 1e6);
    }
    steps.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("        slowest calls:");
    for (what, _, ms, fl) in steps.iter().take(12) {
        println!("          {ms:8.2} ms {:7.0} GFLOP/s  {what}", fl / ms / 1e6);
    }
}

/// A deterministic 1080×810 photo-like JPEG (smooth gradients with texture).
fn synthetic_jpeg() -> Result<Vec<u8>> {
    let (w, h) = (1080u32, 810u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 7 + y * 13) % 97) as u8;
        image::Rgb([(x * 255 / w) as u8 ^ t, (y * 255 / h) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner())
}

/// The process's peak resident set (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn bench_train(args: BenchTrainArgs) -> Result<()> {
    let (task, size) = rtmdet::config::parse_model(&args.model)?;
    let cfg = if task == Task::Segment { ModelConfig::ins(size) } else { ModelConfig::new(size) };
    let device = rtmdet::engine::parse_device(&args.device)?;
    args::check_memory(args.batch, args.imgsz, args::TRAIN_BYTES_PER_PIXEL, "a training step")?;
    let (b, s) = (args.batch, args.imgsz);
    // Grid cells of at least 4 px, so that every object keeps a box after rounding.
    let most = (s / 4) * (s / 4);
    if args.objects > most {
        anyhow::bail!("--objects {}: at most {most} objects fit on a {s}x{s} input", args.objects);
    }
    // A fixed pseudo-random input.
    let input: Vec<f32> = (0..b * 3 * s * s).map(|i| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0).collect();
    let targets: Vec<Instances> = (0..b)
        .map(|i| grid_targets(args.objects, s, i, cfg.num_classes, task == Task::Segment))
        .collect::<Result<_>>()?;
    println!(
        "training step of {}, batch {b}, {s}x{s}, {} objects per image, on {}",
        model_name(&cfg),
        args.objects,
        args.device.trim().to_ascii_lowercase()
    );
    println!(
        "{:>8} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "threads", "step (s)", "img/s", "forward", "loss", "backward", "optim+ema", "peak MiB"
    );
    for &t in &args.threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
        let m = pool.install(|| time_training_steps(&cfg, &input, &targets, s, args.iters, &device))?;
        println!(
            "{t:>8} {:>10.3} {:>8.2} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.0}",
            m.step_s,
            b as f64 / m.step_s,
            m.forward_s,
            m.loss_s,
            m.backward_s,
            m.optimizer_s,
            peak_rss_mib()
        );
    }
    Ok(())
}

/// `n` objects of image `i` on a square grid over an `s`×`s` input, each filling 80 % of its
/// cell, with labels cycling over the classes and, for RTMDet-Ins, a mask filling the box.
fn grid_targets(n: usize, s: usize, i: usize, classes: usize, masks: bool) -> Result<Instances> {
    let per_row = (n as f64).sqrt().ceil() as usize;
    let cell = s as f32 / per_row as f32;
    let boxes: Vec<[f32; 4]> = (0..n)
        .map(|k| {
            let (x, y) = ((k % per_row) as f32 * cell, (k / per_row) as f32 * cell);
            [x + 0.1 * cell, y + 0.1 * cell, x + 0.9 * cell, y + 0.9 * cell].map(f32::round)
        })
        .collect();
    let labels = (0..n).map(|k| (i * n + k) % classes).collect();
    let mut t = Instances::targets(boxes.clone(), labels);
    if masks {
        let rasterise = |b: &[f32; 4]| {
            let xywh = [b[0], b[1], b[2] - b[0], b[3] - b[1]].map(f64::from);
            rtmdet::structures::mask::from_bbox(xywh, s, s)
        };
        t.masks = boxes.iter().map(rasterise).collect::<Result<_, _>>()?;
    }
    Ok(t)
}
