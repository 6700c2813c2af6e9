//! DOTA `labelTxt` folders: one text file per image, one object per line as
//! `x1 y1 x2 y2 x3 y3 x4 y4 class [difficulty]`, optionally preceded by `imagesource:` and
//! `gsd:` header lines. Quadrilaterals become rotated boxes with OpenCV's `minAreaRect`
//! (mmrotate's `qbox2rbox`); classes are matched by name against a configurable list.
//!
//! DIOR-R's XML annotations (one `.xml` per image, `<object>` with `<name>` and
//! `<robndbox>` corners, or an axis-aligned `<bndbox>`) load the same way, as mmrotate's
//! `DIORDataset` reads them: class names lower-cased, `<difficult>` not used.
//!
//! Layout: `ROOT/images/` (or DIOR's `JPEGImages-trainval/`, `JPEGImages/`) with
//! `ROOT/labelTxt/` (DOTA's release), `ROOT/annfiles/` (what mmrotate's and our split tool
//! write), `ROOT/labels/`, or for XML `ROOT/annotations/` (DIOR's
//! `Annotations/Oriented Bounding Boxes/`).

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

/// The rows of one label file (DOTA text, or DIOR-R XML for `.xml`) with their line numbers
/// (1-based); unusable lines come back as `file:line: reason`.
pub fn read_label_file(path: &Path) -> Result<(NumberedRows, Vec<String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    if is_xml(path) {
        return read_xml_labels(path, &text);
    }
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

fn is_xml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml"))
}

/// The `<object>`s of a DIOR-R / VOC-style XML file, numbered by the line they start on.
fn read_xml_labels(path: &Path, text: &str) -> Result<(NumberedRows, Vec<String>)> {
    let doc = roxmltree::Document::parse(text.trim_start_matches('\u{feff}'))
        .map_err(|e| Error::Other(format!("{}: not a valid XML annotation: {e}", path.display())))?;
    let (mut rows, mut bad) = (Vec::new(), Vec::new());
    for obj in doc.descendants().filter(|n| n.has_tag_name("object")) {
        let line = doc.text_pos_at(obj.range().start).row as usize;
        match xml_object(obj) {
            Ok(row) => rows.push((line, row)),
            Err(e) => bad.push(format!("{}:{line}: {e}", path.display())),
        }
    }
    Ok((rows, bad))
}

fn xml_child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(tag))
}

/// DIOR-R's oriented box (corners left-top, right-top, right-bottom, left-bottom) or, for
/// horizontal annotations, `<bndbox>` as its four corners (mmrotate's `ann_type='hbb'`).
fn xml_object(obj: roxmltree::Node) -> std::result::Result<LabelRow, String> {
    let number = |n: roxmltree::Node, tag: &str| -> std::result::Result<f32, String> {
        let t = xml_child(n, tag).and_then(|c| c.text()).map(str::trim).unwrap_or("");
        t.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("<{tag}> '{t}' is not a number"))
    };
    let class = xml_child(obj, "name")
        .and_then(|n| n.text())
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .ok_or("object without a <name>")?;
    let quad = if let Some(r) = xml_child(obj, "robndbox") {
        let mut q = [0f32; 8];
        for (i, corner) in ["left_top", "right_top", "right_bottom", "left_bottom"].iter().enumerate() {
            q[2 * i] = number(r, &format!("x_{corner}"))?;
            q[2 * i + 1] = number(r, &format!("y_{corner}"))?;
        }
        q
    } else if let Some(b) = xml_child(obj, "bndbox") {
        let [x1, y1, x2, y2] = [number(b, "xmin")?, number(b, "ymin")?, number(b, "xmax")?, number(b, "ymax")?];
        [x1, y1, x2, y1, x2, y2, x1, y2]
    } else {
        return Err("object without <robndbox> or <bndbox>".into());
    };
    Ok(LabelRow { quad, class, difficulty: 0 })
}

/// The label folder of a root: the first of `labelTxt`, `annfiles`, `labels`, `annotations`,
/// `Annotations/Oriented Bounding Boxes`, `Annotations` present.
pub fn label_dir(root: &Path) -> Option<PathBuf> {
    ["labelTxt", "annfiles", "labels", "annotations", "Annotations/Oriented Bounding Boxes", "Annotations"]
        .iter()
        .map(|d| root.join(d))
        .find(|p| p.is_dir())
}

/// The image folder of a root: `images`, or DIOR's `JPEGImages-trainval` / `JPEGImages`.
pub fn image_dir(root: &Path) -> Option<PathBuf> {
    ["images", "JPEGImages-trainval", "JPEGImages"].iter().map(|d| root.join(d)).find(|p| p.is_dir())
}

/// The classes a root's labels imply when none are given: DIOR-R's 20 for XML labels,
/// DOTA-v1.0's 15 otherwise.
pub fn default_classes(root: &Path) -> Vec<String> {
    let labels = label_dir(root).unwrap_or_else(|| root.to_path_buf());
    let xml = labels_by_stem(&labels).is_ok_and(|m| m.values().any(|p| is_xml(p)));
    crate::classes::rotated_preset(if xml { "dior" } else { "dota" })
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

/// Label files (`.txt`, `.xml`) of a folder by file stem (sorted).
pub fn labels_by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
    for e in entries {
        let path = e?.path();
        // Only regular files: a FIFO named `x.txt` would block the reader forever.
        if (path.extension().is_some_and(|e| e == "txt") || is_xml(&path))
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

/// Loads a DOTA (or DIOR-R) root: an image folder ([`image_dir`]) and a label folder
/// ([`label_dir`]).
pub fn load(root: &Path, classes: &[String]) -> Result<Dataset> {
    let Some(images) = image_dir(root) else {
        return Err(Error::Other(format!(
            "{}: not a DOTA folder (expected `images/` and `labelTxt/` or `annfiles/` inside)",
            root.display()
        )));
    };
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
                } else if a.rbox.is_some_and(|r| !(0.0..=w as f32).contains(&r[0]) || !(0.0..=h as f32).contains(&r[1]))
                {
                    // Usually labels of another resolution than the image: no prior can learn it.
                    report.warnings.push(format!(
                        "{}:{line}: object centre outside the {w}×{h} image (labels of another resolution?); no prior can learn it",
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
    Ok(Dataset { name: name.to_string(), images: entries, categories, report, coco_file: None })
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
