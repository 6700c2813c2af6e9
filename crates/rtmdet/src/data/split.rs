//! Splitting large aerial images into overlapping patches, as mmrotate's
//! `tools/data/dota/split/img_split.py` does (reference README, quirk 12), and the patch
//! names that carry each patch's offset so predictions can be merged back.
//!
//! * Windows of `size` every `size - gap` pixels from 0; the last start moves back to
//!   `width - size` (same for y); a window is kept when the image covers more than
//!   `img_rate_thr` of it, or, when none does, the windows within 0.01 of the best rate.
//!   A rate `r` only changes the window: `int(size / r)` and `int(gap / r)`.
//! * A patch is the crop, padded bottom/right with a constant colour to the window size.
//! * An object goes to a window when the part of its quadrilateral inside is at least
//!   `iof_thr` of it; its coordinates are translated, not clipped, and a truncated object
//!   gets difficulty 2.

use std::path::Path;

use super::dota::LabelRow;
use crate::error::{Error, Result};
use crate::image_io::BgrImage;
use crate::structures::quad::{self, window_iof};

/// The split tool's settings (`ss_trainval.json`'s by default, with its padding colour).
#[derive(Clone, Debug, PartialEq)]
pub struct SplitSettings {
    pub sizes: Vec<usize>,
    pub gaps: Vec<usize>,
    pub rates: Vec<f64>,
    pub img_rate_thr: f64,
    pub iof_thr: f64,
    /// B, G, R; `None` leaves edge patches unpadded (`--no-padding`).
    pub padding: Option<[u8; 3]>,
}

impl Default for SplitSettings {
    fn default() -> Self {
        SplitSettings {
            sizes: vec![1024],
            gaps: vec![200],
            rates: vec![1.0],
            img_rate_thr: 0.6,
            iof_thr: 0.7,
            padding: Some([104, 116, 124]),
        }
    }
}

impl SplitSettings {
    /// `(size, gap)` per window kind: every size/gap pair at every rate.
    pub fn window_sizes(&self) -> Result<Vec<(usize, usize)>> {
        if self.sizes.len() != self.gaps.len() || self.sizes.is_empty() {
            return Err(Error::Other("give as many gaps as sizes".into()));
        }
        let mut out = Vec::new();
        for &rate in &self.rates {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(Error::Other(format!("rate {rate} must be positive")));
            }
            for (&size, &gap) in self.sizes.iter().zip(&self.gaps) {
                let (s, g) = ((size as f64 / rate) as usize, (gap as f64 / rate) as usize);
                if s <= g || s == 0 {
                    return Err(Error::Other(format!("window size {s} must exceed its gap {g}")));
                }
                out.push((s, g));
            }
        }
        Ok(out)
    }
}

/// The starts of windows of `size` every `step` along a side of `len` pixels.
fn starts(len: usize, size: usize, step: usize) -> Vec<usize> {
    let n = if len <= size { 1 } else { (len - size).div_ceil(step) + 1 };
    let mut s: Vec<usize> = (0..n).map(|i| i * step).collect();
    if s.len() > 1 && s[s.len() - 1] + size > len {
        let last = s.len() - 1;
        s[last] = len - size;
    }
    s
}

/// The kept windows `[x1, y1, x2, y2]` of a `width` x `height` image, x-major as the tool
/// orders them.
pub fn windows(width: usize, height: usize, sizes: &[(usize, usize)], img_rate_thr: f64) -> Vec<[usize; 4]> {
    let mut all = Vec::new();
    for &(size, gap) in sizes {
        let step = size - gap;
        for x in starts(width, size, step) {
            for y in starts(height, size, step) {
                all.push([x, y, x + size, y + size]);
            }
        }
    }
    let rate = |w: &[usize; 4]| {
        let inside = (w[2].min(width) - w[0].min(width)) * (w[3].min(height) - w[1].min(height));
        inside as f64 / ((w[2] - w[0]) * (w[3] - w[1])) as f64
    };
    let mut rates: Vec<f64> = all.iter().map(rate).collect();
    if !rates.iter().any(|&r| r > img_rate_thr) {
        let best = rates.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        for r in &mut rates {
            if (*r - best).abs() < 0.01 {
                *r = 1.0;
            }
        }
    }
    all.into_iter().zip(rates).filter(|(_, r)| *r > img_rate_thr).map(|(w, _)| w).collect()
}

/// The patch name: `NAME__SIZE__X___Y` (the window size, then its offset).
pub fn patch_name(stem: &str, window: &[usize; 4]) -> String {
    format!("{stem}__{}__{}___{}", window[2] - window[0], window[0], window[1])
}

/// The source image and offset of a patch name, as mmrotate's merge reads it: the name up to
/// the first `__`, and the numbers of the first `__X___Y`.
pub fn parse_patch_name(name: &str) -> Option<(String, f32, f32)> {
    let (source, _) = name.split_once("__")?;
    let bytes = name.as_bytes();
    // The first `__<digits>___<digits>`.
    let mut i = 0;
    while let Some(pos) = name[i..].find("__") {
        let start = i + pos + 2;
        let digits = |from: usize| from + bytes[from..].iter().take_while(|b| b.is_ascii_digit()).count();
        let x_end = digits(start);
        if x_end > start && name[x_end..].starts_with("___") {
            let y_end = digits(x_end + 3);
            if y_end > x_end + 3 {
                let x = name[start..x_end].parse().ok()?;
                let y = name[x_end + 3..y_end].parse().ok()?;
                return Some((source.to_string(), x, y));
            }
        }
        i = start - 1;
    }
    None
}

/// The objects of `rows` that go to `window`: `(row index, truncated)`.
pub fn window_objects(rows: &[LabelRow], window: &[usize; 4], iof_thr: f64) -> Vec<(usize, bool)> {
    let w = window.map(|v| v as f64);
    rows.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let iof = window_iof(&r.quad, w);
            (iof >= iof_thr).then_some((i, iof < 1.0))
        })
        .collect()
}

/// The crop of `window`, padded to the window size with `padding` (B, G, R) unless `None`.
pub fn crop(img: &BgrImage, window: &[usize; 4], padding: Option<[u8; 3]>) -> BgrImage {
    let (x1, y1) = (window[0].min(img.width), window[1].min(img.height));
    let (x2, y2) = (window[2].min(img.width), window[3].min(img.height));
    let (cw, ch) = (x2 - x1, y2 - y1);
    let (w, h) = match padding {
        Some(_) => (window[2] - window[0], window[3] - window[1]),
        None => (cw, ch),
    };
    let fill = padding.unwrap_or([0; 3]);
    let mut data: Vec<u8> = fill.iter().copied().cycle().take(w * h * 3).collect();
    for row in 0..ch {
        let src = ((y1 + row) * img.width + x1) * 3;
        data[row * w * 3..row * w * 3 + cw * 3].copy_from_slice(&img.data[src..src + cw * 3]);
    }
    BgrImage { width: w, height: h, data }
}

/// numpy's `str(np.float32(v))`: the shortest repr, with `.0` for whole numbers.
fn f32_str(v: f32) -> String {
    format!("{v:?}")
}

/// The annotation lines of a patch as the tool writes them: the quad translated by the
/// window offset in float32, the class, and the difficulty (2 when truncated).
pub fn patch_lines(rows: &[LabelRow], objects: &[(usize, bool)], window: &[usize; 4]) -> Vec<String> {
    let (dx, dy) = (-(window[0] as f32), -(window[1] as f32));
    objects
        .iter()
        .map(|&(i, truncated)| {
            let r = &rows[i];
            let coords: Vec<String> =
                r.quad.iter().enumerate().map(|(k, &v)| f32_str(v + if k % 2 == 0 { dx } else { dy })).collect();
            let diff = if truncated { 2 } else { r.difficulty };
            format!("{} {} {}", coords.join(" "), r.class, diff)
        })
        .collect()
}

/// What splitting one image produced.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchInfo {
    pub name: String,
    pub window: [usize; 4],
    pub objects: usize,
}

/// Splits one image: writes `images/NAME.png` and `annfiles/NAME.txt` under `out` for every
/// kept window. `rows` come with their line numbers in the label file. Rows whose
/// quadrilateral is not a simple polygon (mmrotate's tool crashes on them) are left out and
/// returned as messages.
pub fn split_image(
    stem: &str,
    img: &BgrImage,
    rows: &[(usize, LabelRow)],
    settings: &SplitSettings,
    out: &Path,
) -> Result<(Vec<PatchInfo>, Vec<String>)> {
    let mut skipped = Vec::new();
    let valid: Vec<LabelRow> = rows
        .iter()
        .filter_map(|(line, r)| {
            if quad::is_valid(&r.quad) {
                Some(r.clone())
            } else {
                skipped.push(format!(
                    "{stem}.txt:{line}: the {} quadrilateral crosses itself or has no area (object skipped)",
                    r.class
                ));
                None
            }
        })
        .collect();
    let sizes = settings.window_sizes()?;
    let mut patches = Vec::new();
    for window in windows(img.width, img.height, &sizes, settings.img_rate_thr) {
        let name = patch_name(stem, &window);
        let objects = window_objects(&valid, &window, settings.iof_thr);
        crate::image_io::write_png(
            &out.join("images").join(format!("{name}.png")),
            &crop(img, &window, settings.padding),
        )?;
        let mut text = patch_lines(&valid, &objects, &window).join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        crate::files::write_atomically(&out.join("annfiles").join(format!("{name}.txt")), text.as_bytes())?;
        patches.push(PatchInfo { name, window, objects: objects.len() });
    }
    Ok((patches, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts() {
        assert_eq!(starts(1616, 1024, 824), vec![0, 592]);
        assert_eq!(starts(1565, 1024, 824), vec![0, 541]);
        assert_eq!(starts(170, 1024, 824), vec![0]);
        assert_eq!(starts(1024, 1024, 824), vec![0]);
        assert_eq!(starts(3000, 1024, 824), vec![0, 824, 1648, 1976]);
    }

    #[test]
    fn patch_names_round_trip() {
        let w = [592, 541, 1616, 1565];
        assert_eq!(patch_name("dota_demo", &w), "dota_demo__1024__592___541");
        assert_eq!(parse_patch_name("dota_demo__1024__592___541"), Some(("dota_demo".into(), 592.0, 541.0)));
        assert_eq!(parse_patch_name("P2805__1024__0___0__1024__0___0"), Some(("P2805".into(), 0.0, 0.0)));
        assert_eq!(parse_patch_name("plain"), None);
    }

    #[test]
    fn numpy_float_strings() {
        assert_eq!(f32_str(236.0), "236.0");
        assert_eq!(f32_str(-9.0), "-9.0");
        assert_eq!(f32_str(12.5), "12.5");
    }
}
