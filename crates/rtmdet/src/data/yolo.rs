//! The Ultralytics layout: a dataset YAML (`path`, `train`, `val`, `names`) and one
//! `labels/<split>/<stem>.txt` per image with rows `class cx cy w h` (normalised), or
//! polygon rows `class x1 y1 x2 y2 ...` whose bounds give the box.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Annotation, Category, CheckReport, Dataset, ImageEntry, clip_box};
use crate::error::{Error, Result};

#[derive(Deserialize)]
#[serde(untagged)]
enum Split {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawYaml {
    path: Option<String>,
    train: Option<Split>,
    val: Option<Split>,
    test: Option<Split>,
    /// A list of names or a map `{id: name}`; read as a plain value so that a wrong shape gets
    /// a message saying which shape is expected (serde's untagged enums cannot).
    names: Option<serde_yaml_ng::Value>,
}

/// `names` as categories: a list (ids 0, 1, ...) or a map from non-negative integer ids.
fn categories_of(names: Option<serde_yaml_ng::Value>) -> std::result::Result<Vec<Category>, String> {
    use serde_yaml_ng::Value;
    let expected = "`names` must be a list of class names (`names: [person, car]`) or a map `{0: person, 1: car}`";
    let name_of = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("class name {other:?} is not text")),
    };
    match names {
        None | Some(Value::Null) => Err(format!("`names` is missing or empty; {expected}")),
        Some(Value::Sequence(list)) => {
            list.iter().enumerate().map(|(i, v)| Ok(Category { id: i as u64, name: name_of(v)? })).collect()
        }
        Some(Value::Mapping(map)) => {
            let mut by_id = BTreeMap::new();
            for (k, v) in &map {
                let id = k.as_u64().ok_or_else(|| format!("`names` key {k:?} is not a non-negative class id"))?;
                if by_id.insert(id, name_of(v)?).is_some() {
                    return Err(format!("`names` lists class id {id} twice"));
                }
            }
            Ok(by_id.into_iter().map(|(id, name)| Category { id, name }).collect())
        }
        Some(other) => Err(format!("{expected}, not {}", describe(&other))),
    }
}

fn describe(v: &serde_yaml_ng::Value) -> String {
    match v {
        serde_yaml_ng::Value::String(s) => format!("the single value '{s}'"),
        serde_yaml_ng::Value::Null => "an empty value".into(),
        other => format!("{other:?}"),
    }
}

const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "jfif"];

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The images of a split entry: a folder (recursively), or a `.txt` list of image paths.
fn split_images(root: &Path, entry: &str) -> Result<Vec<PathBuf>> {
    let p = root.join(entry);
    if p.is_dir() {
        let mut out = Vec::new();
        let mut stack = vec![p];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let path = e?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if is_image(&path) {
                    out.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    } else if p.extension().is_some_and(|e| e == "txt") && p.is_file() {
        let text = crate::files::read_text(&p)?;
        let base = p.parent().unwrap_or(root).to_path_buf();
        Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| base.join(l)).collect())
    } else {
        Err(Error::Other(format!("split '{entry}' ({}) is neither a folder nor a .txt list", p.display())))
    }
}

/// `.../images/x/y.jpg` → `.../labels/x/y.txt` (the last `images` component is replaced).
pub fn label_path(image: &Path) -> PathBuf {
    let comps: Vec<_> = image.components().collect();
    let pos = comps.iter().rposition(|c| c.as_os_str() == "images");
    let mut out = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        if Some(i) == pos { out.push("labels") } else { out.push(c.as_os_str()) }
    }
    out.with_extension("txt")
}

/// One parsed label row: class, pixel box and, for a YOLO-seg polygon row, the polygon in
/// pixels (`x1, y1, x2, y2, ...`).
pub type LabelRow = (u64, [f64; 4], Option<Vec<f64>>);

/// One label row: `class cx cy w h`, or a YOLO-seg polygon `class x1 y1 x2 y2 ...` (at least
/// three points), all normalised to the image.
pub fn parse_row(line: &str, w: f64, h: f64) -> std::result::Result<Option<LabelRow>, String> {
    let fields: Vec<&str> = crate::files::strip_bom(line).split_whitespace().collect();
    if fields.is_empty() {
        return Ok(None);
    }
    let nums: Vec<f64> = fields[1..]
        .iter()
        .map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("'{f}' is not a finite number")))
        .collect::<std::result::Result<_, _>>()?;
    let class: u64 = fields[0].parse().map_err(|_| format!("class '{}' is not a non-negative integer", fields[0]))?;
    if nums.len() == 4 {
        let (cx, cy, bw, bh) = (nums[0] * w, nums[1] * h, nums[2] * w, nums[3] * h);
        return Ok(Some((class, [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0], None)));
    }
    if nums.len() < 6 || !nums.len().is_multiple_of(2) {
        return Err(format!(
            "expected 5 fields `class cx cy w h` or a polygon `class x1 y1 x2 y2 x3 y3 ...`, got {}",
            fields.len()
        ));
    }
    let poly: Vec<f64> = nums.iter().enumerate().map(|(i, v)| v * if i % 2 == 0 { w } else { h }).collect();
    let xs = poly.iter().step_by(2);
    let ys = poly.iter().skip(1).step_by(2);
    let (x1, x2) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (y1, y2) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    Ok(Some((class, [x1, y1, x2, y2], Some(poly))))
}

/// Image id from a numeric file stem (COCO style), when every stem is a distinct number.
fn numeric_ids(paths: &[PathBuf]) -> Option<Vec<u64>> {
    let ids: Vec<u64> = paths.iter().map(|p| p.file_stem()?.to_str()?.parse().ok()).collect::<Option<_>>()?;
    (ids.iter().collect::<HashSet<_>>().len() == ids.len()).then_some(ids)
}

pub fn load(yaml: &Path, split: &str) -> Result<Dataset> {
    let bad = |what: String| Error::Other(format!("{}: {what}", yaml.display()));
    let text = crate::files::read_text(yaml)?;
    let raw: RawYaml = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let dir = yaml.parent().unwrap_or(Path::new("."));
    let root = raw.path.as_deref().map_or(dir.to_path_buf(), |p| dir.join(p));
    let entry = match split {
        "train" => raw.train,
        "val" => raw.val,
        "test" => raw.test,
        other => return Err(bad(format!("unknown split '{other}'"))),
    }
    .ok_or_else(|| bad(format!("no `{split}` entry")))?;
    let entries = match entry {
        Split::One(s) => vec![s],
        Split::Many(v) => v,
    };
    let mut paths = Vec::new();
    for e in &entries {
        paths.extend(split_images(&root, e).map_err(|e| bad(e.to_string()))?);
    }
    let categories = categories_of(raw.names).map_err(bad)?;
    if categories.is_empty() {
        return Err(bad("`names` is empty".into()));
    }
    let label_of: std::collections::HashMap<u64, usize> =
        categories.iter().enumerate().map(|(i, c)| (c.id, i)).collect();

    let ids = numeric_ids(&paths).unwrap_or_else(|| (1..=paths.len() as u64).collect());
    let mut report = CheckReport::default();
    let mut images = Vec::new();
    let mut next_ann = 1u64;
    for (path, id) in paths.into_iter().zip(ids) {
        if !path.is_file() {
            report.missing_images.push(path);
            continue;
        }
        let (w, h) = match crate::image_io::image_size(&path) {
            Ok(s) => s,
            Err(e) => {
                report.unreadable_images.push(e.to_string());
                continue;
            }
        };
        let mut annotations = Vec::new();
        let lp = label_path(&path);
        if lp.is_file() {
            let text = crate::files::read_text(&lp)?;
            for (n, line) in text.lines().enumerate() {
                let row = parse_row(line, w as f64, h as f64)
                    .map_err(|e| Error::Other(format!("{}:{}: {e}", lp.display(), n + 1)))?;
                let Some((class, b, polygon)) = row else { continue };
                let Some(&label) = label_of.get(&class) else {
                    report.unknown_categories += 1;
                    eprintln!("warning: {}:{}: class {class} is not in `names` (dropped)", lp.display(), n + 1);
                    continue;
                };
                let (clipped, changed) = clip_box(b, w, h);
                let Some(bbox) = clipped else {
                    report.dropped_empty_boxes += 1;
                    continue;
                };
                report.clipped_boxes += changed as usize;
                // A polygon's area is its mask's (shoelace), as COCO's `area` of a polygon is.
                let area = match &polygon {
                    Some(p) => crate::structures::quad::polygon_area(
                        &p.chunks_exact(2).map(|c| [c[0], c[1]]).collect::<Vec<_>>(),
                    ),
                    None => (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]),
                };
                annotations.push(Annotation {
                    id: next_ann,
                    bbox,
                    label,
                    iscrowd: false,
                    area,
                    segmentation: polygon.map(|p| serde_json::json!([p])),
                    rbox: None,
                    difficulty: 0,
                });
                next_ann += 1;
            }
        }
        images.push(ImageEntry { id, path, width: w, height: h, annotations });
    }
    report.images = images.len();
    report.annotations = images.iter().map(|i| i.annotations.len()).sum();
    report.background_images = images.iter().filter(|i| i.annotations.is_empty()).count();
    let name = yaml.file_stem().and_then(|s| s.to_str()).unwrap_or("dataset").to_string();
    Ok(Dataset { name, images, categories, report, coco_file: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_rows() {
        assert_eq!(parse_row("2 0.5 0.5 0.2 0.4", 100.0, 50.0).unwrap(), Some((2, [40.0, 15.0, 60.0, 35.0], None)));
        let poly = vec![1.0, 2.0, 3.0, 2.0, 2.0, 6.0];
        assert_eq!(
            parse_row("1 0.1 0.2 0.3 0.2 0.2 0.6", 10.0, 10.0).unwrap(),
            Some((1, [1.0, 2.0, 3.0, 6.0], Some(poly)))
        );
        assert!(parse_row("1 0.1 0.2 0.3 0.2 0.5", 10.0, 10.0).unwrap_err().contains("polygon"));
        assert_eq!(parse_row("   ", 1.0, 1.0).unwrap(), None);
        assert!(parse_row("1 0.5 0.5 0.2", 1.0, 1.0).unwrap_err().contains("got 4"));
        assert!(parse_row("x 0.5 0.5 0.2 0.1", 1.0, 1.0).is_err());
    }

    #[test]
    fn labels_beside_images() {
        assert_eq!(label_path(Path::new("/d/images/val/a.jpg")), PathBuf::from("/d/labels/val/a.txt"));
    }
}
