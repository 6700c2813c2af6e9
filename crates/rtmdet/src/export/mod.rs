//! `rtmdet export`: a loaded model as a standard ONNX file (no custom operators), written by
//! our own code from the same [`Graph`] the burn model and the CPU plan are built from.
//!
//! * [`network`]: the backbone, neck and head as ONNX nodes (BatchNorm folded);
//! * [`end2end`]: mmdeploy's detection interface inside the graph (decoding, multi-label
//!   candidates, per-level top-k, class-aware `NonMaxSuppression`, top `max_det`, RTMDet-Ins
//!   masks);
//! * [`proto`]: the protobuf writer.
//!
//! Our exports carry their configuration in the metadata entry [`METADATA_KEY`], so
//! `rtmdet predict --weights model.onnx` loads them back (`weights::onnx`).

pub mod end2end;
pub mod network;
pub mod proto;

use onnx_protobuf::Message;
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, Task};
use crate::error::{Error, Result};
use crate::model::Graph;
use crate::model::params::TensorMap;
use crate::postprocess::DetectParams;
use proto::{Dim, Elem, OnnxWriter};

/// The metadata key holding an [`ExportInfo`] as JSON (read back by `weights::onnx`).
pub use crate::weights::onnx::METADATA_KEY;

/// Opsets the exporter writes (the operators it uses are the same from 13 to 17).
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=17;

/// What the graph outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// mmdeploy's interface: `dets`, `labels` (and `masks` for RTMDet-Ins).
    #[default]
    End2end,
    /// The head maps per level: `cls_l*`, `reg_l*` (+ `kernel_l*`, `mask_feat` / `angle_l*`).
    Raw,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "end2end" => Ok(Mode::End2end),
            "raw" => Ok(Mode::Raw),
            other => Err(Error::Config(format!("unknown export mode '{other}' (expected end2end or raw)"))),
        }
    }
}

/// How to export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportOptions {
    pub mode: Mode,
    /// Square input side (a multiple of 32) of a static export.
    pub imgsz: usize,
    /// Images per batch of a static export.
    pub batch: usize,
    /// Batch, height and width are named dimensions (height and width multiples of 32).
    pub dynamic: bool,
    /// FP16 weights and compute, FP32 input and outputs.
    pub half: bool,
    pub opset: i64,
    /// Thresholds of the end-to-end graph.
    pub params: DetectParams,
}

/// What an export of ours records about itself (metadata [`METADATA_KEY`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportInfo {
    /// The model, with `share_conv` off: folding gives every head level its own convs.
    pub config: ModelConfig,
    pub options: ExportOptions,
}

impl ExportInfo {
    /// The record `weights::read_with_record` found in the export at `path`.
    pub fn from_record(json: &str, path: &std::path::Path) -> Result<ExportInfo> {
        serde_json::from_str(json)
            .map_err(|e| Error::weights(path, format!("its '{METADATA_KEY}' metadata is not an export record ({e})")))
    }
}

/// An opset the exporter writes (checked before a model is loaded, and again with the rest).
pub fn check_opset(opset: i64, half: bool) -> Result<()> {
    if OPSETS.contains(&opset) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "opset {opset} is not supported (the exporter writes opsets {} to {}{})",
        OPSETS.start(),
        OPSETS.end(),
        if half { "; --half needs 13 or later" } else { "" }
    )))
}

/// Checks the options against the model before anything is written.
pub fn check_options(config: &ModelConfig, opts: &ExportOptions) -> Result<()> {
    check_opset(opts.opset, opts.half)?;
    if opts.batch == 0 {
        return Err(Error::Config("the batch size must be at least 1".into()));
    }
    if opts.imgsz == 0 || !opts.imgsz.is_multiple_of(32) {
        return Err(Error::Config(format!("--imgsz {} must be a positive multiple of 32", opts.imgsz)));
    }
    if config.task == Task::Rotated && opts.mode == Mode::End2end {
        return Err(Error::Config(
            "RTMDet-R exports in raw mode only: rotated NMS has no standard ONNX operator, and a \
             loop of standard operators would be neither exact nor fast in every runtime; use \
             --mode raw and run the rotated post-processing (decode, rotated NMS) in your code"
                .into(),
        ));
    }
    Ok(())
}

/// The ONNX model of `graph` (built from `config`) with weights `map`, serialised.
pub fn export(config: &ModelConfig, graph: &Graph, map: &TensorMap, opts: &ExportOptions) -> Result<Vec<u8>> {
    check_options(config, opts)?;
    let mut w = OnnxWriter::new(opts.half);
    let shape = InputShape::of(opts);
    w.input("input", Elem::F32, &shape.dims());
    let input = if opts.half { w.cast("input", Elem::F16) } else { "input".into() };
    let values = network::emit(&mut w, graph, map, &input)?;
    let heads = HeadValues::read_out(&mut w, graph, &values);
    match opts.mode {
        Mode::Raw => raw_outputs(&mut w, graph, &heads, &shape),
        Mode::End2end => end2end::emit(&mut w, graph, &heads, &opts.params, &shape),
    }
    let mut exported = config.clone();
    exported.share_conv = false;
    exported.input_size = opts.imgsz;
    let info = ExportInfo { config: exported, options: opts.clone() };
    let meta = serde_json::to_string(&info).map_err(|e| Error::Other(e.to_string()))?;
    let model = w.finish(opts.opset, vec![(METADATA_KEY.to_string(), meta)]);
    model.write_to_bytes().map_err(|e| Error::Other(format!("cannot serialise the ONNX model: {e}")))
}

/// The input's dimensions: fixed `[batch, 3, imgsz, imgsz]` or named.
#[derive(Clone, Copy, Debug)]
pub struct InputShape {
    pub batch: usize,
    pub side: usize,
    pub dynamic: bool,
}

impl InputShape {
    fn of(opts: &ExportOptions) -> Self {
        InputShape { batch: opts.batch, side: opts.imgsz, dynamic: opts.dynamic }
    }

    fn dims(&self) -> Vec<Dim> {
        vec![self.batch_dim(), Dim::Fixed(3), self.side_dim("height", 1), self.side_dim("width", 1)]
    }

    pub fn batch_dim(&self) -> Dim {
        if self.dynamic { Dim::Named("batch") } else { Dim::Fixed(self.batch) }
    }

    /// The height or width of a map at `stride`.
    pub fn side_dim(&self, name: &'static str, stride: usize) -> Dim {
        if self.dynamic { Dim::Named(name) } else { Dim::Fixed(self.side / stride) }
    }

    /// A dimension known only at run time when the export is dynamic.
    pub fn count_dim(&self, name: &'static str, count: usize) -> Dim {
        if self.dynamic { Dim::Named(name) } else { Dim::Fixed(count) }
    }
}

/// One level's head values in float32, distances already in input pixels.
pub struct LevelValues {
    pub stride: usize,
    pub cls: String,
    pub reg: String,
    pub angle: Option<String>,
    pub kernel: Option<String>,
}

/// The head's values in float32, as [`crate::model::HeadOutputs`] holds them.
pub struct HeadValues {
    pub levels: Vec<LevelValues>,
    pub mask_feat: Option<String>,
}

impl HeadValues {
    /// Casts the head maps back to float32 (half exports) and turns raw regression into
    /// distances: `exp(raw)·stride` or `raw·stride`, as the engines do.
    fn read_out(w: &mut OnnxWriter, graph: &Graph, values: &[network::Value]) -> Self {
        w.scope("bbox_head.outputs");
        let f32_of = |w: &mut OnnxWriter, id: usize| {
            let v = &values[id];
            if v.elem == Elem::F32 { v.name.clone() } else { w.cast(&v.name, Elem::F32) }
        };
        let levels = graph
            .levels
            .iter()
            .map(|l| {
                let cls = f32_of(w, l.cls);
                let raw = f32_of(w, l.reg);
                let raw = if graph.exp_on_reg { w.node("Exp", &[&raw], vec![]) } else { raw };
                let stride = w.scalar(l.stride as f32);
                let reg = w.node("Mul", &[&raw, &stride], vec![]);
                let angle = l.angle.map(|a| f32_of(w, a));
                let kernel = l.kernel.map(|k| f32_of(w, k));
                LevelValues { stride: l.stride, cls, reg, angle, kernel }
            })
            .collect();
        let mask_feat = graph.mask_feat.map(|m| f32_of(w, m));
        w.scope("");
        HeadValues { levels, mask_feat }
    }
}

/// `--mode raw`: the per-level maps under fixed names (`cls_l0`, `reg_l0`, …).
fn raw_outputs(w: &mut OnnxWriter, graph: &Graph, heads: &HeadValues, shape: &InputShape) {
    const SIDES: [(&str, &str); 3] = [("h_l0", "w_l0"), ("h_l1", "w_l1"), ("h_l2", "w_l2")];
    let mut outputs = Vec::new();
    for (i, l) in heads.levels.iter().enumerate() {
        let (h, wd) = SIDES[i.min(2)];
        let maps = [
            ("cls", Some(&l.cls), graph.num_classes),
            ("reg", Some(&l.reg), 4),
            ("angle", l.angle.as_ref(), 1),
            ("kernel", l.kernel.as_ref(), crate::model::head::KERNEL_PARAMS),
        ];
        for (what, value, channels) in maps {
            if let Some(v) = value {
                let dims = vec![
                    shape.batch_dim(),
                    Dim::Fixed(channels),
                    shape.side_dim(h, l.stride),
                    shape.side_dim(wd, l.stride),
                ];
                outputs.push((format!("{what}_l{i}"), v.clone(), dims));
            }
        }
    }
    if let Some(m) = &heads.mask_feat {
        let s = crate::model::head::MASK_FEAT_STRIDE;
        let dims = vec![
            shape.batch_dim(),
            Dim::Fixed(crate::model::head::NUM_PROTOTYPES),
            shape.side_dim("h_l0", s),
            shape.side_dim("w_l0", s),
        ];
        outputs.push(("mask_feat".to_string(), m.clone(), dims));
    }
    for (name, value, dims) in outputs {
        // An Identity names the output whatever node produced the value.
        w.node("Identity", &[&value], vec![]);
        w.rename_last(&name);
        w.output(&name, Elem::F32, &dims);
    }
}
