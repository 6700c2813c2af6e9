//! Arguments shared by the subcommands that run a detector (`predict`, `val`): which weights,
//! which device and which engine. One struct, flattened into each.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use rtmdet::engine::cpu::CpuOptions;
use rtmdet::engine::{EngineKind, parse_device};
use rtmdet::weights::{ReadOptions, hub};
use rtmdet::{Detector, LoadOptions, Size};

#[derive(Args, Clone, Debug)]
pub struct DetectorArgs {
    /// Weights: an OpenMMLab .pth, our .safetensors, or a BN-folded ONNX export.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Official model name (rtmdet-tiny, -s, -m, -l, -x, -nano): downloaded when no --weights
    /// is given, otherwise the size the weights must have.
    #[arg(long)]
    pub model: Option<String>,
    /// Override the box decoding: distances are exp(raw)*stride (true) or raw*stride (false).
    #[arg(long)]
    pub exp_on_reg: Option<bool>,
    /// cpu, or cuda[:N] in CUDA builds.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// auto (the fused CPU engine on CPU, burn on GPU), cpu, or burn.
    #[arg(long, default_value = "auto")]
    pub engine: String,
}

impl DetectorArgs {
    /// Loads the detector the arguments name.
    pub fn load(&self) -> Result<Detector> {
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        let device = parse_device(&self.device)?;
        let engine = EngineKind::parse(&self.engine)?;
        let cpu = CpuOptions { threads: self.threads, ..Default::default() };
        let size = self.model.as_deref().map(Size::parse).transpose()?;
        let path = match (&self.weights, &self.model) {
            (Some(w), _) => w.clone(),
            (None, Some(m)) => hub::fetch(&hub::find(m)?)?,
            (None, None) => bail!("give --weights FILE or --model NAME (e.g. --model rtmdet-tiny)"),
        };
        let read = ReadOptions { size, exp_on_reg: self.exp_on_reg };
        let opts = LoadOptions { read, device: Some(device), engine, cpu };
        Ok(Detector::load(&path, &opts)?)
    }
}
