//! Property tests of every parser: random bytes and mutations of valid files (seeded, so a
//! failure reproduces) must give a value or an error, never a panic. A parser that panics
//! fails its test here with the seed and case that did it.

use std::path::{Path, PathBuf};

use crate::common::*;
use rtmdet::structures::mask;

/// SplitMix64: small, seeded, and enough to spread mutations over a file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Up to `max` random bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A mutation of `base`: flipped bytes, interesting values, a truncation, a deleted or a
/// duplicated span; `window` limits where the edits land (the header, for large files).
fn mutate(rng: &mut Rng, base: &[u8], window: std::ops::Range<usize>) -> Vec<u8> {
    let mut v = base.to_vec();
    let lo = window.start.min(v.len());
    let hi = window.end.min(v.len()).max(lo + 1);
    for _ in 0..1 + rng.below(4) {
        if v.is_empty() {
            break;
        }
        let at = (lo + rng.below(hi - lo)).min(v.len() - 1);
        match rng.below(6) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = [0x00, 0xFF, 0x7F, 0x80, b'-', b'9'][rng.below(6)],
            2 => v.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let span: Vec<u8> = v[at..end].to_vec();
                v.splice(at..at, span);
            }
            _ => v[at] = rng.next() as u8,
        }
    }
    v
}

/// Runs `f` on `cases` inputs: random bytes and mutations of `base`.
fn check_never_panics(name: &str, seed: u64, cases: usize, base: &[u8], window: usize, f: impl Fn(&[u8])) {
    let mut rng = Rng(seed);
    for case in 0..cases {
        let input = if case % 5 == 0 { rng.bytes(256) } else { mutate(&mut rng, base, 0..window) };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&input)));
        assert!(outcome.is_ok(), "{name}: case {case} (seed {seed}) panicked");
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtmdet-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([(x * 10) as u8, (y * 15) as u8, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn image_decoders_never_panic() {
    use image::ImageFormat::*;
    let path = scratch("fuzz_image");
    for (i, format) in [Jpeg, Png, Bmp, Tiff, WebP].into_iter().enumerate() {
        let base = encoded(format);
        check_never_panics(&format!("{format:?}"), 11 + i as u64, 120, &base, base.len(), |bytes| {
            let _ = rtmdet::image_io::decode_image(bytes);
            let _ = rtmdet::image_io::jpeg_is_truncated(bytes);
            std::fs::write(&path, bytes).unwrap();
            let _ = rtmdet::image_io::image_size(&path);
        });
    }
}

#[test]
fn pth_reader_never_panics() {
    let base = std::fs::read(reference("checkpoints/rtmdet_tiny_ref_seed1.pth")).unwrap();
    let path = scratch("fuzz.pth");
    // The pickle and the zip directory are where structure lives: mutate the start and the end.
    let mut rng = Rng(21);
    for case in 0..24 {
        let n = base.len();
        let window = if case % 2 == 0 { 0..4096 } else { n - 4096..n };
        let bytes = mutate(&mut rng, &base, window);
        std::fs::write(&path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let _ = rtmdet::weights::read(&path, &Default::default());
        });
        assert!(outcome.is_ok(), "pth case {case} panicked");
    }
}

#[test]
fn safetensors_reader_never_panics() {
    let cfg = rtmdet::ModelConfig::new(rtmdet::Size::Tiny);
    let mut map = rtmdet::weights::TensorMap::new();
    map.insert("a.weight".into(), rtmdet::weights::HostTensor::new(vec![2, 3], vec![1.0; 6]));
    map.insert("b.bias".into(), rtmdet::weights::HostTensor::new(vec![4], vec![0.5; 4]));
    let path = scratch("base.safetensors");
    rtmdet::weights::safetensors::save(&path, &cfg, &map).unwrap();
    let base = std::fs::read(&path).unwrap();
    let fuzzed = scratch("fuzz.safetensors");
    check_never_panics("safetensors", 31, 300, &base, base.len(), |bytes| {
        std::fs::write(&fuzzed, bytes).unwrap();
        let _ = rtmdet::weights::safetensors::load_all(&fuzzed);
    });
}

#[test]
fn onnx_import_never_panics() {
    let base = std::fs::read(shared("assets/onnx/rtmdet_nano_person.onnx")).unwrap();
    let path = scratch("fuzz.onnx");
    check_never_panics("onnx", 41, 30, &base, 8192, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let _ = rtmdet::weights::read(&path, &Default::default());
    });
}

fn write_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("images/val")).unwrap();
    std::fs::create_dir_all(dir.join("labels/val")).unwrap();
    std::fs::write(dir.join("images/val/1.png"), encoded(image::ImageFormat::Png)).unwrap();
}

#[test]
fn yaml_dataset_config_never_panics() {
    let dir = scratch("yaml");
    write_tree(&dir);
    let base = "path: .\ntrain: images/val\nval: images/val\nnames:\n  0: person\n  1: car\n";
    let yaml = dir.join("data.yaml");
    check_never_panics("yaml", 51, 300, base.as_bytes(), base.len(), |bytes| {
        std::fs::write(&yaml, bytes).unwrap();
        let _ = rtmdet::data::Dataset::load(&yaml, "val");
    });
}

#[test]
fn coco_json_never_panics() {
    let base = std::fs::read(shared("assets/coco_sample.json")).unwrap();
    let path = scratch("fuzz_coco.json");
    check_never_panics("coco", 61, 300, &base, base.len(), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let _ = rtmdet::data::coco::load(&path, None);
        let _ = rtmdet::eval::coco_files::read_ground_truth(&path);
        let _ = rtmdet::eval::coco_files::read_results(&path);
    });
}

/// Lines of numbers-or-not tokens, the vocabulary of label rows.
fn random_row(rng: &mut Rng) -> String {
    const TOKENS: [&str; 16] = [
        "0",
        "1",
        "0.5",
        "-3",
        "1e38",
        "NaN",
        "inf",
        "-0",
        "plane",
        "\u{feff}2",
        "ship",
        "0.25",
        "9999999999",
        "",
        ":",
        "x",
    ];
    (0..rng.below(12)).map(|_| TOKENS[rng.below(TOKENS.len())]).collect::<Vec<_>>().join(" ")
}

#[test]
fn label_rows_never_panic() {
    let mut rng = Rng(71);
    for case in 0..600 {
        let line =
            if case % 3 == 0 { String::from_utf8_lossy(&rng.bytes(40)).into_owned() } else { random_row(&mut rng) };
        let outcome = std::panic::catch_unwind(|| {
            let _ = rtmdet::data::yolo::parse_row(&line, 640.0, 480.0);
            if let Ok(Some(row)) = rtmdet::data::dota::parse_row(&line) {
                let _ = rtmdet::structures::quad::quad_to_rbox(&row.quad);
            }
        });
        assert!(outcome.is_ok(), "label row {line:?} panicked");
    }
}

#[test]
fn rle_strings_never_panic() {
    let base = mask::to_compressed(&mask::encode(&mask::Bitmap::zeros(8, 6)));
    check_never_panics("rle", 81, 300, base.as_bytes(), base.len(), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(rle) = mask::from_compressed(&text, 8, 6) {
            let _ = mask::decode(&rle);
            let _ = mask::area(&rle);
        }
    });
}
