//! COCO JSON: images, annotations (`xywh` boxes, `area`, `iscrowd`, polygons/RLE kept),
//! categories with arbitrary ids; and the COCO results format.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{Annotation, Category, CheckReport, Dataset, ImageEntry, clip_box};
use crate::error::{Error, Result};
use crate::structures::mask::Segmentation;

#[derive(Deserialize)]
pub(crate) struct RawImage {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) file_name: String,
    pub(crate) width: Option<f64>,
    pub(crate) height: Option<f64>,
}

#[derive(Deserialize)]
pub(crate) struct RawAnnotation {
    pub(crate) id: Option<u64>,
    pub(crate) image_id: u64,
    pub(crate) category_id: u64,
    pub(crate) bbox: Vec<f64>,
    pub(crate) area: Option<f64>,
    #[serde(default)]
    pub(crate) iscrowd: u8,
    pub(crate) segmentation: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct RawCategory {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) name: String,
}

#[derive(Deserialize)]
pub(crate) struct RawCoco {
    pub(crate) images: Vec<RawImage>,
    #[serde(default)]
    pub(crate) annotations: Vec<RawAnnotation>,
    pub(crate) categories: Vec<RawCategory>,
}

/// A COCO `segmentation` value: polygons (`[[x, y, ...], ...]`, or one flat polygon),
/// uncompressed RLE (`counts` a list) or compressed RLE (`counts` a string).
pub fn segmentation(v: &Value) -> std::result::Result<Segmentation, String> {
    let numbers = |v: &Value| -> Option<Vec<f64>> { v.as_array()?.iter().map(Value::as_f64).collect() };
    match v {
        Value::Array(parts) if parts.iter().all(Value::is_array) => {
            parts.iter().map(numbers).collect::<Option<_>>().map(Segmentation::Polygons)
        }
        Value::Array(_) => numbers(v).map(|p| Segmentation::Polygons(vec![p])),
        Value::Object(o) => {
            let size = o.get("size").and_then(numbers).filter(|s| s.len() == 2 && s.iter().all(|x| *x >= 0.0));
            let size = size.map(|s| [s[0] as usize, s[1] as usize]);
            match (size, o.get("counts")) {
                (Some(size), Some(Value::String(c))) => Some(Segmentation::Compressed { size, counts: c.clone() }),
                (Some(size), Some(c @ Value::Array(_))) => numbers(c)
                    .filter(|n| n.iter().all(|x| *x >= 0.0 && x.fract() == 0.0 && *x <= u32::MAX as f64))
                    .map(|n| Segmentation::Uncompressed { size, counts: n.iter().map(|x| *x as u32).collect() }),
                _ => None,
            }
        }
        _ => None,
    }
    .ok_or_else(|| "segmentation must be polygons [[x, y, ...]] or an RLE {\"size\": [h, w], \"counts\": ...}".into())
}

pub(crate) fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: {what}", path.display()))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = crate::files::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| bad(path, json_error(&text, &e)))
}

/// serde's message, plus the cause when the offending token is Python's `NaN`/`Infinity`
/// (json.dump writes them; JSON has no such numbers).
fn json_error(text: &str, e: &serde_json::Error) -> String {
    let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
    let at = line.char_indices().nth(e.column().saturating_sub(1)).map_or(line.len(), |(i, _)| i);
    let rest = line[at..].trim_start_matches('-');
    if ["NaN", "Infinity", "inf", "nan"].iter().any(|t| rest.starts_with(t)) {
        return format!("{e}: NaN or Infinity is not a JSON number (every score and coordinate must be finite)");
    }
    e.to_string()
}

pub(crate) fn parse(path: &Path) -> Result<RawCoco> {
    let raw: RawCoco = read_json(path)?;
    for (i, a) in raw.annotations.iter().enumerate() {
        if a.bbox.len() != 4 {
            return Err(bad(
                path,
                format!("annotation #{i} (id {:?}): bbox must have 4 numbers [x, y, w, h], got {}", a.id, a.bbox.len()),
            ));
        }
    }
    Ok(raw)
}

/// Where the images of a COCO file are: `images_dir` when given, else the first of the JSON's
/// folder, `<json dir>/images`, `<json dir>/../images` that holds the first image.
fn image_root(path: &Path, images_dir: Option<&Path>, first: Option<&str>) -> PathBuf {
    if let Some(d) = images_dir {
        return d.to_path_buf();
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let candidates = [dir.to_path_buf(), dir.join("images"), dir.join("../images")];
    first.and_then(|f| candidates.iter().find(|c| c.join(f).is_file()).cloned()).unwrap_or_else(|| dir.to_path_buf())
}

/// The size of an image file, warning when the JSON's `width`/`height` disagree with it (boxes
/// are clipped to the real image, not to a wrong listed size).
fn checked_size(file: &Path, listed: (usize, usize), report: &mut CheckReport) -> (usize, usize) {
    let Ok(real) = crate::image_io::image_size(file) else { return listed };
    if real != listed {
        report.warnings.push(format!(
            "{}: the JSON says {}x{}, the file is {}x{} (the file's size is used)",
            file.display(),
            listed.0,
            listed.1,
            real.0,
            real.1
        ));
    }
    real
}

/// Loads a COCO dataset with its images, checking and repairing what it can.
pub fn load(path: &Path, images_dir: Option<&Path>) -> Result<Dataset> {
    let raw = parse(path)?;
    let mut categories: Vec<Category> =
        raw.categories.iter().map(|c| Category { id: c.id, name: c.name.clone() }).collect();
    categories.sort_by_key(|c| c.id);
    let label_of: HashMap<u64, usize> = categories.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let root = image_root(path, images_dir, raw.images.first().map(|i| i.file_name.as_str()));

    let mut report = CheckReport::default();
    let mut seen = HashSet::new();
    let mut images: Vec<ImageEntry> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut files: HashMap<&str, u64> = HashMap::new();
    for img in &raw.images {
        if !seen.insert(img.id) {
            report.duplicate_image_ids.push(img.id);
            continue;
        }
        if let Some(first) = files.insert(img.file_name.as_str(), img.id) {
            report.warnings.push(format!(
                "{}: image {} is listed twice (ids {first} and {}); each entry is evaluated with its own annotations",
                path.display(),
                img.file_name,
                img.id
            ));
        }
        let file = root.join(&img.file_name);
        let (w, h) = match (img.width, img.height) {
            (Some(w), Some(h)) if w > 0.0 && h > 0.0 => (w as usize, h as usize),
            _ if !file.is_file() => (0, 0),
            _ => match crate::image_io::image_size(&file) {
                Ok(s) => s,
                Err(e) => {
                    report.unreadable_images.push(e.to_string());
                    continue;
                }
            },
        };
        if !file.is_file() {
            report.missing_images.push(file);
            continue;
        }
        let (w, h) = checked_size(&file, (w, h), &mut report);
        index.insert(img.id, images.len());
        images.push(ImageEntry { id: img.id, path: file, width: w, height: h, annotations: Vec::new() });
    }
    let mut orphans = 0usize;
    for (i, a) in raw.annotations.into_iter().enumerate() {
        let Some(&label) = label_of.get(&a.category_id) else {
            report.unknown_categories += 1;
            continue;
        };
        let Some(&slot) = index.get(&a.image_id) else {
            // Annotations of missing files are reported with the file; others name no image.
            orphans += usize::from(!seen.contains(&a.image_id));
            continue;
        };
        let img = &mut images[slot];
        let b = [a.bbox[0], a.bbox[1], a.bbox[0] + a.bbox[2], a.bbox[1] + a.bbox[3]];
        let (clipped, changed) = clip_box(b, img.width, img.height);
        let Some(bbox) = clipped else {
            report.dropped_empty_boxes += 1;
            continue;
        };
        report.clipped_boxes += changed as usize;
        img.annotations.push(Annotation {
            id: a.id.unwrap_or(i as u64 + 1),
            bbox,
            label,
            iscrowd: a.iscrowd != 0,
            area: a.area.unwrap_or(a.bbox[2] * a.bbox[3]),
            segmentation: a.segmentation,
            rbox: None,
            difficulty: 0,
        });
    }
    if orphans > 0 {
        report.warnings.push(format!(
            "{}: {orphans} annotations refer to image ids that are not in `images` (dropped)",
            path.display()
        ));
    }
    report.images = images.len();
    report.annotations = images.iter().map(|i| i.annotations.len()).sum();
    report.background_images = images.iter().filter(|i| i.annotations.is_empty()).count();
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("coco").to_string();
    Ok(Dataset { name, images, categories, report, coco_file: Some(path.to_path_buf()) })
}
