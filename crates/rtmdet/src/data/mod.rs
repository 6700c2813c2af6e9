//! Datasets: COCO JSON ([`coco`]), the Ultralytics YOLO layout ([`yolo`]) and DOTA `labelTxt`
//! folders ([`dota`]), loaded into one [`Dataset`] with a [`CheckReport`] of everything that
//! was wrong with them.

pub mod coco;
pub mod dota;
pub mod pipeline;
pub mod rotated_transforms;
pub mod split;
pub mod transforms;
pub mod yolo;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::structures::rotated::RBox;

/// One object of an image, in image pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    pub id: u64,
    /// `[x1, y1, x2, y2]`, clipped to the image.
    pub bbox: [f64; 4],
    /// Contiguous class index (position of the category in id order).
    pub label: usize,
    pub iscrowd: bool,
    /// The annotation's area (COCO `area`, else the box area).
    pub area: f64,
    /// Polygons or RLE as given (kept for mask work).
    pub segmentation: Option<serde_json::Value>,
    /// The rotated box of a DOTA-style object (`cv2.minAreaRect` of its quadrilateral).
    pub rbox: Option<RBox>,
    /// DOTA's difficulty flag (0 elsewhere); which values are ignored is the evaluator's
    /// choice (`diff_thr`).
    pub difficulty: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageEntry {
    pub id: u64,
    pub path: PathBuf,
    pub width: usize,
    pub height: usize,
    pub annotations: Vec<Annotation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Category {
    /// The dataset's own id (COCO ids are not contiguous; YOLO ids are the class index).
    pub id: u64,
    pub name: String,
}

/// What the loader found and repaired.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckReport {
    pub images: usize,
    pub annotations: usize,
    pub missing_images: Vec<PathBuf>,
    pub unreadable_images: Vec<String>,
    pub clipped_boxes: usize,
    pub dropped_empty_boxes: usize,
    pub unknown_categories: usize,
    pub duplicate_image_ids: Vec<u64>,
    /// Images without objects (valid background images).
    pub background_images: usize,
    /// Label rows that could not be used, as `file:line: reason` (the rest loads).
    pub bad_rows: Vec<String>,
    /// Label files with no image beside them (DOTA).
    pub labels_without_images: Vec<PathBuf>,
    /// Rows that load but deserve a look, as `file:line: what`.
    pub warnings: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.missing_images.is_empty()
            && self.unreadable_images.is_empty()
            && self.clipped_boxes == 0
            && self.dropped_empty_boxes == 0
            && self.unknown_categories == 0
            && self.duplicate_image_ids.is_empty()
            && self.bad_rows.is_empty()
            && self.labels_without_images.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} images, {} objects, {} background images",
            self.images, self.annotations, self.background_images
        )?;
        let mut issue = |n: usize, what: &str| {
            if n > 0 { write!(f, "; {n} {what}") } else { Ok(()) }
        };
        issue(self.missing_images.len(), "missing image files (skipped)")?;
        issue(self.unreadable_images.len(), "unreadable images (skipped)")?;
        issue(self.clipped_boxes, "boxes outside the image (clipped)")?;
        issue(self.dropped_empty_boxes, "zero or negative size boxes (dropped)")?;
        issue(self.unknown_categories, "annotations with unknown category ids (dropped)")?;
        issue(self.duplicate_image_ids.len(), "duplicate image ids (later ones dropped)")?;
        issue(self.bad_rows.len(), "unusable label rows (skipped)")?;
        issue(self.labels_without_images.len(), "label files without an image (skipped)")?;
        issue(self.warnings.len(), "warnings")
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub images: Vec<ImageEntry>,
    pub categories: Vec<Category>,
    pub report: CheckReport,
    /// The COCO file the dataset was read from: evaluation scores against its annotations as
    /// pycocotools reads them (nothing clipped or dropped), as mmdet's `CocoMetric` does.
    pub coco_file: Option<std::path::PathBuf>,
}

impl Dataset {
    /// `.json` → COCO, `.yaml`/`.yml` → Ultralytics (its `val` split unless `split` says), a
    /// folder → DOTA (`images/` + `labelTxt/` or `annfiles/`) with the DOTA-v1.0 classes.
    pub fn load(path: &Path, split: &str) -> Result<Dataset> {
        if path.is_dir() {
            return dota::load(path, &dota::default_classes(path));
        }
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("json") => coco::load(path, None),
            Some("yaml") | Some("yml") => yolo::load(path, split),
            _ => {
                Err(Error::Other(format!("{}: expected a COCO .json or an Ultralytics .yaml dataset", path.display())))
            }
        }
    }

    pub fn class_names(&self) -> Vec<String> {
        self.categories.iter().map(|c| c.name.clone()).collect()
    }
}

/// Clips `[x1, y1, x2, y2]` to the image; `None` when nothing of positive size is left.
/// The flag says whether clipping changed the box.
pub(crate) fn clip_box(b: [f64; 4], w: usize, h: usize) -> (Option<[f64; 4]>, bool) {
    let c =
        [b[0].clamp(0.0, w as f64), b[1].clamp(0.0, h as f64), b[2].clamp(0.0, w as f64), b[3].clamp(0.0, h as f64)];
    let changed = c != b;
    if c[2] - c[0] <= 0.0 || c[3] - c[1] <= 0.0 || b.iter().any(|v| !v.is_finite()) {
        return (None, changed);
    }
    (Some(c), changed)
}
