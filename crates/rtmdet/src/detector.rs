//! The library entry point: load weights of any supported kind, run images through
//! preprocessing → model → post-processing, get [`Detection`]s in original-image pixels.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::config::{ModelConfig, Size};
use crate::cpu::{CpuModel, CpuOptions};
use crate::error::{Error, Result};
use crate::image_io::BgrImage;
use crate::model::{LevelOutput, RtmDet};
use crate::postprocess::{DetectParams, Detection, LevelMaps, postprocess};
use crate::preprocess::{Letterbox, letterbox, normalize_into};
use crate::weights::{self, TensorMap, VisitWeights};

/// How to interpret a weights file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Restrict/force the size (otherwise recognised from the tensors).
    pub size: Option<Size>,
    /// Override the distance decoding (otherwise from the checkpoint meta or the size).
    pub exp_on_reg: Option<bool>,
    /// The burn device to run on (default: the best available).
    pub device: Option<Device>,
    /// Which code runs the network (default: the CPU engine on a CPU device).
    pub engine: Engine,
    /// Threads and instruction set of the CPU engine.
    pub cpu: CpuOptions,
}

/// Which code runs the network at inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// The CPU engine when the device is the CPU, burn otherwise.
    #[default]
    Auto,
    /// The burn model (training, GPU, reference).
    Burn,
    /// The fused CPU engine ([`crate::cpu`]).
    Cpu,
}

impl Engine {
    pub fn parse(text: &str) -> Result<Engine> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Engine::Auto),
            "burn" => Ok(Engine::Burn),
            "cpu" | "fast" => Ok(Engine::Cpu),
            other => Err(Error::Config(format!("unknown engine '{other}' (expected auto, burn or cpu)"))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    /// OpenMMLab `.pth` (torch zip).
    Pth,
    /// Our safetensors file.
    SafeTensors,
    /// BN-folded ONNX export.
    Onnx,
}

impl WeightsFormat {
    /// By content first (a torch checkpoint is a zip), then by extension.
    pub fn detect(path: &Path) -> Result<Self> {
        let mut head = [0u8; 4];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| Error::weights(path, e))?;
            f.read(&mut head).map_err(|e| Error::weights(path, e))?
        };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        Ok(match ext.as_str() {
            "onnx" => WeightsFormat::Onnx,
            "safetensors" | "st" => WeightsFormat::SafeTensors,
            _ if n == 4 && &head == b"PK\x03\x04" => WeightsFormat::Pth,
            "pth" | "pt" | "ckpt" => WeightsFormat::Pth,
            _ => WeightsFormat::SafeTensors,
        })
    }
}

/// A ready-to-run detector.
pub struct Detector {
    model: RtmDet,
    config: ModelConfig,
    device: Device,
    /// Runs inference instead of `model` when set.
    cpu: Option<CpuModel>,
    /// Post-processing thresholds used by [`Detector::predict`].
    pub params: DetectParams,
    /// Network input side (square), `config.input_size` unless changed.
    pub input_size: usize,
}

impl Detector {
    /// Loads weights with everything inferred (format, size, classes, decoding).
    pub fn from_checkpoint(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(path.as_ref(), &LoadOptions::default())
    }

    /// Official weights by model name (`rtmdet-tiny`, ...), downloaded once into the cache.
    pub fn from_pretrained(name: &str) -> Result<Self> {
        let official = weights::hub::find(name)?;
        let path = weights::hub::fetch(&official)?;
        Self::load(&path, &LoadOptions { size: Some(official.size), ..Default::default() })
    }

    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let (config, map) = read_weights(path, opts)?;
        let device = opts.device.clone().unwrap_or_default();
        let mut det = Self::from_tensors(config, &map, device).map_err(|e| match e {
            Error::Weights { .. } => e,
            other => Error::weights(path, other),
        })?;
        det.set_engine(opts.engine, opts.cpu).map_err(|e| Error::weights(path, e))?;
        Ok(det)
    }

    /// Builds the model of `config` and loads `map` into it (strict: every tensor must fit).
    pub fn from_tensors(config: ModelConfig, map: &TensorMap, device: Device) -> Result<Self> {
        let mut model = RtmDet::new(&config, &device)?;
        weights::load_into(&mut model, map, &device)?;
        Ok(Self::new(model, config, device))
    }

    pub fn new(model: RtmDet, config: ModelConfig, device: Device) -> Self {
        let input_size = config.input_size;
        Detector { model, config, device, cpu: None, params: DetectParams::default(), input_size }
    }

    /// Chooses the inference engine; `Cpu` (or `Auto` on a CPU device) compiles the loaded
    /// model for the CPU engine.
    pub fn set_engine(&mut self, engine: Engine, opts: CpuOptions) -> Result<()> {
        let use_cpu = match engine {
            Engine::Auto => self.device == Device::flex(),
            Engine::Burn => false,
            Engine::Cpu => true,
        };
        self.cpu = None;
        if use_cpu {
            let map = weights::collect(&mut self.model);
            self.cpu = Some(CpuModel::new(&self.config, &map, opts)?);
        }
        Ok(())
    }

    /// The CPU engine, when it runs inference.
    pub fn cpu_engine(&self) -> Option<&CpuModel> {
        self.cpu.as_ref()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn model(&self) -> &RtmDet {
        &self.model
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Saves in the project's own format (safetensors + config), atomically.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let map = weights::collect(&mut self.model);
        weights::own::save(path, &self.config, &map)
    }

    /// Runs the network on normalised inputs of shape `dims` = `[N, 3, H, W]`, given as a
    /// flat NCHW buffer.
    pub fn forward(&self, input: Vec<f32>, dims: [usize; 4]) -> Vec<LevelOutput> {
        let x = Tensor::<4>::from_data(TensorData::new(input, dims), &self.device);
        self.model.forward(x)
    }

    /// Detections for one image, in its pixels, best first.
    pub fn predict(&self, image: &BgrImage) -> Result<Vec<Detection>> {
        Ok(self.predict_batch(std::slice::from_ref(image))?.remove(0))
    }

    /// Several images in one forward pass; identical to calling [`Detector::predict`] on each.
    pub fn predict_batch(&self, images: &[BgrImage]) -> Result<Vec<Vec<Detection>>> {
        self.predict_batch_with(images, &self.params)
    }

    /// [`Detector::predict_batch`] with explicit thresholds.
    pub fn predict_batch_with(&self, images: &[BgrImage], params: &DetectParams) -> Result<Vec<Vec<Detection>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        self.check_input_size()?;
        let (input, boxes) = self.preprocess(images);
        let s = self.input_size;
        let outputs = self.forward_host(input, [images.len(), 3, s, s]);
        Ok(self.postprocess_host(&outputs, &boxes, params))
    }

    /// The network input side must be a positive multiple of 32 (the coarsest stride).
    pub fn check_input_size(&self) -> Result<()> {
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return Err(Error::Config(format!("input size {} must be a positive multiple of 32", self.input_size)));
        }
        Ok(())
    }

    /// Head outputs on the host from whichever engine runs inference.
    pub fn forward_host(&self, input: Vec<f32>, dims: [usize; 4]) -> Vec<HostLevel> {
        match &self.cpu {
            Some(cpu) => cpu.forward(&input, dims),
            None => Self::outputs_to_host(&self.forward(input, dims)),
        }
    }

    /// Letterboxes and normalises images into one NCHW buffer.
    pub fn preprocess(&self, images: &[BgrImage]) -> (Vec<f32>, Vec<Letterbox>) {
        let mut input = Vec::with_capacity(images.len() * 3 * self.input_size * self.input_size);
        let boxes = images
            .iter()
            .map(|img| {
                let (padded, lb) = letterbox(img, self.input_size);
                normalize_into(&padded, &mut input);
                lb
            })
            .collect();
        (input, boxes)
    }

    /// Head outputs copied to the host, per level.
    pub fn outputs_to_host(outputs: &[LevelOutput]) -> Vec<HostLevel> {
        outputs
            .iter()
            .map(|o| HostLevel {
                cls: weights::to_vec(&o.cls),
                reg: weights::to_vec(&o.reg),
                dims: o.cls.dims(),
                stride: o.stride,
            })
            .collect()
    }

    /// Post-processing of a batch of host head outputs, one letterbox per image.
    pub fn postprocess_host(
        &self,
        host: &[HostLevel],
        letterboxes: &[Letterbox],
        params: &DetectParams,
    ) -> Vec<Vec<Detection>> {
        match &self.cpu {
            Some(cpu) => cpu.install(|| self.postprocess_each(host, letterboxes, params)),
            None => self.postprocess_each(host, letterboxes, params),
        }
    }

    fn postprocess_each(
        &self,
        host: &[HostLevel],
        letterboxes: &[Letterbox],
        params: &DetectParams,
    ) -> Vec<Vec<Detection>> {
        letterboxes
            .iter()
            .enumerate()
            .map(|(b, lb)| {
                let levels: Vec<LevelMaps> = host
                    .iter()
                    .map(|l| {
                        let [_, c, h, w] = l.dims;
                        LevelMaps {
                            cls: &l.cls[b * c * h * w..(b + 1) * c * h * w],
                            reg: &l.reg[b * 4 * h * w..(b + 1) * 4 * h * w],
                            height: h,
                            width: w,
                            stride: l.stride,
                        }
                    })
                    .collect();
                postprocess(&levels, params, Some((self.input_size, self.input_size)), Some(lb))
            })
            .collect()
    }
}

/// One level of head outputs on the host: logits and pixel distances, `dims` = `[N, C, H, W]`.
pub struct HostLevel {
    pub cls: Vec<f32>,
    pub reg: Vec<f32>,
    pub dims: [usize; 4],
    pub stride: usize,
}

/// Reads any supported weights file into a configuration and a tensor map.
pub fn read_weights(path: &Path, opts: &LoadOptions) -> Result<(ModelConfig, TensorMap)> {
    if !path.is_file() {
        return Err(Error::weights(path, "no such file"));
    }
    match WeightsFormat::detect(path)? {
        WeightsFormat::Pth => {
            let map = weights::pth::read_state_dict(path)?;
            let meta = weights::pth::read_meta(path);
            let mut cfg = weights::infer::infer_config(&map, opts.size, opts.exp_on_reg.or(meta.exp_on_reg))?;
            if let Some(classes) = meta.classes.filter(|c| c.len() == cfg.num_classes) {
                cfg.class_names = classes;
            }
            Ok((cfg, map))
        }
        WeightsFormat::SafeTensors => {
            let (cfg, map) = weights::own::load(path)?;
            let mut cfg = match cfg {
                Some(c) => c,
                None => weights::infer::infer_config(&map, opts.size, None)?,
            };
            if let Some(e) = opts.exp_on_reg {
                cfg.exp_on_reg = e;
            }
            Ok((cfg, map))
        }
        WeightsFormat::Onnx => {
            let (mut cfg, map) = weights::onnx::import(path, opts.size)?;
            if let Some(e) = opts.exp_on_reg {
                cfg.exp_on_reg = e;
            }
            Ok((cfg, map))
        }
    }
}

/// Lets tests and tools walk the loaded model's tensors.
impl VisitWeights for Detector {
    fn visit_weights<V: weights::ParamVisitor>(&mut self, prefix: &str, v: &mut V) -> Result<()> {
        self.model.visit_weights(prefix, v)
    }
}

/// `cpu` (burn's flex backend) or, in builds with the `cuda` feature, `cuda` / `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    match name.as_str() {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        n if n == "cuda" || n.starts_with("cuda:") => {
            let index = n
                .strip_prefix("cuda:")
                .map_or(Ok(0), |i| i.parse::<usize>())
                .map_err(|_| Error::Config(format!("bad device '{n}'")))?;
            Ok(Device::cuda(index))
        }
        #[cfg(not(feature = "cuda"))]
        n if n.starts_with("cuda") => {
            Err(Error::Config("this build has no CUDA support; rebuild with `--features cuda`".into()))
        }
        other => Err(Error::Config(format!("unknown device '{other}' (expected cpu or cuda[:N])"))),
    }
}
