//! DOTA `labelTxt` folders: one text file per image, one object per line as
//! `x1 y1 x2 y2 x3 y3 x4 y4 class [difficulty]`, optionally preceded by `imagesource:` and
//! `gsd:` header lines. Quadrilaterals become rotated boxes with OpenCV's `minAreaRect`
//! (mmrotate's `qbox2rbox`); classes are matched by name against a configurable list.
//!
//! Layout: `ROOT/images/` with `ROOT/labelTxt/` (DOTA's release), `ROOT/annfiles/` (what
//! mmrotate's and our split tool write) or `ROOT/labels/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{Annotation, Category, CheckReport, Dataset, ImageEntry, clip_box};
use crate::error::{Error, Result};
use crate::structures::quad::{self, Quad, quad_to_rbox};

/// One object line of a label file.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelRow {
    pub quad: Quad,
    pub class: String,
    pub difficulty: u32,
}

/// Parses one line: `Ok(None)` for blank lines and the `imagesource:` / `gsd:` headers.
pub fn parse_row(line: &str) -> std::result::Result<Option<LabelRow>, String> {
    let line = line.trim_start_matches('\u{feff}');
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.is_empty() || (fields.len() == 1 && fields[0].contains(':')) {
        return Ok(None);
    }
    if !(9..=10).contains(&fields.len()) {
        return Err(format!(
            "expected 9 or 10 fields `x1 y1 x2 y2 x3 y3 x4 y4 class [difficulty]`, got {}",
            fields.len()
        ));
    }
    let mut q = [0f32; 8];
    for (v, f) in q.iter_mut().zip(&fields[..8]) {
        *v = f
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("coordinate '{f}' is not a number"))?;
    }
    let difficulty = match fields.get(9) {
        Some(d) => d.parse::<u32>().map_err(|_| format!("difficulty '{d}' is not a non-negative integer"))?,
        None => 0,
    };
    Ok(Some(LabelRow { quad: q, class: fields[8].to_string(), difficulty }))
}

/// Label rows with their line numbers (1-based).
pub type NumberedRows = Vec<(usize, LabelRow)>;

/// The rows of one label file with their line numbers; unusable lines come back as
/// `file:line: reason`.
pub fn read_label_file(path: &Path) -> Result<(NumberedRows, Vec<String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let (mut rows, mut bad) = (Vec::new(), Vec::new());
    for (n, line) in crate::files::strip_bom(&text).lines().enumerate() {
        match parse_row(line) {
            Ok(Some(row)) => rows.push((n + 1, row)),
            Ok(None) => {}
            Err(e) => bad.push(format!("{}:{}: {e}", path.display(), n + 1)),
        }
    }
    Ok((rows, bad))
}

/// The label folder of a DOTA root, the first of `labelTxt`, `annfiles`, `labels` present.
pub fn label_dir(root: &Path) -> Option<PathBuf> {
    ["labelTxt", "annfiles", "labels"].iter().map(|d| root.join(d)).find(|p| p.is_dir())
}

const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"];

/// Image files of a folder by file stem (sorted).
pub fn images_by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
    for e in entries {
        let path = e?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if path.is_file()
            && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            out.insert(stem.to_string(), path);
        }
    }
    Ok(out)
}

/// Label files of a folder by file stem (sorted).
pub fn labels_by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
    for e in entries {
        let path = e?.path();
        // Only regular files: a FIFO named `x.txt` would block the reader forever.
        if path.extension().is_some_and(|e| e == "txt")
            && path.is_file()
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            out.insert(stem.to_string(), path);
        }
    }
    Ok(out)
}

/// The object of a label row. Degenerate quads (points on one line) are kept, as mmrotate
/// keeps them: they count as ground truth no detection can match, and training's
/// `FilterAnnotations` step drops them.
pub fn annotation(row: &LabelRow, label: usize, id: u64, width: usize, height: usize) -> Annotation {
    let rbox = quad_to_rbox(&row.quad);
    let p = quad::points(&row.quad);
    let xs = p.map(|v| v[0] as f64);
    let ys = p.map(|v| v[1] as f64);
    let lo = |v: [f64; 4]| v.into_iter().fold(f64::INFINITY, f64::min);
    let hi = |v: [f64; 4]| v.into_iter().fold(f64::NEG_INFINITY, f64::max);
    // The axis-aligned box is for drawing and statistics only; the rotated box, which
    // mmrotate does not clip, is the object.
    let bbox = clip_box([lo(xs), lo(ys), hi(xs), hi(ys)], width, height).0.unwrap_or([0.0; 4]);
    Annotation {
        id,
        bbox,
        label,
        iscrowd: false,
        area: quad::polygon_area(&p.map(|v| [v[0] as f64, v[1] as f64])),
        segmentation: None,
        rbox: Some(rbox),
        difficulty: row.difficulty,
    }
}

/// Loads a DOTA root (`images/` + a label folder, see [`label_dir`]).
pub fn load(root: &Path, classes: &[String]) -> Result<Dataset> {
    let images = root.join("images");
    if !images.is_dir() {
        return Err(Error::Other(format!(
            "{}: not a DOTA folder (expected `images/` and `labelTxt/` or `annfiles/` inside)",
            root.display()
        )));
    }
    let labels = label_dir(root);
    let name = root.file_name().and_then(|s| s.to_str()).unwrap_or("dota").to_string();
    load_folders(&name, &images, labels.as_deref(), classes)
}

/// Loads images from `images` with their label files from `labels` (same file stem).
/// Images without a label file are background images; bad rows, unknown classes and label
/// files without an image are reported, and the rest loads.
pub fn load_folders(name: &str, images: &Path, labels: Option<&Path>, classes: &[String]) -> Result<Dataset> {
    if classes.is_empty() {
        return Err(Error::Other("the class list is empty".into()));
    }
    let image_files = images_by_stem(images)?;
    let label_files = match labels {
        Some(d) => labels_by_stem(d)?,
        None => BTreeMap::new(),
    };
    let label_of: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut report = CheckReport {
        labels_without_images: label_files
            .iter()
            .filter(|(stem, _)| !image_files.contains_key(*stem))
            .map(|(_, p)| p.clone())
            .collect(),
        ..Default::default()
    };
    let mut entries = Vec::new();
    let mut next_ann = 1u64;
    for (i, (stem, path)) in image_files.iter().enumerate() {
        let (w, h) = match crate::image_io::image_size(path) {
            Ok(s) => s,
            Err(e) => {
                report.unreadable_images.push(e.to_string());
                continue;
            }
        };
        let mut annotations = Vec::new();
        if let Some(lp) = label_files.get(stem) {
            let (rows, bad) = read_label_file(lp)?;
            report.bad_rows.extend(bad);
            for (line, row) in rows {
                let Some(&label) = label_of.get(row.class.as_str()) else {
                    report.unknown_categories += 1;
                    report.bad_rows.push(format!("{}:{line}: unknown class '{}'", lp.display(), row.class));
                    continue;
                };
                let a = annotation(&row, label, next_ann, w, h);
                if !a.rbox.is_some_and(|r| r[2] > 0.0 && r[3] > 0.0) {
                    report.warnings.push(format!(
                        "{}:{line}: degenerate quadrilateral (its points are on one line); kept for evaluation, not trained on",
                        lp.display()
                    ));
                }
                annotations.push(a);
                next_ann += 1;
            }
        }
        entries.push(ImageEntry { id: i as u64 + 1, path: path.clone(), width: w, height: h, annotations });
    }
    report.images = entries.len();
    report.annotations = entries.iter().map(|i| i.annotations.len()).sum();
    report.background_images = entries.iter().filter(|i| i.annotations.is_empty()).count();
    let categories = classes.iter().enumerate().map(|(i, n)| Category { id: i as u64, name: n.clone() }).collect();
    Ok(Dataset { name: name.to_string(), images: entries, categories, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        let r = parse_row("1 2 3 4 5 6 7 8 plane 1").unwrap().unwrap();
        assert_eq!((r.quad, r.class.as_str(), r.difficulty), ([1., 2., 3., 4., 5., 6., 7., 8.], "plane", 1));
        assert_eq!(parse_row("1 2 3 4 5 6 7 8 ship").unwrap().unwrap().difficulty, 0);
        assert_eq!(parse_row("imagesource:GoogleEarth").unwrap(), None);
        assert_eq!(parse_row("gsd:0.146").unwrap(), None);
        assert_eq!(parse_row("\u{feff}  ").unwrap(), None);
        assert!(parse_row("1 2 3 4 5 6 7 plane 0").unwrap_err().contains("'plane'"));
        assert!(parse_row("1 2 3 4 5 6 7 plane").unwrap_err().contains("got 8"));
        assert!(parse_row("1 2 x 4 5 6 7 8 plane 0").unwrap_err().contains("'x'"));
        assert!(parse_row("1 2 3 4 5 6 7 8 plane hard").unwrap_err().contains("'hard'"));
        assert!(parse_row("1 2 3 4 5 6 7 8 plane 0 extra").unwrap_err().contains("got 11"));
    }
}
