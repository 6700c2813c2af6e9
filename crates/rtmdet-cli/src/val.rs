//! `rtmdet val`: the model on a dataset with the evaluation settings, COCO metrics, and a
//! run folder with predictions, metrics and plots.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use rtmdet::DetectParams;
use rtmdet::data::Dataset;
use rtmdet::eval::validate::validate;
use rtmdet::viz::plots;
use rtmdet::weights::safetensors::write_atomically;
use serde_json::json;

use crate::args::DetectorArgs;
use crate::sources;

#[derive(Args)]
pub struct ValArgs {
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Dataset: a COCO .json or an Ultralytics .yaml.
    #[arg(long)]
    pub data: PathBuf,
    /// Split of a YAML dataset.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Images folder of a COCO .json (default: found next to the file).
    #[arg(long)]
    pub images: Option<PathBuf>,
    #[arg(long, default_value_t = 640)]
    pub imgsz: usize,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Run folder (default: runs/val/<n>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: ValArgs) -> Result<()> {
    if args.imgsz == 0 || !args.imgsz.is_multiple_of(32) {
        bail!("--imgsz must be a positive multiple of 32");
    }
    let mut det = args.detector.load()?;
    det.input_size = args.imgsz;
    let data = match &args.images {
        Some(dir) => rtmdet::data::coco::load(&args.data, Some(dir))?,
        None => Dataset::load(&args.data, &args.split)?,
    };
    eprintln!("dataset {}: {}", data.name, data.report);
    if data.images.is_empty() {
        bail!("the dataset has no readable images");
    }
    rtmdet::eval::validate::check_model(&det, &data)?;
    let run_dir = sources::run_dir(args.out.as_deref(), "runs/val")?;

    let bar = indicatif::ProgressBar::new(data.images.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "val {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
    )?);
    let v = validate(&det, &data, &DetectParams::EVAL, args.batch, |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();

    print!("{}", v.eval.summary());
    println!("\n{:>20} {:>8} {:>10} {:>8} {:>8}", "class", "images", "instances", "AP50", "AP");
    let (n_img, n_inst) = (data.images.len(), data.report.annotations);
    println!("{:>20} {:>8} {:>10} {:>8.3} {:>8.3}", "all", n_img, n_inst, v.eval.stats[1], v.eval.stats[0]);
    for c in v.eval.per_class.iter().filter(|c| c.instances > 0) {
        println!("{:>20} {:>8} {:>10} {:>8.3} {:>8.3}", c.name, c.images, c.instances, c.ap50, c.ap);
    }
    println!(
        "Speed: {:.1} ms pre-process, {:.1} ms inference, {:.1} ms post-process per image at {}x{}",
        v.speed.preprocess, v.speed.inference, v.speed.postprocess, det.input_size, det.input_size
    );

    let write = |name: &str, value: &serde_json::Value| -> Result<()> {
        let path = run_dir.join(name);
        write_atomically(&path, serde_json::to_string_pretty(value)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write("predictions.json", &serde_json::to_value(&v.predictions)?)?;
    let mut metrics = v.eval.stats_json();
    metrics["per_class"] = serde_json::to_value(&v.eval.per_class)?;
    metrics["speed_ms"] = serde_json::to_value(v.speed)?;
    metrics["images"] = json!(n_img);
    metrics["instances"] = json!(n_inst);
    write("metrics.json", &metrics)?;
    let names = data.class_names();
    let curves: Vec<(String, Vec<f64>)> = names.iter().cloned().zip(v.eval.pr_curves()).collect();
    plots::pr_curve(&run_dir.join("pr_curve.png"), &curves, v.eval.stats[1])?;
    plots::confusion_matrix(&run_dir.join("confusion_matrix.png"), &v.confusion.matrix, &names)?;
    eprintln!("results saved to {}", run_dir.display());
    Ok(())
}
