//! DOTA annotations: quadrilateral → rotated box exactly as `cv2.minAreaRect` (OpenCV 4.10,
//! mmrotate's `qbox2rbox`), and the split tool's polygon/window IoF as shapely computes it.
//! Fixtures: `tests/data/dota/quad_fixtures.json` (`tools/gen_quad_fixtures.py`).

use rtmdet::structures::quad::{Quad, min_area_rect, window_iof};
use serde_json::Value;

use crate::common::*;

fn fixtures() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dota/quad_fixtures.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Integer quads (every DOTA label) bit-equal: centre, size and angle in degrees as OpenCV
/// returns them (which side is `w`, and so the angle, depends on OpenCV's hull order and
/// caliper tie-breaking). Float quads: 3 of 78 differ in the last 1–2 ulps (OpenCV's build
/// contracts some float expression differently; no rounding order we tried matches all), so
/// they are held to 4 ulps; a wrong side or angle convention is off by far more.
#[test]
fn min_area_rect_matches_opencv() {
    let f = fixtures();
    let cases = f["min_area_rect"].as_array().unwrap();
    let (mut wrong, mut inexact) = (Vec::new(), 0);
    for (i, c) in cases.iter().enumerate() {
        let q: Quad = floats(&c["quad"]).try_into().unwrap();
        let want = floats(&c["rect"]);
        let pts = [[q[0], q[1]], [q[2], q[3]], [q[4], q[5]], [q[6], q[7]]];
        let r = min_area_rect(&pts);
        let ours = [r.center[0], r.center[1], r.size[0], r.size[1], r.angle_deg];
        let integer = q.iter().all(|v| v.fract() == 0.0);
        let ulps = ours.iter().zip(&want).map(|(a, b)| (a.to_bits() as i64 - b.to_bits() as i64).abs()).max().unwrap();
        inexact += (ulps > 0) as usize;
        if (integer && ulps > 0) || ulps > 4 {
            wrong.push(format!("case {i}: quad {q:?}: ours {ours:?}, OpenCV {want:?}"));
        }
    }
    println!("{} cases, {inexact} not bit-equal", cases.len());
    assert!(wrong.is_empty(), "{} of {} differ:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

/// shapely's area in f64 agrees to rounding: 1e-12 relative covers the different summation
/// order of the clipped polygon's vertices.
#[test]
fn window_iof_matches_shapely() {
    let f = fixtures();
    let mut worst = 0f64;
    for c in f["iof"].as_array().unwrap() {
        let q: Quad = floats(&c["quad"]).try_into().unwrap();
        let w: Vec<f64> = c["window"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let ours = window_iof(&q, [w[0], w[1], w[2], w[3]]);
        let want = c["iof"].as_f64().unwrap();
        worst = worst.max((ours - want).abs());
        assert!((ours - want).abs() <= 1e-12, "quad {q:?} window {w:?}: {ours} vs {want}");
    }
    println!("worst |iof - shapely| = {worst:.1e}");
}

/// The training step's ground truth: our DOTA loader on mmrotate's split annotation files
/// gives `minAreaRect` of the quads, and the Resize's `rescale_` at scale 1 gives mmrotate's
/// `gt_rboxes_*` bit for bit (reference quirk 4), with the labels in order.
#[test]
fn split_annotations_load_as_mmrotate_ground_truth() {
    use rtmdet::data::dota::read_label_file;
    use rtmdet::structures::quad::quad_to_rbox;
    use rtmdet::structures::rotated::rescale;
    let mut npz = Npz::open(reference("rotated/train/rotated_rtmdet_tiny_ref_seed1_batch2.npz"));
    let classes = rtmdet::classes::rotated_preset("dota");
    for (b, patch) in ["aerial_demo__1024__0___0", "dota_demo__1024__0___541"].iter().enumerate() {
        let (rows, bad) = read_label_file(&reference(&format!("rotated/split/annfiles/{patch}.txt"))).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        let quads = npz.f64(&format!("gt_qboxes_{b}"));
        let want = npz.f32(&format!("gt_rboxes_{b}")).1;
        let labels = npz.i64(&format!("gt_labels_{b}"));
        assert_eq!(rows.len(), labels.len());
        for (j, (_, row)) in rows.iter().enumerate() {
            assert_eq!(row.quad.map(|v| v as f64).as_slice(), &quads[j * 8..j * 8 + 8], "{patch} row {j}: quad");
            assert_eq!(
                classes.iter().position(|c| *c == row.class),
                Some(labels[j] as usize),
                "{patch} row {j}: label"
            );
            let ours = rescale(&quad_to_rbox(&row.quad), 1.0, 1.0);
            assert_eq!(ours.as_slice(), &want[j * 5..j * 5 + 5], "{patch} row {j}: rbox");
        }
    }
}

/// `split_image` against mmrotate's `img_split.py` on the four DOTA samples
/// (`reference/rotated/split/`): the same windows, patch names, annotation lines (text equal)
/// and patch pixels (sha256 of the BGR bytes read back from our PNGs). `P0004` crashed the
/// tool (a self-intersecting quad, shapely TopologyException); we skip that object, say so,
/// and split the image.
#[test]
fn dota_split_matches_mmrotate() {
    use rtmdet::data::dota::read_label_file;
    use rtmdet::data::split::{SplitSettings, split_image};
    use sha2::{Digest, Sha256};
    let split: Value =
        serde_json::from_str(&std::fs::read_to_string(reference("rotated/split/split.json")).unwrap()).unwrap();
    let out = std::env::temp_dir().join(format!("rtmdet-split-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let settings = SplitSettings::default();
    for (stem, run) in split["runs"].as_object().unwrap() {
        let image = ["png", "jpg"]
            .iter()
            .map(|e| shared(&format!("assets/dota/images/{stem}.{e}")))
            .find(|p| p.is_file())
            .unwrap();
        let img = rtmdet::image_io::read_image(&image).unwrap();
        let (rows, bad) = read_label_file(&reference(&format!("rotated/split/src_labelTxt/{stem}.txt"))).unwrap();
        assert!(bad.is_empty());
        let (patches, skipped) = split_image(stem, &img, &rows, &settings, &out).unwrap();
        let windows: Vec<Vec<u64>> = patches.iter().map(|p| p.window.iter().map(|&v| v as u64).collect()).collect();
        let want: Vec<Vec<u64>> = run["windows_xyxy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect())
            .collect();
        assert_eq!(windows, want, "{stem}: windows");
        if run["returncode"].as_i64() == Some(1) {
            assert_eq!(skipped.len(), 1, "{stem}: the invalid quad is reported: {skipped:?}");
            continue;
        }
        assert!(skipped.is_empty(), "{stem}: {skipped:?}");
        for (ours, theirs) in patches.iter().zip(run["patches"].as_array().unwrap()) {
            assert_eq!(ours.name, theirs["id"].as_str().unwrap());
            let text = std::fs::read_to_string(out.join("annfiles").join(format!("{}.txt", ours.name))).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let want: Vec<&str> = theirs["ann_lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
            assert_eq!(lines, want, "{}: annotation lines", ours.name);
            let patch = rtmdet::image_io::read_image(&out.join("images").join(format!("{}.png", ours.name))).unwrap();
            let shape: Vec<u64> = theirs["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!([patch.height as u64, patch.width as u64, 3], shape.as_slice());
            let sha = format!("{:x}", Sha256::digest(&patch.data));
            assert_eq!(sha, theirs["pixels_sha256"].as_str().unwrap(), "{}: pixels", ours.name);
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Loading a DOTA folder reports what training cannot use, naming file and line, and loads
/// the rest: a degenerate quadrilateral, an object outside its image (the shared sample
/// P2805 is a 170-px image with 1024-px labels), a bad row, an unknown class, a label file
/// without an image.
#[test]
fn dota_folder_problems_are_reported_by_file_and_line() {
    let dir = std::env::temp_dir().join(format!("rtmdet-dota-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("labelTxt")).unwrap();
    let src = shared("assets/dota");
    for f in ["P0004__1__0___0.png", "P2805__1024__0___0.png"] {
        std::fs::copy(src.join("images").join(f), dir.join("images").join(f)).unwrap();
    }
    std::fs::copy(src.join("labelTxt/P2805__1024__0___0.txt"), dir.join("labelTxt/P2805__1024__0___0.txt")).unwrap();
    std::fs::write(
        dir.join("labelTxt/P0004__1__0___0.txt"),
        "imagesource:GoogleEarth\ngsd:0.1\n10 10 20 10 20 20 10 20 plane 0\n5 5 10 10 15 15 20 20 ship 0\n\
         1 2 3 plane\n10 10 20 10 20 20 10 20 spaceship 1\n",
    )
    .unwrap();
    std::fs::write(dir.join("labelTxt/orphan.txt"), "").unwrap();
    let data = rtmdet::data::dota::load(&dir, &rtmdet::classes::rotated_preset("dota")).unwrap();
    let r = &data.report;
    let text = |v: &[String]| v.join("\n");
    assert_eq!(data.images.len(), 2);
    assert_eq!(r.annotations, 2 + 4, "{r:?}");
    assert!(text(&r.warnings).contains("P0004__1__0___0.txt:4: degenerate quadrilateral"), "{r:?}");
    assert!(text(&r.warnings).contains("P2805__1024__0___0.txt:1: object centre outside the 170×170 image"), "{r:?}");
    assert!(text(&r.bad_rows).contains("P0004__1__0___0.txt:5: expected 9 or 10 fields"), "{r:?}");
    assert!(text(&r.bad_rows).contains("P0004__1__0___0.txt:6: unknown class 'spaceship'"), "{r:?}");
    assert_eq!(r.labels_without_images.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// DIOR-R's XML annotations load as mmrotate's `DIORDataset` reads them: `<robndbox>`
/// corners through `qbox2rbox`, class names lower-cased against DIOR-R's 20 classes (the
/// default for XML labels), `<bndbox>` as an axis-aligned quadrilateral; broken objects are
/// reported by file and line, a file that is not XML by name.
#[test]
fn dior_xml_annotations_load_as_mmrotate() {
    let root = shared("assets/dior");
    let classes = rtmdet::data::dota::default_classes(&root);
    assert_eq!(classes, rtmdet::classes::rotated_preset("dior"));
    let data = rtmdet::data::dota::load(&root, &classes).unwrap();
    assert_eq!(data.images.len(), 1);
    let a = &data.images[0].annotations;
    assert_eq!(a.len(), 1);
    assert_eq!(classes[a[0].label], "golffield");
    let quad: Quad = [133.0, 237.0, 684.0, 237.0, 684.0, 672.0, 133.0, 672.0];
    assert_eq!(a[0].rbox, Some(rtmdet::structures::quad::quad_to_rbox(&quad)));
    assert_eq!(a[0].rbox.unwrap()[..4], [408.5, 454.5, 435.0, 551.0]);

    let dir = std::env::temp_dir().join(format!("rtmdet-dior-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let xml = "<annotation>\n  <object>\n    <name>Ship</name>\n    <bndbox><xmin>1</xmin><ymin>2</ymin>\
               <xmax>11</xmax><ymax>7</ymax></bndbox>\n  </object>\n  <object>\n    <name>ship</name>\n    \
               <robndbox><x_left_top>abc</x_left_top></robndbox>\n  </object>\n  <object>\n  </object>\n</annotation>\n";
    let path = dir.join("a.xml");
    std::fs::write(&path, xml).unwrap();
    let (rows, bad) = rtmdet::data::dota::read_label_file(&path).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0, rows[0].1.class.as_str()), (2, "ship"));
    assert_eq!(rows[0].1.quad, [1.0, 2.0, 11.0, 2.0, 11.0, 7.0, 1.0, 7.0]);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].ends_with("a.xml:6: <x_left_top> 'abc' is not a number"), "{bad:?}");
    assert!(bad[1].ends_with("a.xml:10: object without a <name>"), "{bad:?}");
    std::fs::write(&path, "<annotation><object>").unwrap();
    let err = rtmdet::data::dota::read_label_file(&path).unwrap_err().to_string();
    assert!(err.contains("a.xml: not a valid XML annotation"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
