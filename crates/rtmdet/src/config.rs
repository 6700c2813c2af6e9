//! Model configuration. A size is data: every size and variant of RTMDet is one
//! [`ModelConfig`] value, and all channel/block counts are derived from it exactly as
//! mmdetection derives them (spec §1.1).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The named members of the RTMDet family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Tiny,
    S,
    M,
    L,
    X,
    /// RTMPose's depthwise person detector (`rtmdet_nano_320-8xb32_coco-person`).
    Nano,
}

impl Size {
    pub const ALL: [Size; 6] = [Size::Tiny, Size::S, Size::M, Size::L, Size::X, Size::Nano];

    pub fn name(self) -> &'static str {
        match self {
            Size::Tiny => "tiny",
            Size::S => "s",
            Size::M => "m",
            Size::L => "l",
            Size::X => "x",
            Size::Nano => "nano",
        }
    }

    pub fn parse(text: &str) -> Result<Size> {
        let t = text.trim().to_ascii_lowercase();
        let t = t.strip_prefix("rtmdet-").or_else(|| t.strip_prefix("rtmdet_")).unwrap_or(&t);
        Size::ALL.into_iter().find(|s| s.name() == t).ok_or_else(|| {
            Error::Config(format!("unknown model size '{text}' (expected one of tiny, s, m, l, x, nano)"))
        })
    }
}

/// A model name: a size, optionally prefixed `rtmdet-` and, for instance segmentation,
/// `ins-` (`tiny`, `rtmdet-s`, `ins-tiny`, `rtmdet-ins-m`).
pub fn parse_model(text: &str) -> Result<(Task, Size)> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_prefix("rtmdet-").or_else(|| t.strip_prefix("rtmdet_")).unwrap_or(&t);
    match t.strip_prefix("ins-").or_else(|| t.strip_prefix("ins_")) {
        Some(size) => Ok((Task::Segment, Size::parse(size)?)),
        None => Ok((Task::Detect, Size::parse(t)?)),
    }
}

/// What the model predicts. Every task shares the backbone, the neck and the SepBN towers;
/// the task adds predictors to the head and terms to the loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Axis-aligned boxes (RTMDet).
    #[default]
    Detect,
    /// Boxes and instance masks (RTMDet-Ins).
    Segment,
    /// Rotated boxes (RTMDet-R).
    Rotated,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Detect => "detect",
            Task::Segment => "segment",
            Task::Rotated => "rotated",
        }
    }

    /// The terms of the training loss, in the order they are reported (`results.csv` columns,
    /// progress bars and logs are named after them).
    pub fn loss_terms(self) -> &'static [&'static str] {
        match self {
            Task::Detect | Task::Rotated => &["loss_cls", "loss_bbox"],
            Task::Segment => &["loss_cls", "loss_bbox", "loss_mask"],
        }
    }
}

/// Everything needed to build an RTMDet detector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Detection, instance segmentation or rotated boxes.
    #[serde(default)]
    pub task: Task,
    pub size: Size,
    pub deepen_factor: f64,
    pub widen_factor: f64,
    /// Neck output channels = head input and feature channels.
    pub neck_channels: usize,
    pub neck_blocks: usize,
    pub num_classes: usize,
    /// Distances are `exp(raw) * stride` (m/l/x) instead of `raw * stride` (tiny/s).
    pub exp_on_reg: bool,
    /// Depthwise-separable 3x3 convolutions (the "nano" variant).
    pub use_depthwise: bool,
    /// Head tower conv weights shared across levels (BatchNorm stays per level).
    pub share_conv: bool,
    pub stacked_convs: usize,
    /// Square network input side used by the test pipeline.
    pub input_size: usize,
    pub bn_eps: f64,
    pub bn_momentum: f64,
    /// Class names, index = label. Empty means "class_<i>".
    #[serde(default)]
    pub class_names: Vec<String>,
}

/// One CSPNeXt stage: `(in, out, blocks, add_identity, use_spp)` after widen/deepen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_blocks: usize,
    pub add_identity: bool,
    pub use_spp: bool,
}

/// The P5 architecture rows of CSPNeXt before scaling.
const P5_ARCH: [(usize, usize, usize, bool, bool); 4] =
    [(64, 128, 3, true, false), (128, 256, 6, true, false), (256, 512, 6, true, false), (512, 1024, 3, false, true)];

pub const STRIDES: [usize; 3] = [8, 16, 32];

impl ModelConfig {
    /// The official COCO configuration of a size (80 classes, 640 input).
    pub fn new(size: Size) -> Self {
        let (deepen, widen, neck, blocks, exp) = match size {
            Size::Tiny => (0.167, 0.375, 96, 1, false),
            Size::S => (0.33, 0.5, 128, 1, false),
            Size::M => (0.67, 0.75, 192, 2, true),
            Size::L => (1.0, 1.0, 256, 3, true),
            Size::X => (1.33, 1.25, 320, 4, true),
            Size::Nano => (0.33, 0.25, 64, 1, false),
        };
        let nano = size == Size::Nano;
        ModelConfig {
            task: Task::Detect,
            size,
            deepen_factor: deepen,
            widen_factor: widen,
            neck_channels: neck,
            neck_blocks: blocks,
            num_classes: if nano { 1 } else { 80 },
            exp_on_reg: exp,
            use_depthwise: nano,
            share_conv: !nano,
            stacked_convs: 2,
            input_size: if nano { 320 } else { 640 },
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            class_names: if nano {
                vec!["person".to_string()]
            } else {
                crate::classes::COCO.iter().map(|s| s.to_string()).collect()
            },
        }
    }

    /// The official DOTA configuration of a rotated size (RTMDet-R: 15 classes, 1024 input, an
    /// angle predictor on the regression tower).
    pub fn rotated(size: Size) -> Self {
        let mut cfg = ModelConfig::new(size).with_num_classes(crate::classes::DOTA.len());
        cfg.task = Task::Rotated;
        cfg.input_size = 1024;
        cfg.class_names = crate::classes::DOTA.iter().map(|s| s.to_string()).collect();
        cfg
    }

    /// The official COCO configuration of an RTMDet-Ins size: the detection network with a
    /// kernel tower, ReLU distances (never `exp`) and the mask feature module.
    pub fn ins(size: Size) -> Self {
        ModelConfig { task: Task::Segment, exp_on_reg: false, ..ModelConfig::new(size) }
    }

    pub fn with_num_classes(mut self, n: usize) -> Self {
        if n != self.num_classes {
            self.class_names = match n {
                80 => crate::classes::COCO.iter().map(|s| s.to_string()).collect(),
                _ => Vec::new(),
            };
        }
        self.num_classes = n;
        self
    }

    /// `int(c * widen)` as Python computes it.
    pub fn widen(&self, channels: usize) -> usize {
        (channels as f64 * self.widen_factor) as usize
    }

    /// `max(round(n * deepen), 1)` with Python's round-half-to-even.
    pub fn deepen(&self, blocks: usize) -> usize {
        let x = blocks as f64 * self.deepen_factor;
        let r = x.round_ties_even();
        (r as usize).max(1)
    }

    /// Stem widths `(c_half, c_stem)`: `int(64*W // 2)`, `int(64*W)`.
    pub fn stem_channels(&self) -> (usize, usize) {
        let c = 64.0 * self.widen_factor;
        ((c / 2.0).floor() as usize, c as usize)
    }

    pub fn stages(&self) -> [StageSpec; 4] {
        P5_ARCH.map(|(i, o, n, add, spp)| StageSpec {
            in_channels: self.widen(i),
            out_channels: self.widen(o),
            num_blocks: self.deepen(n),
            add_identity: add,
            use_spp: spp,
        })
    }

    /// Channels of the backbone outputs C3, C4, C5 (= neck inputs).
    pub fn neck_in_channels(&self) -> [usize; 3] {
        let s = self.stages();
        [s[1].out_channels, s[2].out_channels, s[3].out_channels]
    }

    pub fn class_name(&self, label: usize) -> String {
        self.class_names.get(label).cloned().unwrap_or_else(|| format!("class_{label}"))
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_classes == 0 {
            return Err(Error::Config("num_classes must be at least 1".into()));
        }
        if !(self.widen_factor > 0.0 && self.deepen_factor > 0.0) {
            return Err(Error::Config("widen and deepen factors must be positive".into()));
        }
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return Err(Error::Config(format!("input size {} must be a positive multiple of 32", self.input_size)));
        }
        if self.use_depthwise && self.share_conv {
            return Err(Error::Config("share_conv requires dense (non-depthwise) head convs".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_channels_match_the_size_table() {
        let tiny = ModelConfig::new(Size::Tiny);
        assert_eq!(tiny.stem_channels(), (12, 24));
        let st = tiny.stages();
        assert_eq!(st.map(|s| s.out_channels), [48, 96, 192, 384]);
        assert_eq!(st.map(|s| s.num_blocks), [1, 1, 1, 1]);
        let s = ModelConfig::new(Size::S);
        assert_eq!(s.stages().map(|s| s.num_blocks), [1, 2, 2, 1]);
        let m = ModelConfig::new(Size::M);
        assert_eq!(m.stages().map(|s| s.num_blocks), [2, 4, 4, 2]);
        assert_eq!(m.stem_channels(), (24, 48));
        let x = ModelConfig::new(Size::X);
        assert_eq!(x.stages().map(|s| s.out_channels), [160, 320, 640, 1280]);
        assert_eq!(x.stages().map(|s| s.num_blocks), [4, 8, 8, 4]);
        let nano = ModelConfig::new(Size::Nano);
        assert_eq!(nano.neck_in_channels(), [64, 128, 256]);
        assert_eq!(nano.stages().map(|s| s.num_blocks), [1, 2, 2, 1]);
    }

    #[test]
    fn task_is_configuration_and_old_files_read_as_detection() {
        let mut cfg = ModelConfig::new(Size::Tiny);
        assert_eq!(cfg.task, Task::Detect);
        assert_eq!(Task::Detect.loss_terms(), ["loss_cls", "loss_bbox"]);
        cfg.task = Task::Segment;
        assert!(cfg.validate().is_ok());
        assert!(!ModelConfig::ins(Size::M).exp_on_reg);
        let rotated = ModelConfig::rotated(Size::Tiny);
        assert!(rotated.validate().is_ok());
        assert_eq!(
            (rotated.num_classes, rotated.input_size, rotated.class_name(14).as_str()),
            (15, 1024, "helicopter")
        );
        // Configurations saved before the task existed are detection models.
        let mut json = serde_json::to_value(ModelConfig::new(Size::S)).unwrap();
        json.as_object_mut().unwrap().remove("task");
        let back: ModelConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, ModelConfig::new(Size::S));
    }

    #[test]
    fn size_names_parse() {
        assert_eq!(Size::parse("rtmdet-tiny").unwrap(), Size::Tiny);
        assert_eq!(Size::parse("L").unwrap(), Size::L);
        assert!(Size::parse("huge").is_err());
    }
}
