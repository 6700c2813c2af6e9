//! `rtmdet`: a thin command-line shell over the `rtmdet` library.

mod predict;
mod sources;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rtmdet",
    version,
    about = "RTMDet real-time object detection: predict, and more to come"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects in images or folders of images.
    Predict(predict::PredictArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Predict(args) => predict::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
