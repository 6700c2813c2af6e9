//! `rtmdet dota-split`: large aerial images → overlapping patches with their annotation
//! files, as mmrotate's `img_split.py` writes them (`images/` and `annfiles/` under `--out`).

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Result, bail};
use clap::Args;
use rayon::prelude::*;
use rtmdet::data::dota::{images_by_stem, labels_by_stem, read_label_file};
use rtmdet::data::split::{SplitSettings, split_image};

use crate::args;

#[derive(Args)]
pub struct SplitArgs {
    /// Folder of source images.
    #[arg(long)]
    pub images: PathBuf,
    /// Folder of DOTA labelTxt files (omit to split images only, as for a test set).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Output folder (must not exist or be empty): `images/` and `annfiles/` are written inside.
    #[arg(long)]
    pub out: PathBuf,
    /// Window sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1024", value_parser = args::positive, allow_negative_numbers = true)]
    pub size: Vec<usize>,
    /// Overlap between neighbouring windows, one per size.
    #[arg(long, value_delimiter = ',', default_value = "200", value_parser = args::non_negative, allow_negative_numbers = true)]
    pub gap: Vec<usize>,
    /// Scales: a rate r uses windows of size/r (mmrotate's multi-scale `ms_*` settings use
    /// 0.5,1.0,1.5).
    #[arg(long, value_delimiter = ',', default_value = "1.0", value_parser = args::positive_number, allow_negative_numbers = true)]
    pub rates: Vec<f64>,
    /// Keep a window when the image covers more than this fraction of it.
    #[arg(long, default_value_t = 0.6, value_parser = args::fraction, allow_negative_numbers = true)]
    pub img_rate_thr: f64,
    /// Give an object to a window when at least this fraction of it lies inside.
    #[arg(long, default_value_t = 0.7, value_parser = args::fraction, allow_negative_numbers = true)]
    pub iof_thr: f64,
    /// Padding colour of edge patches, B,G,R.
    #[arg(long, value_delimiter = ',', default_value = "104,116,124", allow_negative_numbers = true)]
    pub padding: Vec<u8>,
    /// Leave edge patches smaller than the window instead of padding them.
    #[arg(long)]
    pub no_padding: bool,
}

pub fn run(args: SplitArgs) -> Result<()> {
    if args.padding.len() != 3 {
        bail!("--padding takes three values B,G,R");
    }
    if !(0.0..=1.0).contains(&args.iof_thr) || !(0.0..=1.0).contains(&args.img_rate_thr) {
        bail!("--iof-thr and --img-rate-thr must be between 0 and 1");
    }
    if args.out.exists() && !args.out.is_dir() {
        bail!("--out {} is a file; give a new folder", args.out.display());
    }
    if args.out.exists() && std::fs::read_dir(&args.out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; give a new --out folder", args.out.display());
    }
    let settings = SplitSettings {
        sizes: args.size.clone(),
        gaps: args.gap.clone(),
        rates: args.rates.clone(),
        img_rate_thr: args.img_rate_thr,
        iof_thr: args.iof_thr,
        padding: (!args.no_padding).then(|| [args.padding[0], args.padding[1], args.padding[2]]),
    };
    let too_large = settings.window_sizes()?.into_iter().map(|(s, _)| s).find(|&s| s > args::max_imgsz());
    if let Some(s) = too_large {
        bail!(
            "a window of {s} pixels (--size / --rates) is larger than the {} this machine can hold",
            args::max_imgsz()
        );
    }
    let images = images_by_stem(&args.images)?;
    if images.is_empty() {
        bail!("no images in {}", args.images.display());
    }
    let labels = match &args.labels {
        Some(d) => labels_by_stem(d)?,
        None => Default::default(),
    };
    std::fs::create_dir_all(args.out.join("images"))?;
    std::fs::create_dir_all(args.out.join("annfiles"))?;

    let bar = indicatif::ProgressBar::new(images.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "split {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
    )?);
    let warnings = Mutex::new(Vec::new());
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let warn = |m: String| warnings.lock().expect("not poisoned").push(m);
    let totals: Vec<(usize, usize)> = images
        .par_iter()
        .map(|(stem, path)| {
            let result = (|| -> Result<(usize, usize)> {
                let rows = match labels.get(stem) {
                    Some(lp) => {
                        let (rows, bad) = read_label_file(lp)?;
                        bad.into_iter().for_each(&warn);
                        rows
                    }
                    None => {
                        if args.labels.is_some() {
                            warn(format!("{stem}: no label file, split without objects"));
                        }
                        Vec::new()
                    }
                };
                let img = rtmdet::image_io::read_image(path)?;
                let (patches, skipped) = split_image(stem, &img, &rows, &settings, &args.out)?;
                skipped.into_iter().for_each(&warn);
                Ok((patches.len(), patches.iter().map(|p| p.objects).sum()))
            })();
            bar.inc(1);
            result.unwrap_or_else(|e| {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn(format!("{}: {e:#} (skipped)", path.display()));
                (0, 0)
            })
        })
        .collect();
    bar.finish_and_clear();
    let warnings = warnings.into_inner().expect("not poisoned");
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let (patches, objects) = totals.iter().fold((0, 0), |a, t| (a.0 + t.0, a.1 + t.1));
    eprintln!(
        "{} images → {patches} patches with {objects} objects in {} ({} warnings)",
        images.len(),
        args.out.display(),
        warnings.len()
    );
    let failed = failed.into_inner();
    if failed > 0 {
        return Err(crate::exit::Skipped(format!("{failed} of {} images could not be split", images.len())).into());
    }
    Ok(())
}
