//! Helpers shared by the integration tests: paths into `../shared` and `.npz` reading.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use burn::module::{Param, RunningState};
use burn::tensor::{Gradients, Tensor};
use rtmdet::weights::ParamVisitor;

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{NpzReader, ReadableElement};

/// `../shared` beside the project root.
pub fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(rel)
}

pub fn reference(rel: &str) -> PathBuf {
    shared("reference").join(rel)
}

pub struct Npz(NpzReader<File>);

impl Npz {
    pub fn open(path: PathBuf) -> Npz {
        let f = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Npz(NpzReader::new(f).expect("npz"))
    }

    pub fn get<T: ReadableElement>(&mut self, name: &str) -> ArrayD<T> {
        self.0
            .by_name::<ndarray::OwnedRepr<T>, IxDyn>(&format!("{name}.npy"))
            .or_else(|_| self.0.by_name(name))
            .unwrap_or_else(|e| panic!("array {name}: {e}"))
    }

    pub fn f32(&mut self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let a = self.get::<f32>(name);
        (a.shape().to_vec(), a.iter().copied().collect())
    }

    pub fn f64(&mut self, name: &str) -> Vec<f64> {
        self.get::<f64>(name).iter().copied().collect()
    }

    pub fn i64(&mut self, name: &str) -> Vec<i64> {
        self.get::<i64>(name).iter().copied().collect()
    }

    pub fn u8(&mut self, name: &str) -> Vec<u8> {
        self.get::<u8>(name).iter().copied().collect()
    }

    pub fn names(&mut self) -> Vec<String> {
        self.0.names().unwrap()
    }
}

/// A numpy unicode scalar (`<U…`, UTF-32LE after the `.npy` header) from an `.npz`, which
/// ndarray-npy does not read.
pub fn npy_unicode(npz: &std::path::Path, name: &str) -> String {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::fs::File::open(npz).unwrap()).unwrap();
    let mut bytes = Vec::new();
    zip.by_name(name).unwrap().read_to_end(&mut bytes).unwrap();
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes[header_end..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .filter(|&c| c != 0)
        .map(|c| char::from_u32(c).unwrap())
        .collect()
}

/// Collects the gradient of every parameter by its checkpoint name.
pub struct GradCollector<'a> {
    pub grads: &'a Gradients,
    pub out: BTreeMap<String, Vec<f32>>,
}

impl ParamVisitor for GradCollector<'_> {
    fn param<const D: usize>(&mut self, names: &[String], param: &mut Param<Tensor<D>>) -> rtmdet::Result<()> {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.insert(names[0].clone(), rtmdet::weights::to_vec(&g));
        }
        Ok(())
    }
    fn buffer(&mut self, _: &str, _: &mut RunningState<Tensor<1>>) -> rtmdet::Result<()> {
        Ok(())
    }
}

/// Max |a - b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Detections as plain rows `(x1, y1, x2, y2, score, label)`.
pub type Row = ([f32; 4], f32, usize);

/// Tolerances of a set comparison of detections.
#[derive(Clone, Copy, Debug)]
pub struct SetTol {
    pub boxes: f32,
    pub scores: f32,
    /// Up to `soft_count` detections may differ in score by up to `soft_scores` (fp32 noise
    /// of the whole network on a near-threshold score); all others must meet `scores`.
    pub soft_scores: f32,
    pub soft_count: usize,
}

impl SetTol {
    pub const fn strict(boxes: f32, scores: f32) -> Self {
        SetTol { boxes, scores, soft_scores: scores, soft_count: 0 }
    }
}

/// Matches two detection sets: same size, and every reference row has a distinct partner
/// with the same label within the tolerances. Returns the worst box and score differences.
pub fn match_sets(ours: &[Row], reference: &[Row], tol: SetTol) -> Result<(f32, f32), String> {
    if ours.len() != reference.len() {
        return Err(format!("{} detections, reference has {}", ours.len(), reference.len()));
    }
    let mut used = vec![false; ours.len()];
    let (mut worst_box, mut worst_score, mut soft) = (0f32, 0f32, 0usize);
    for (rb, rs, rl) in reference {
        let best = ours
            .iter()
            .enumerate()
            .filter(|(i, (_, _, l))| !used[*i] && l == rl)
            .map(|(i, (b, s, _))| {
                let db = b.iter().zip(rb).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                (i, db, (s - rs).abs())
            })
            .filter(|&(_, db, ds)| db <= tol.boxes && ds <= tol.soft_scores)
            .min_by(|a, b| (a.1 + a.2).total_cmp(&(b.1 + b.2)));
        match best {
            Some((i, db, ds)) => {
                used[i] = true;
                worst_box = worst_box.max(db);
                worst_score = worst_score.max(ds);
                soft += (ds > tol.scores) as usize;
            }
            None => {
                return Err(format!("no match for reference detection {rb:?} score {rs} label {rl}"));
            }
        }
    }
    if soft > tol.soft_count {
        return Err(format!("{soft} detections differ in score by more than {}", tol.scores));
    }
    Ok((worst_box, worst_score))
}

/// When both sets were cut at `max_det`, which of two detections with nearly equal scores
/// made the cut is fp32 noise: drops from both sets the rows scoring within `band` of the
/// reference's lowest kept score (the counts were compared before).
pub fn above_cutoff(ours: Vec<Row>, reference: Vec<Row>, max_det: usize, band: f32) -> (Vec<Row>, Vec<Row>) {
    if reference.len() < max_det || ours.len() != reference.len() {
        return (ours, reference);
    }
    let floor = reference.iter().map(|r| r.1).fold(f32::INFINITY, f32::min) + band;
    let keep = |v: Vec<Row>| v.into_iter().filter(|r| r.1 > floor).collect::<Vec<_>>();
    (keep(ours), keep(reference))
}

/// Reads `(bboxes, scores, labels)` with a common prefix (`cfg_`, `dep_`, ...) as rows.
pub fn rows(npz: &mut Npz, prefix: &str) -> Vec<Row> {
    let (_, b) = npz.f32(&format!("{prefix}bboxes"));
    let (_, s) = npz.f32(&format!("{prefix}scores"));
    let l = npz.i64(&format!("{prefix}labels"));
    (0..s.len()).map(|i| ([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]], s[i], l[i] as usize)).collect()
}

pub fn det_rows(dets: &rtmdet::Instances) -> Vec<Row> {
    dets.iter().map(|d| (d.bbox, d.score, d.label)).collect()
}

/// Rows as an instance set.
pub fn instances(rows: &[Row]) -> rtmdet::Instances {
    rows.iter().map(|r| rtmdet::Detection { bbox: r.0, score: r.1, label: r.2 }).collect()
}

/// An Ultralytics YAML for the shared coco8 with the 80 COCO names.
pub fn coco8_yaml(dir: &std::path::Path) -> PathBuf {
    let names: String = rtmdet::classes::COCO.iter().map(|n| format!("  - {n}\n")).collect();
    let p = dir.join("coco8.yaml");
    let text =
        format!("path: {}\ntrain: images/train\nval: images/val\nnames:\n{names}", shared("assets/coco8").display());
    std::fs::write(&p, text).unwrap();
    p
}

/// The stored raw head outputs of a reference file: `cls_l*` and `reg_l*`, with the task's
/// `angle_l*` (RTMDet-R) or `kernel_l*` and `proto` (RTMDet-Ins) when `extra` names them.
pub fn stored_head_outputs(npz: &mut Npz, extra: Option<&str>) -> rtmdet::model::HeadOutputs {
    let task_output = |npz: &mut Npz, name: &str, l: usize| match extra {
        Some(e) if e == name => npz.f32(&format!("{name}_l{l}")).1,
        _ => Vec::new(),
    };
    let mut levels = Vec::new();
    for l in 0..3 {
        let (angle, kernel) = (task_output(npz, "angle", l), task_output(npz, "kernel", l));
        let (shape, cls) = npz.f32(&format!("cls_l{l}"));
        levels.push(rtmdet::model::LevelOutputs {
            cls,
            reg: npz.f32(&format!("reg_l{l}")).1,
            angle,
            kernel,
            dims: [shape[0], shape[1], shape[2], shape[3]],
            stride: 8 << l,
        });
    }
    let mask_feat = (extra == Some("kernel")).then(|| {
        let (d, data) = npz.f32("proto");
        rtmdet::model::MaskFeatures { data, dims: [d[0], d[1], d[2], d[3]] }
    });
    rtmdet::model::HeadOutputs { levels, mask_feat }
}

/// Our gradients of the parameters a reference train step stores (`grad.<name>`), beside
/// the reference's: `(name, ours, theirs)` in the file's order.
pub fn named_gradients<M: rtmdet::weights::VisitWeights>(
    npz: &mut Npz,
    model: &mut M,
    grads: &Gradients,
) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let mut collector = GradCollector { grads, out: BTreeMap::new() };
    model.visit_weights("", &mut collector).expect("every parameter is visited");
    let names: Vec<String> = npz
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix("grad.").map(|s| s.trim_end_matches(".npy").to_string()))
        .collect();
    names
        .into_iter()
        .map(|name| {
            let theirs = npz.f32(&format!("grad.{name}")).1;
            let ours = collector.out.remove(&name).unwrap_or_else(|| panic!("no gradient for {name}"));
            (name, ours, theirs)
        })
        .collect()
}

/// A fresh folder under the system's temporary folder, unique to this test process and `name`.
pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rtmdet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
