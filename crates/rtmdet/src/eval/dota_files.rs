//! DOTA files as the evaluator reads and writes them: a folder of `labelTxt` ground truth
//! (no images needed), the `Task1_<class>.txt` submission files (`image score x1 y1 ... x4
//! y4` per line, one file per class, as mmrotate's `DOTAMetric` writes them for the DOTA
//! server), and the ground truth of a loaded [`Dataset`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::dota::{ClassAp, DotaEval, RotatedDetections, RotatedGroundTruth};
use crate::data::Dataset;
use crate::data::dota::{labels_by_stem, read_label_file};
use crate::error::{Error, Result};
use crate::structures::Instances;
use crate::structures::quad::{self, quad_to_rbox};
use crate::structures::rotated::{RBox, corners};

/// Images (by name) and their ground truth, with what could not be read.
#[derive(Clone, Debug, Default)]
pub struct DotaGroundTruth {
    pub images: Vec<String>,
    pub gts: Vec<RotatedGroundTruth>,
    pub warnings: Vec<String>,
}

/// Puts the ignored objects after the others, as mmrotate's `DOTAMetric` concatenates
/// `bboxes` and `bboxes_ignore` (it matters when a detection overlaps two equally).
fn ignored_last(mut objects: Vec<(RBox, usize, bool)>) -> RotatedGroundTruth {
    objects.sort_by_key(|o| o.2);
    RotatedGroundTruth {
        boxes: objects.iter().map(|o| o.0).collect(),
        labels: objects.iter().map(|o| o.1).collect(),
        ignored: objects.iter().map(|o| o.2).collect(),
    }
}

/// Reads a folder of label files. An object is ignored when its difficulty exceeds
/// `diff_thr` (0: DOTA's difficult objects are ignored, as the DOTA server does; mmrotate's
/// `DOTADataset` uses 100, i.e. ignores nothing).
pub fn read_ground_truth(dir: &Path, classes: &[String], diff_thr: u32) -> Result<DotaGroundTruth> {
    if !dir.is_dir() {
        return Err(Error::Other(format!("{}: not a folder of DOTA label files", dir.display())));
    }
    let label_of: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut out = DotaGroundTruth::default();
    for (stem, path) in labels_by_stem(dir)? {
        let (rows, bad) = read_label_file(&path)?;
        out.warnings.extend(bad);
        let mut objects = Vec::new();
        for (line, row) in rows {
            match label_of.get(row.class.as_str()) {
                Some(&l) => objects.push((quad_to_rbox(&row.quad), l, row.difficulty > diff_thr)),
                None => {
                    out.warnings.push(format!("{}:{line}: unknown class '{}' (skipped)", path.display(), row.class))
                }
            }
        }
        out.images.push(stem);
        out.gts.push(ignored_last(objects));
    }
    if out.images.is_empty() {
        return Err(Error::Other(format!("{}: no .txt label files", dir.display())));
    }
    Ok(out)
}

/// The ground truth of a loaded DOTA dataset, images named by file stem.
pub fn ground_truth(data: &Dataset, diff_thr: u32) -> DotaGroundTruth {
    let mut out = DotaGroundTruth::default();
    for img in &data.images {
        out.images.push(img.path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string());
        let objects =
            img.annotations.iter().filter_map(|a| Some((a.rbox?, a.label, a.difficulty > diff_thr))).collect();
        out.gts.push(ignored_last(objects));
    }
    out
}

/// The file of a class: `Task1_<class>.txt`.
pub fn task1_path(dir: &Path, class: &str) -> PathBuf {
    dir.join(format!("Task1_{class}.txt"))
}

/// Reads the `Task1_<class>.txt` files of `dir` for the images of `images` (by name). Lines
/// for images not in the list, and files of unknown classes, come back as warnings.
pub fn read_task1(dir: &Path, classes: &[String], images: &[String]) -> Result<(Vec<RotatedDetections>, Vec<String>)> {
    if !dir.is_dir() {
        return Err(Error::Other(format!("{}: not a folder of Task1_<class>.txt files", dir.display())));
    }
    let index: HashMap<&str, usize> = images.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut dets = vec![RotatedDetections::default(); images.len()];
    let mut warnings = Vec::new();
    let mut found = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(class) = name.strip_prefix("Task1_").and_then(|n| n.strip_suffix(".txt"))
            && !classes.iter().any(|c| c == class)
        {
            warnings.push(format!("{}: class '{class}' is not in the class list (ignored)", path.display()));
        }
    }
    let mut unknown_images = 0usize;
    for (label, class) in classes.iter().enumerate() {
        let path = task1_path(dir, class);
        if !path.is_file() {
            continue;
        }
        found += 1;
        let text = crate::files::read_text(&path)?;
        for (n, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let parsed = (|| -> std::result::Result<(f64, quad::Quad), String> {
                if fields.len() != 10 {
                    return Err(format!("expected 10 fields `image score x1 y1 ... x4 y4`, got {}", fields.len()));
                }
                let score: f64 = fields[1]
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite())
                    .ok_or_else(|| format!("score '{}' is not a number", fields[1]))?;
                let mut q = [0f32; 8];
                for (v, f) in q.iter_mut().zip(&fields[2..]) {
                    *v = f
                        .parse::<f32>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| format!("'{f}' is not a number"))?;
                }
                Ok((score, q))
            })();
            let (score, q) = match parsed {
                Ok(v) => v,
                Err(e) => {
                    warnings.push(format!("{}:{}: {e} (skipped)", path.display(), n + 1));
                    continue;
                }
            };
            let Some(&img) = index.get(fields[0]) else {
                unknown_images += 1;
                continue;
            };
            dets[img].boxes.push(quad_to_rbox(&q));
            dets[img].scores.push(score);
            dets[img].labels.push(label);
        }
    }
    if found == 0 {
        return Err(Error::Other(format!("{}: no Task1_<class>.txt file for any of the classes", dir.display())));
    }
    if unknown_images > 0 {
        warnings.push(format!("{unknown_images} detections name images that have no label file (ignored)"));
    }
    Ok((dets, warnings))
}

/// mmrotate's score text: `str(round(float(score), 2))`.
fn score_text(s: f32) -> String {
    let rounded: f64 = format!("{:.2}", s as f64).parse().unwrap_or(0.0);
    format!("{rounded:?}")
}

/// Writes one `Task1_<class>.txt` per class (every class, empty files included, as mmrotate
/// does) with the rotated detections of each named image as corner quads.
pub fn write_task1(dir: &Path, classes: &[String], results: &[(String, Instances)]) -> Result<Vec<PathBuf>> {
    let mut texts = vec![String::new(); classes.len()];
    for (name, set) in results {
        for ((r, &score), &label) in set.rboxes.iter().zip(&set.scores).zip(&set.labels) {
            let Some(text) = texts.get_mut(label) else { continue };
            let q: Vec<String> =
                corners(r).iter().flat_map(|p| [format!("{:.2}", p[0]), format!("{:.2}", p[1])]).collect();
            text.push_str(&format!("{name} {} {}\n", score_text(score), q.join(" ")));
        }
    }
    let mut paths = Vec::new();
    for (class, text) in classes.iter().zip(texts) {
        let path = task1_path(dir, class);
        crate::files::write_atomically(&path, text.as_bytes())?;
        paths.push(path);
    }
    Ok(paths)
}

/// mmrotate's per-class table (class, gts, dets, recall, ap) and the mAP line.
pub fn table(e: &DotaEval, classes: &[String]) -> String {
    let width = classes.iter().map(|c| c.len()).max().unwrap_or(5).max(5);
    let mut s = format!("{:<width$} | {:>6} | {:>6} | {:>6} | {:>6}\n", "class", "gts", "dets", "recall", "ap");
    let rule = format!("{}\n", "-".repeat(width + 39));
    s.push_str(&rule);
    for (name, c) in classes.iter().zip(&e.classes) {
        let ClassAp { num_gts, num_dets, recall, ap, .. } = c;
        let r = recall.last().copied().unwrap_or(0.0);
        s.push_str(&format!("{name:<width$} | {num_gts:>6} | {num_dets:>6} | {r:>6.3} | {ap:>6.3}\n"));
    }
    s.push_str(&rule);
    s.push_str(&format!("{:<width$} | {:>6} | {:>6} | {:>6} | {:>6.3}\n", "mAP", "", "", "", e.map));
    s
}
