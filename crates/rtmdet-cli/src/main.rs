//! `rtmdet`: a thin command-line shell over the `rtmdet` library.

mod args;
mod bench;
mod bench_data;
mod bench_video;
mod dota_split;
mod eval;
mod exit;
mod export;
mod interrupt;
mod measure;
mod output;
mod predict;
mod sources;
mod track;
mod train;
mod val;
mod video_job;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rtmdet",
    version,
    about = "RTMDet real-time object detection: predict, track, val, eval, train, export"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects in images, videos, folders, cameras and streams.
    Predict(predict::PredictArgs),
    /// Evaluate a model on a dataset (COCO mAP, per-class AP, plots).
    Val(val::ValArgs),
    /// Score a COCO results file against COCO ground truth, as pycocotools does.
    Eval(eval::EvalArgs),
    /// Train or fine-tune a detector with the full RTMDet recipe.
    Train(train::TrainArgs),
    /// Save augmented training batches of a dataset, without training.
    Browse(train::BrowseArgs),
    /// Measure inference speed (or `bench train`: a training step; `bench data`: the data
    /// pipeline against it).
    Bench(bench::BenchArgs),
    /// Split large aerial images and their DOTA labels into overlapping patches (mmrotate's
    /// img_split).
    DotaSplit(dota_split::SplitArgs),
    Export(export::ExportArgs),
    Track(track::TrackArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Predict(args) => predict::run(args),
        Command::Val(args) => val::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Train(args) => train::run(args),
        Command::Browse(args) => train::browse(args),
        Command::Bench(args) => bench::run(args),
        Command::DotaSplit(args) => dota_split::run(args),
        Command::Export(args) => export::run(args),
        Command::Track(args) => track::run(args),
    };
    if let Err(e) = result {
        let (code, message) = exit::code_and_message(&e);
        eprintln!("{message}");
        std::process::exit(code);
    }
}
