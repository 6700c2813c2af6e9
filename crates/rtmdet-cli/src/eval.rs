//! `rtmdet eval`: score a COCO results file against COCO ground truth.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rtmdet::eval::coco::evaluate;
use rtmdet::eval::coco_files::{read_ground_truth, read_results};
use rtmdet::weights::safetensors::write_atomically;

#[derive(Args)]
pub struct EvalArgs {
    /// COCO ground-truth JSON.
    #[arg(long)]
    pub gt: PathBuf,
    /// COCO results JSON: `[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`.
    #[arg(long)]
    pub pred: PathBuf,
    /// Also write the 12 numbers as JSON (`{"AP": .., "AP50": .., ...}`).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let gt = read_ground_truth(&args.gt)?;
    let dets = read_results(&args.pred)?;
    let t = std::time::Instant::now();
    let e = evaluate(&gt, &dets)?;
    eprintln!(
        "{} images, {} detections evaluated in {:.2} s",
        gt.image_ids.len(),
        dets.len(),
        t.elapsed().as_secs_f64()
    );
    print!("{}", e.summary());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&e.stats_json())?;
        write_atomically(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
