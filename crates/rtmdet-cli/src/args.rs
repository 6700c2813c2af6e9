//! Arguments shared by the subcommands: the detector to load ([`DetectorArgs`], flattened into
//! `predict` and `val`) and the one validation layer for numeric flags (the `value_parser`
//! functions below), so every subcommand accepts the same ranges and says them when a value is
//! outside.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use rtmdet::engine::cpu::{CpuOptions, default_threads};
use rtmdet::engine::{EngineKind, parse_device};
use rtmdet::weights::{ReadOptions, hub};
use rtmdet::{DetectParams, Detector, LoadOptions, Size};

#[derive(Args, Clone, Debug)]
pub struct DetectorArgs {
    /// Weights: an OpenMMLab .pth, our .safetensors, or an ONNX export (ours or mmdeploy's
    /// BN-folded one). Without --weights and --model: the embedded RTMDet-nano person detector.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Official model name (rtmdet-tiny, -s, -m, -l, -x, -nano): downloaded when no --weights
    /// is given, otherwise the size the weights must have.
    #[arg(long)]
    pub model: Option<String>,
    /// Override the box decoding: distances are exp(raw)*stride (true) or raw*stride (false).
    #[arg(long)]
    pub exp_on_reg: Option<bool>,
    /// cpu; cuda[:N] in CUDA builds; wgpu[:N|:cpu] / vulkan[:N|:cpu] in wgpu / Vulkan builds.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads (default: all cores; at most 4 × the cores).
    #[arg(long, value_parser = threads, allow_negative_numbers = true)]
    pub threads: Option<usize>,
    /// auto (the fused CPU engine on CPU, burn on GPU), cpu, or burn.
    #[arg(long, default_value = "auto")]
    pub engine: String,
}

impl DetectorArgs {
    /// Loads the detector the arguments name.
    pub fn load(&self) -> Result<Detector> {
        let device = parse_device(&self.device)?;
        let engine = EngineKind::parse(&self.engine)?;
        let cpu = CpuOptions { threads: self.threads, ..Default::default() };
        let size = self.model.as_deref().map(Size::parse).transpose()?;
        let read = ReadOptions { size, exp_on_reg: self.exp_on_reg };
        let opts = LoadOptions { read, device: Some(device), engine, cpu };
        let path = match (&self.weights, &self.model) {
            (Some(w), _) => w.clone(),
            (None, Some(m)) => hub::fetch(&hub::find(m)?)?,
            (None, None) => {
                eprintln!(
                    "no --weights or --model: using the embedded RTMDet-nano person detector (RTMPose, \
                     Apache-2.0); --model rtmdet-tiny (or -s, -m, -l, -x) downloads a COCO detector"
                );
                return Ok(Detector::embedded(&opts)?);
            }
        };
        Ok(Detector::load(&path, &opts)?)
    }
}

// The images a command reads (`predict`, `track`): files, folders, globs and lists
// (`sources::expand`). Not doc comments on these structs: clap would show them as the
// subcommand's description.
#[derive(Args, Clone, Debug)]
pub struct SourceArgs {
    /// Images, videos (H.264 MP4/MOV built in; other formats through an installed FFmpeg),
    /// folders of them, glob patterns (quoted: "imgs/*.jpg", "**/*.png"), `.txt` files listing
    /// paths (one per line, relative to the list's folder), camera numbers (0) and stream URLs
    /// (rtsp://, rtmp://, http(s)://).
    #[arg(required_unless_present = "source")]
    pub sources: Vec<PathBuf>,
    /// A source given by flag (as Ultralytics' `source=`), e.g. `--source 0` for the first
    /// webcam; may be repeated, and mixed with positional sources.
    #[arg(long = "source", value_name = "SOURCE")]
    pub source: Vec<PathBuf>,
    /// Also take the images and videos in the subfolders of folder sources.
    #[arg(long)]
    pub recursive: bool,
}

impl SourceArgs {
    /// The sources, positional first, expanded into images and videos.
    pub fn expand(&self) -> Result<crate::sources::Expanded> {
        let all: Vec<PathBuf> = self.sources.iter().chain(&self.source).cloned().collect();
        crate::sources::expand(&all, self.recursive)
    }
}

// What a command that draws and reports writes (`predict`, `track`).
#[derive(Args, Clone, Debug)]
pub struct OutputArgs {
    /// Run folder for the annotated images (default: runs/<command>/<n>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the results to this JSON file (`track`: JSON Lines), a new file unless --exist-ok.
    #[arg(long)]
    pub save_json: Option<PathBuf>,
    /// Replace existing output files (by default rtmdet refuses to overwrite a file).
    #[arg(long)]
    pub exist_ok: bool,
    /// Do not write annotated images.
    #[arg(long)]
    pub no_draw: bool,
}

// Post-processing thresholds (`predict`, `export`); each defaults to the task's deployment
// setting (the loaded detector's: for an end-to-end export, the thresholds it carries). Not a
// doc comment: clap would show it as the subcommand's description.
#[derive(Args, Clone, Debug)]
pub struct ThresholdArgs {
    /// Minimum score of a detection [default: 0.3; rotated models 0.05].
    #[arg(long, value_parser = unit_interval, allow_negative_numbers = true)]
    pub conf: Option<f32>,
    /// NMS IoU threshold [default: 0.65; instance segmentation 0.6; rotated models 0.1].
    #[arg(long, value_parser = unit_interval, allow_negative_numbers = true)]
    pub iou: Option<f32>,
    /// Candidates kept per pyramid level before NMS [default: 1000; rotated models 2000].
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    pub nms_pre: Option<usize>,
    /// Maximum detections per image [default: 100; rotated models 2000].
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    pub max_det: Option<usize>,
}

impl ThresholdArgs {
    /// `defaults` with the flags given applied.
    pub fn over(&self, defaults: DetectParams) -> DetectParams {
        DetectParams {
            score_thr: self.conf.unwrap_or(defaults.score_thr),
            nms_pre: self.nms_pre.unwrap_or(defaults.nms_pre),
            iou_thr: self.iou.unwrap_or(defaults.iou_thr),
            max_det: self.max_det.unwrap_or(defaults.max_det),
        }
    }
}

/// Bytes per network-input pixel that inference needs at its peak: the 3-channel f32 input
/// times the activations alive at once (measured: tiny at 640 peaks near 30× its input; 64×
/// leaves room for the larger sizes).
pub const INFER_BYTES_PER_PIXEL: u64 = 3 * 4 * 64;
/// The same for a training step, which keeps every activation for the backward pass
/// (measured: tiny peaks at 1.4 KB per input pixel in `bench train`). Larger models need more,
/// so this refuses only what cannot fit even for tiny, never a run that could.
pub const TRAIN_BYTES_PER_PIXEL: u64 = 1536;

/// Physical memory of this machine (Linux `MemTotal`), 16 GiB where unknown.
pub fn memory_bytes() -> u64 {
    let from_meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    });
    from_meminfo.map_or(16 << 30, |kib| kib * 1024)
}

/// The largest image size (a multiple of 32) whose inference fits in this machine's memory.
pub fn max_imgsz() -> usize {
    largest_imgsz(INFER_BYTES_PER_PIXEL)
}

/// The largest image size (a multiple of 32) of which one image fits in this machine's memory
/// at `bytes_per_pixel` (32 at least: no smaller size exists).
fn largest_imgsz(bytes_per_pixel: u64) -> usize {
    let side = ((memory_bytes() / bytes_per_pixel) as f64).sqrt() as usize;
    (side / 32 * 32).max(32)
}

/// Refuses a batch of `batch` images of `imgsz`² pixels that would not fit in memory at
/// `bytes_per_pixel`, instead of letting the allocator abort the process; the message names
/// the setting to try instead.
pub fn check_memory(batch: usize, imgsz: usize, bytes_per_pixel: u64, what: &str) -> Result<()> {
    let per_image = (imgsz as u128).pow(2) * bytes_per_pixel as u128;
    let need = batch as u128 * per_image;
    let have = memory_bytes() as u128;
    if need > have {
        // The same estimate, solved for the batch: what fits is the user's next try.
        let fits = have / per_image;
        let instead = if fits >= 1 {
            format!("try --batch {fits} (the largest that fits at image size {imgsz}) or a smaller --imgsz")
        } else {
            format!(
                "not even one image fits at this size; try --imgsz {} (the largest that fits at batch 1)",
                largest_imgsz(bytes_per_pixel)
            )
        };
        bail!(
            "{what} at batch {batch} and image size {imgsz} needs about {:.1} GiB, more than this machine's {:.1} GiB; \
             {instead}",
            need as f64 / (1u64 << 30) as f64,
            have as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

fn integer(s: &str) -> Result<i128, String> {
    s.trim().parse::<i128>().map_err(|_| format!("'{s}' is not a whole number"))
}

fn number(s: &str) -> Result<f64, String> {
    let v = s.trim().parse::<f64>().map_err(|_| format!("'{s}' is not a number"))?;
    if !v.is_finite() {
        return Err(format!("{s} is not a finite number"));
    }
    Ok(v)
}

/// A whole number ≥ 1 (batch sizes, counts, iterations).
pub fn positive(s: &str) -> Result<usize, String> {
    let v = integer(s)?;
    if v < 1 || v > u32::MAX as i128 {
        return Err(format!("must be a whole number from 1 to {}", u32::MAX));
    }
    Ok(v as usize)
}

/// A whole number ≥ 0 (offsets, optional counts where 0 means none).
pub fn non_negative(s: &str) -> Result<usize, String> {
    let v = integer(s)?;
    if v < 0 || v > u32::MAX as i128 {
        return Err(format!("must be a whole number from 0 to {}", u32::MAX));
    }
    Ok(v as usize)
}

/// A network input size: a positive multiple of 32 (the largest stride) that fits in memory.
pub fn imgsz(s: &str) -> Result<usize, String> {
    let max = max_imgsz();
    let v = integer(s)?;
    if v < 32 || v % 32 != 0 || v > max as i128 {
        return Err(format!(
            "must be a multiple of 32 from 32 to {max} (the largest whose inference fits in this machine's {} GiB)",
            memory_bytes() >> 30
        ));
    }
    Ok(v as usize)
}

/// A slice (window) size in pixels: 0 (no slicing) or up to the largest image size.
pub fn slice_size(s: &str) -> Result<usize, String> {
    let max = max_imgsz();
    let v = integer(s)?;
    if v < 0 || v > max as i128 {
        return Err(format!("must be 0 (no slicing) or a size up to {max} pixels"));
    }
    Ok(v as usize)
}

/// The overlap of neighbouring slices: a fraction of the slice size, or pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Overlap {
    Fraction(f64),
    Pixels(usize),
}

impl Overlap {
    /// The overlap in pixels between slices of `size` pixels. A fraction rounds down, so it
    /// always stays below the slice size.
    pub fn pixels(self, size: usize) -> usize {
        match self {
            Overlap::Fraction(f) => (f * size as f64).floor() as usize,
            Overlap::Pixels(p) => p,
        }
    }
}

/// A slice overlap: a number below 1 is a fraction of the slice size (0.2 = 20 %), from 1 on
/// a whole number of pixels (so the pixel default of rotated models keeps its meaning).
pub fn slice_overlap(s: &str) -> Result<Overlap, String> {
    const RANGE: &str = "must be a fraction of the slice size from 0 to below 1 (0.2 = 20 %) or whole pixels";
    let v = number(s)?;
    if v < 0.0 {
        return Err(RANGE.into());
    }
    if v < 1.0 {
        return Ok(Overlap::Fraction(v));
    }
    if v.fract() != 0.0 || v > u32::MAX as f64 {
        return Err(format!("{RANGE} (from 1 to {})", u32::MAX));
    }
    Ok(Overlap::Pixels(v as usize))
}

/// A CPU thread count: 1 to 4 × the cores (more only slows down: the threads time-share).
pub fn threads(s: &str) -> Result<usize, String> {
    let max = 4 * default_threads();
    let v = integer(s)?;
    if v < 1 || v > max as i128 {
        return Err(format!("must be from 1 to {max} (4 × the {} cores of this machine)", default_threads()));
    }
    Ok(v as usize)
}

/// A score or IoU threshold in [0, 1].
pub fn unit_interval(s: &str) -> Result<f32, String> {
    let v = number(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err("must be a number from 0 to 1".into());
    }
    Ok(v as f32)
}

/// An IoU threshold of a match in (0, 1] (0 would match everything).
pub fn match_iou(s: &str) -> Result<f32, String> {
    let v = number(s)?;
    if !(v > 0.0 && v <= 1.0) {
        return Err("must be a number above 0 and at most 1".into());
    }
    Ok(v as f32)
}

/// A fraction in [0, 1], as f64.
pub fn fraction(s: &str) -> Result<f64, String> {
    unit_interval(s).and_then(|_| number(s))
}

/// A finite number above 0 (learning rates, scales).
pub fn positive_number(s: &str) -> Result<f64, String> {
    let v = number(s)?;
    if v <= 0.0 {
        return Err("must be a finite number above 0".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_enforced_and_named() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").unwrap_err().contains("from 1"));
        assert!(positive("-2").is_err());
        assert!(positive("1.5").unwrap_err().contains("whole number"));
        assert_eq!(imgsz("640"), Ok(640));
        for bad in ["0", "100", "-32", "100000"] {
            assert!(imgsz(bad).unwrap_err().contains("multiple of 32"), "{bad}");
        }
        assert_eq!(unit_interval("0.25"), Ok(0.25));
        for bad in ["-0.5", "2", "NaN", "inf"] {
            assert!(unit_interval(bad).is_err(), "{bad}");
        }
        assert!(match_iou("0").is_err());
        assert_eq!(slice_overlap("0.2"), Ok(Overlap::Fraction(0.2)));
        assert_eq!(slice_overlap("0.2").unwrap().pixels(640), 128);
        assert_eq!(slice_overlap("0.999").unwrap().pixels(1), 0);
        assert_eq!(slice_overlap("200"), Ok(Overlap::Pixels(200)));
        for bad in ["-0.1", "1.5", "1e20"] {
            assert!(slice_overlap(bad).unwrap_err().contains("fraction of the slice size"), "{bad}");
        }
        assert!(slice_overlap("NaN").unwrap_err().contains("not a finite number"));
        assert!(threads("0").is_err());
        assert!(threads("1000000").unwrap_err().contains("cores"));
        assert!(positive_number("0").is_err());
        assert!(positive_number("NaN").is_err());
        assert_eq!(fraction("0.7"), Ok(0.7));
    }

    #[test]
    fn memory_check_refuses_impossible_batches() {
        assert!(check_memory(1, 640, INFER_BYTES_PER_PIXEL, "inference").is_ok());
        let e = check_memory(1_000_000, 640, INFER_BYTES_PER_PIXEL, "inference").unwrap_err().to_string();
        assert!(e.contains("GiB"), "{e}");
        // The batch it suggests is the largest that fits, by the same estimate.
        let fits: usize = e.split("try --batch ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
        assert!(check_memory(fits, 640, INFER_BYTES_PER_PIXEL, "inference").is_ok());
        assert!(check_memory(fits + 1, 640, INFER_BYTES_PER_PIXEL, "inference").is_err());
        // Not even one image: the image size to try instead, which fits.
        let huge = largest_imgsz(TRAIN_BYTES_PER_PIXEL) + 32;
        let e = check_memory(1, huge, TRAIN_BYTES_PER_PIXEL, "a training step").unwrap_err().to_string();
        assert!(e.contains(&format!("try --imgsz {}", huge - 32)), "{e}");
        assert!(check_memory(1, huge - 32, TRAIN_BYTES_PER_PIXEL, "a training step").is_ok());
    }
}
