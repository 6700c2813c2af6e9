//! The library entry point: load weights of any supported kind, run images through
//! preprocessing → engine → post-processing, get [`Instances`] in original-image pixels.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;

use crate::config::{ModelConfig, Task};
use crate::engine::cpu::{CpuEngine, CpuOptions};
use crate::engine::{Engine, EngineKind};
use crate::error::{Error, Result};
use crate::image_io::BgrImage;
use crate::model::{Graph, HeadOutputs};
use crate::postprocess::{DetectParams, postprocess};
use crate::preprocess::{Letterbox, letterbox, normalize_into};
use crate::structures::Instances;
use crate::weights::{self, ReadOptions, TensorMap};

/// How to load and run a weights file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Size and decoding overrides (otherwise recognised from the file).
    pub read: ReadOptions,
    /// The burn device to run on (default: the best available).
    pub device: Option<Device>,
    /// Which code runs the network (default: the CPU engine on a CPU device).
    pub engine: EngineKind,
    /// Threads and instruction set of the CPU engine.
    pub cpu: CpuOptions,
}

/// A ready-to-run detector: a configuration, its weights and one engine.
pub struct Detector {
    config: ModelConfig,
    graph: Arc<Graph>,
    /// Exactly the graph's tensors, by checkpoint name (what [`Detector::save`] writes).
    weights: TensorMap,
    device: Device,
    engine: Box<dyn Engine>,
    /// Post-processing thresholds used by [`Detector::predict`].
    pub params: DetectParams,
    /// RTMDet-Ins: a pixel is foreground where `sigmoid(logit) > mask_thr` (0.5).
    pub mask_thr: f32,
    /// Network input side (square), `config.input_size` unless changed.
    pub input_size: usize,
}

/// How [`Detector::predict_sliced`] slices an image and merges the slices.
#[derive(Clone, Copy, Debug)]
pub struct Slicing {
    /// Slice side in pixels.
    pub size: usize,
    /// Overlap of neighbouring slices in pixels (less than `size`).
    pub overlap: usize,
    /// Slices per forward pass.
    pub batch: usize,
    /// Also detect on the whole image at the input size.
    pub full_image: bool,
    pub merge: crate::postprocess::merge::SliceMerge,
}

impl Slicing {
    /// `size` slices overlapping by `overlap`, one per pass, merged by NMS.
    pub fn new(size: usize, overlap: usize) -> Self {
        Slicing { size, overlap, batch: 1, full_image: false, merge: Default::default() }
    }
}

impl Detector {
    /// Loads weights with everything inferred (format, size, classes, decoding).
    pub fn from_checkpoint(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(path.as_ref(), &LoadOptions::default())
    }

    /// The default model built into the library (RTMPose's RTMDet-nano person detector,
    /// [`weights::embedded`]) on the engine and device `opts` name.
    pub fn embedded(opts: &LoadOptions) -> Result<Self> {
        let (config, map) = weights::embedded::nano_person()?;
        Self::with_engine(config, map, opts.device.clone().unwrap_or_default(), opts.engine, opts.cpu)
    }

    /// Official weights by model name (`rtmdet-tiny`, ...), downloaded once into the cache.
    pub fn from_pretrained(name: &str) -> Result<Self> {
        let official = weights::hub::find(name)?;
        let path = weights::hub::fetch(&official)?;
        let read = ReadOptions { size: Some(official.size), ..Default::default() };
        Self::load(&path, &LoadOptions { read, ..Default::default() })
    }

    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let (config, map, record) = weights::read_with_record(path, &opts.read)?;
        let device = opts.device.clone().unwrap_or_default();
        let mut det = Self::with_engine(config, map, device, opts.engine, opts.cpu).map_err(|e| match e {
            Error::Weights { .. } => e,
            other => Error::weights(path, other),
        })?;
        // An end-to-end export of ours carries its thresholds: predict with the same ones.
        if let Some(json) = record {
            let info = crate::export::ExportInfo::from_record(&json, path)?;
            if info.options.mode == crate::export::Mode::End2end {
                det.params = info.options.params;
            }
        }
        Ok(det)
    }

    /// The detector of `config` with the tensors of `map` on the default engine of `device`.
    pub fn from_tensors(config: ModelConfig, map: &TensorMap, device: Device) -> Result<Self> {
        Self::with_engine(config, map.clone(), device, EngineKind::Auto, CpuOptions::default())
    }

    /// The detector of `config` with the tensors of `map` (strict: every tensor must fit,
    /// none may be left over) on the chosen engine.
    pub fn with_engine(
        config: ModelConfig,
        map: TensorMap,
        device: Device,
        engine: EngineKind,
        cpu: CpuOptions,
    ) -> Result<Self> {
        let graph = Graph::new(&config)?;
        let weights = weights::check(&graph, map)?;
        let engine = engine.build(&graph, &weights, &device, cpu)?;
        let (input_size, params) = (config.input_size, DetectParams::for_task(config.task));
        Ok(Detector { config, graph, weights, device, engine, params, mask_thr: 0.5, input_size })
    }

    /// Replaces the engine (the weights stay).
    pub fn set_engine(&mut self, engine: EngineKind, opts: CpuOptions) -> Result<()> {
        self.engine = engine.build(&self.graph, &self.weights, &self.device, opts)?;
        Ok(())
    }

    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// The CPU engine, when it runs inference.
    pub fn cpu_engine(&self) -> Option<&CpuEngine> {
        self.engine.as_cpu()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// The tensors by checkpoint name.
    pub fn weights(&self) -> &TensorMap {
        &self.weights
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Saves in the project's own format (safetensors + config), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        weights::safetensors::save(path, &self.config, &self.weights)
    }

    /// Runs the engine on normalised inputs of shape `dims` = `[N, 3, H, W]`, given as a flat
    /// NCHW buffer.
    pub fn forward(&self, input: &[f32], dims: [usize; 4]) -> Result<HeadOutputs> {
        let [_, c, h, w] = dims;
        if c != 3 || h == 0 || w == 0 || !h.is_multiple_of(32) || !w.is_multiple_of(32) {
            return Err(Error::Config(format!(
                "network input {dims:?} must be [N, 3, H, W] with H, W multiples of 32"
            )));
        }
        if input.len() != dims.iter().product::<usize>() {
            return Err(Error::Config(format!("{} input values for shape {dims:?}", input.len())));
        }
        Ok(self.engine.forward(input, dims))
    }

    /// Detections for one image, in its pixels, best first.
    pub fn predict(&self, image: &BgrImage) -> Result<Instances> {
        Ok(self.predict_batch(std::slice::from_ref(image))?.remove(0))
    }

    /// Several images in one forward pass; identical to calling [`Detector::predict`] on each.
    pub fn predict_batch(&self, images: &[BgrImage]) -> Result<Vec<Instances>> {
        self.predict_batch_with(images, &self.params)
    }

    /// [`Detector::predict_batch`] with explicit thresholds.
    pub fn predict_batch_with(&self, images: &[BgrImage], params: &DetectParams) -> Result<Vec<Instances>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        self.check_input_size()?;
        let (input, boxes) = self.preprocess(images);
        let s = self.input_size;
        let outputs = self.forward(&input, [images.len(), 3, s, s])?;
        Ok(self.postprocess(&outputs, &boxes, params))
    }

    /// Detections for a large image by the DOTA patch scheme: windows of `size` overlapping by
    /// `overlap` (mmrotate's `img_split` windows, edge patches padded with (104, 116, 124)),
    /// `batch` patches per forward pass, each patch's detections moved to the image, with
    /// `full_image` also the whole image at the input size (for objects larger than a slice),
    /// and everything merged: class-aware NMS at the detector's IoU threshold (rotated NMS 0.1
    /// for RTMDet-R, as mmrotate's merge) or weighted box fusion. RTMDet-Ins masks move into
    /// the image with their boxes and survive with them.
    pub fn predict_sliced(&self, image: &BgrImage, s: &Slicing) -> Result<Instances> {
        use crate::data::split::{SplitSettings, crop, windows};
        use crate::postprocess::merge::{self, SliceMerge};
        if s.size == 0 || s.overlap >= s.size {
            return Err(Error::Config(format!("slice size {} must exceed the overlap {}", s.size, s.overlap)));
        }
        if s.merge == SliceMerge::Wbf && self.config.task == Task::Rotated {
            return Err(Error::Config(
                "weighted box fusion merges axis-aligned boxes; rotated slices merge by rotated NMS".into(),
            ));
        }
        let pad = SplitSettings::default().padding;
        let wins = windows(image.width, image.height, &[(s.size, s.overlap)], SplitSettings::default().img_rate_thr);
        let mut parts = Vec::with_capacity(wins.len() + 1);
        for chunk in wins.chunks(s.batch.max(1)) {
            let crops: Vec<BgrImage> = chunk.iter().map(|w| crop(image, w, pad)).collect();
            for (w, mut set) in chunk.iter().zip(self.predict_batch(&crops)?) {
                merge::translate(&mut set, w[0] as f32, w[1] as f32);
                merge::translate_masks(&mut set, (w[0], w[1]), image.height, image.width)?;
                parts.push(set);
            }
        }
        if s.full_image {
            parts.push(self.predict(image)?);
        }
        let mut merged = match s.merge {
            SliceMerge::Nms => merge::merge_sets(&parts, self.params.iou_thr),
            SliceMerge::Wbf => merge::fuse_sets(&parts, self.params.iou_thr),
        };
        merged.truncate(self.params.max_det);
        Ok(merged)
    }

    /// The network input side must be a positive multiple of 32 (the coarsest stride).
    pub fn check_input_size(&self) -> Result<()> {
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return Err(Error::Config(format!("input size {} must be a positive multiple of 32", self.input_size)));
        }
        Ok(())
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

    /// Post-processing of a batch of head outputs, one letterbox per image, on the engine's
    /// threads.
    pub fn postprocess(
        &self,
        outputs: &HeadOutputs,
        letterboxes: &[Letterbox],
        params: &DetectParams,
    ) -> Vec<Instances> {
        let clip = Some((self.input_size, self.input_size));
        let (task, mask_thr, side) = (self.config.task, self.mask_thr, self.input_size);
        let one = |(b, lb): (usize, &Letterbox)| match task {
            Task::Rotated => crate::postprocess::rotated::postprocess(outputs, b, params, Some(lb)),
            Task::Segment => {
                crate::postprocess::masks::postprocess(outputs, b, params, (side, side), Some(lb), mask_thr)
            }
            Task::Detect => postprocess(outputs, b, params, clip, Some(lb)),
        };
        let each = || letterboxes.iter().enumerate().map(one).collect();
        match self.engine.thread_pool() {
            Some(pool) => pool.install(each),
            None => each(),
        }
    }
}
