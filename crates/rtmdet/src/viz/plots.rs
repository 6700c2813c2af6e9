//! Metric plots as PNG: precision-recall curves, confusion matrices and training curves,
//! drawn with plotters into a buffer and saved through the `image` crate.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
    });
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("plotting failed: {e}"))
}

/// Renders `draw` into a `w`×`h` RGB canvas and saves it as PNG at `path`.
fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer size");
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| Error::Other(format!("encoding {}: {e}", path.display())))?;
    crate::files::write_atomically(path, png.get_ref())
}

/// Precision-recall curves at IoU 0.5: one thin line per class and the class mean in bold.
/// `curves[k]` holds 101 precision values on recall 0, 0.01, ..., 1 (negative: undefined).
pub fn pr_curve(path: &Path, curves: &[(String, Vec<f64>)], map50: f64) -> Result<()> {
    render(path, (900, 700), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Precision-Recall (IoU 0.5), mAP@0.5 = {map50:.3}"), (FONT, 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc("Recall").y_desc("Precision").label_style((FONT, 14)).draw().map_err(plot_err)?;
        let recall = |r: usize| r as f64 / 100.0;
        let valid: Vec<&(String, Vec<f64>)> = curves.iter().filter(|(_, p)| p.iter().any(|&v| v >= 0.0)).collect();
        for (_, p) in &valid {
            let pts = p.iter().enumerate().filter(|(_, v)| **v >= 0.0).map(|(r, v)| (recall(r), *v));
            chart.draw_series(LineSeries::new(pts, RGBColor(150, 170, 200).stroke_width(1))).map_err(plot_err)?;
        }
        if !valid.is_empty() {
            let mean: Vec<(f64, f64)> = (0..101)
                .map(|r| (recall(r), valid.iter().map(|(_, p)| p[r].max(0.0)).sum::<f64>() / valid.len() as f64))
                .collect();
            chart
                .draw_series(LineSeries::new(mean, BLUE.stroke_width(3)))
                .map_err(plot_err)?
                .label(format!("all classes {map50:.3}"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(3)));
            chart.configure_series_labels().label_font((FONT, 16)).border_style(BLACK).draw().map_err(plot_err)?;
        }
        Ok(())
    })
}

/// A confusion matrix `[pred][true]` with a background row/column last, normalised per
/// true class (column), as a heat map.
pub fn confusion_matrix(path: &Path, matrix: &[Vec<f64>], names: &[String]) -> Result<()> {
    let n = matrix.len();
    let side = (40 + 14 * n as u32).clamp(500, 1400);
    render(path, (side + 140, side + 120), |root| {
        let labels: Vec<String> = names.iter().cloned().chain(std::iter::once("background".to_string())).collect();
        let show_ticks = n <= 40;
        let mut chart = ChartBuilder::on(root)
            .caption("Confusion matrix (normalised per true class)", (FONT, 22))
            .margin(10)
            .x_label_area_size(if show_ticks { 110 } else { 30 })
            .y_label_area_size(if show_ticks { 110 } else { 30 })
            .build_cartesian_2d(0..n as i32, 0..n as i32)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("True")
            .y_desc("Predicted")
            .x_labels(if show_ticks { n } else { 0 })
            .y_labels(if show_ticks { n } else { 0 })
            .x_label_formatter(&|i| labels.get(*i as usize).cloned().unwrap_or_default())
            .y_label_formatter(&|i| labels.get(*i as usize).cloned().unwrap_or_default())
            .label_style((FONT, 11))
            .draw()
            .map_err(plot_err)?;
        let col_sum: Vec<f64> = (0..n).map(|t| (0..n).map(|p| matrix[p][t]).sum::<f64>()).collect();
        chart
            .draw_series((0..n).flat_map(|p| (0..n).map(move |t| (p, t))).map(|(p, t)| {
                let v = if col_sum[t] > 0.0 { matrix[p][t] / col_sum[t] } else { 0.0 };
                let shade = (255.0 * (1.0 - v)) as u8;
                Rectangle::new(
                    [(t as i32, p as i32), (t as i32 + 1, p as i32 + 1)],
                    RGBColor(shade, shade, 255).filled(),
                )
            }))
            .map_err(plot_err)?;
        Ok(())
    })
}

/// Curves over epochs, one small panel per series (`results.png` of a training run).
pub fn series_grid(path: &Path, series: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let cols = 3usize;
    let rows = series.len().div_ceil(cols).max(1);
    render(path, (1200, 300 * rows as u32), |root| {
        for (area, (name, pts)) in root.split_evenly((rows, cols)).iter().zip(series) {
            let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
            let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
            if !(x0.is_finite() && y0.is_finite()) {
                continue;
            }
            let pad = ((y1 - y0) * 0.1).max(1e-6);
            let mut chart = ChartBuilder::on(area)
                .caption(name, (FONT, 16))
                .margin(8)
                .x_label_area_size(25)
                .y_label_area_size(45)
                .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
                .map_err(plot_err)?;
            chart.configure_mesh().label_style((FONT, 11)).draw().map_err(plot_err)?;
            chart.draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2))).map_err(plot_err)?;
        }
        Ok(())
    })
}
