//! `rtmdet`: a thin command-line shell over the `rtmdet` library.

mod eval;
mod predict;
mod sources;
mod val;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rtmdet", version, about = "RTMDet real-time object detection: predict, val, eval")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects in images or folders of images.
    Predict(predict::PredictArgs),
    /// Evaluate a model on a dataset (COCO mAP, per-class AP, plots).
    Val(val::ValArgs),
    /// Score a COCO results file against COCO ground truth, as pycocotools does.
    Eval(eval::EvalArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Val(args) => val::run(args),
        Command::Eval(args) => eval::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
