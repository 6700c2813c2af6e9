//! Bad or unusual input gives a clear error or the right result, never a panic.

use std::path::PathBuf;

use crate::common::*;
use rtmdet::image_io::read_image;
use rtmdet::weights::ReadOptions;
use rtmdet::{Detector, Error};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rtmdet-robust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn tiny_path() -> PathBuf {
    reference("checkpoints/rtmdet_tiny_ref_seed1.pth")
}

#[test]
fn truncated_jpeg_is_an_error_or_an_image_never_a_panic() {
    let bytes = std::fs::read(shared("assets/images/demo.jpg")).unwrap();
    let path = tmp("truncated.jpg");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    match read_image(&path) {
        // libjpeg (like OpenCV) pads a truncated scan; the size must still be right.
        Ok(img) => assert_eq!((img.width, img.height), (640, 427)),
        Err(e) => assert!(e.to_string().contains("truncated.jpg"), "{e}"),
    }
    std::fs::write(&path, &bytes[..200]).unwrap();
    let err = read_image(&path).unwrap_err();
    assert!(err.to_string().contains("truncated.jpg"), "{err}");
}

#[test]
fn text_named_jpg_is_a_clear_error() {
    let path = tmp("notes.jpg");
    std::fs::write(&path, "this is not an image\n").unwrap();
    let err = read_image(&path).unwrap_err().to_string();
    assert!(err.contains("notes.jpg") && err.contains("not a recognised image format"), "{err}");
    let missing = read_image(&tmp("missing.jpg")).unwrap_err().to_string();
    assert!(missing.contains("missing.jpg"), "{missing}");
}

#[test]
fn grayscale_rgba_and_16_bit_pngs_decode_like_opencv() {
    // Grayscale: replicated into B, G, R.
    let gray = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(10 * x + 100 * y) as u8]));
    let p = tmp("gray.png");
    gray.save(&p).unwrap();
    let img = read_image(&p).unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    assert_eq!(&img.data[3 * 4..3 * 5], &[110, 110, 110]);

    // RGBA: alpha dropped, channels reordered to BGR.
    let rgba = image::RgbaImage::from_pixel(2, 2, image::Rgba([10, 20, 30, 0]));
    let p = tmp("rgba.png");
    rgba.save(&p).unwrap();
    assert_eq!(&read_image(&p).unwrap().data[..3], &[30, 20, 10]);

    // 16-bit: OpenCV keeps the high byte (65407 -> 255, 384 -> 1, 129 -> 0).
    let wide = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(1, 1, image::Rgb([65407, 384, 129]));
    let p = tmp("wide.png");
    wide.save(&p).unwrap();
    assert_eq!(read_image(&p).unwrap().data, vec![0, 1, 255]);
}

/// Inserts an EXIF APP1 segment with the given orientation after the JPEG SOI marker.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&[0, 1]); // one IFD entry
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, count 1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // value padding + next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_is_applied() {
    let src = shared("assets/images/demo.jpg");
    let upright = read_image(&src).unwrap();
    let p = tmp("rotated.jpg");
    std::fs::write(&p, with_exif_orientation(&std::fs::read(&src).unwrap(), 6)).unwrap();
    let rotated = read_image(&p).unwrap();
    // Orientation 6: rotate 90° clockwise, so (x, y) of the result is (y, H-1-x) of the file.
    assert_eq!((rotated.width, rotated.height), (upright.height, upright.width));
    let (x, y) = (10usize, 20usize);
    let src_x = y;
    let src_y = upright.height - 1 - x;
    assert_eq!(
        &rotated.data[(y * rotated.width + x) * 3..][..3],
        &upright.data[(src_y * upright.width + src_x) * 3..][..3]
    );
}

#[test]
fn degenerate_image_shapes_run() {
    let det = Detector::from_checkpoint(tiny_path()).unwrap();
    for (w, h) in [(1, 1), (3000, 2), (1, 700)] {
        let img = rtmdet::image_io::BgrImage::new(w, h, vec![128; w * h * 3]).unwrap();
        let dets = det.predict(&img).unwrap();
        assert!(dets.iter().all(|d| d.score > 0.3 && d.bbox.iter().all(|v| v.is_finite())));
    }
}

#[test]
fn missing_or_misshaped_tensors_are_named() {
    let (cfg, map) = rtmdet::weights::read(&tiny_path(), &ReadOptions::default()).unwrap();
    let device = burn::tensor::Device::default();

    let mut missing = map.clone();
    missing.remove("neck.out_convs.1.bn.running_var");
    match Detector::from_tensors(cfg.clone(), &missing, device.clone()) {
        Err(Error::MissingTensor { name }) => assert_eq!(name, "neck.out_convs.1.bn.running_var"),
        other => panic!("expected a missing-tensor error, got {:?}", other.err()),
    }

    let mut reshaped = map.clone();
    let t = reshaped.get_mut("backbone.stage2.1.main_conv.conv.weight").unwrap();
    t.shape = vec![t.shape[0] / 2, t.shape[1] * 2, 1, 1];
    let err = Detector::from_tensors(cfg.clone(), &reshaped, device.clone()).err().unwrap().to_string();
    assert!(err.contains("backbone.stage2.1.main_conv.conv.weight") && err.contains("[48, 96, 1, 1]"), "{err}");

    let mut extra = map.clone();
    extra.insert("bbox_head.rtm_obj.0.weight".into(), map["bbox_head.rtm_reg.0.bias"].clone());
    let err = Detector::from_tensors(cfg.clone(), &extra, device.clone()).err().unwrap().to_string();
    assert!(err.contains("bbox_head.rtm_obj.0.weight"), "{err}");

    let mut unshared = map.clone();
    unshared.get_mut("bbox_head.cls_convs.2.1.conv.weight").unwrap().data[0] += 1.0;
    let err = Detector::from_tensors(cfg, &unshared, device).err().unwrap().to_string();
    assert!(err.contains("bbox_head.cls_convs.2.1.conv.weight"), "{err}");
}

#[test]
fn broken_weight_files_are_clear_errors() {
    // A file that is not a checkpoint at all.
    let p = tmp("garbage.pth");
    std::fs::write(&p, b"PK\x03\x04 definitely not a zip").unwrap();
    let err = Detector::from_checkpoint(&p).err().unwrap().to_string();
    assert!(err.contains("garbage.pth"), "{err}");

    // Our own format with a tensor removed: the loader names it.
    let det = Detector::from_checkpoint(tiny_path()).unwrap();
    let p = tmp("tiny.safetensors");
    det.save(&p).unwrap();
    let (cfg, mut map) = rtmdet::weights::safetensors::load(&p).unwrap();
    map.remove("bbox_head.rtm_reg.1.bias");
    rtmdet::weights::safetensors::save(&p, &cfg.unwrap(), &map).unwrap();
    let err = Detector::from_checkpoint(&p).err().unwrap().to_string();
    assert!(err.contains("bbox_head.rtm_reg.1.bias") && err.contains("tiny.safetensors"), "{err}");

    let err = Detector::from_checkpoint(tmp("nope.pth")).err().unwrap().to_string();
    assert!(err.contains("nope.pth") && err.contains("no such file"), "{err}");
}

#[test]
fn own_format_round_trip_is_exact() {
    let det = Detector::from_checkpoint(tiny_path()).unwrap();
    let p = tmp("roundtrip.safetensors");
    det.save(&p).unwrap();
    let back = Detector::from_checkpoint(&p).unwrap();
    assert_eq!(back.config(), det.config());
    let img = read_image(&shared("assets/images/demo.jpg")).unwrap();
    assert_eq!(det.predict(&img).unwrap(), back.predict(&img).unwrap());
    // Saving again over an existing file replaces it atomically (no temporary left behind).
    det.save(&p).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

/// An input size the network cannot take is an error from predict, not a panic in a kernel;
/// any multiple of 32 works on the CPU engine (here 352, whose stride-32 map is 11×11) and
/// gives what burn gives.
#[test]
fn input_size_not_a_multiple_of_32_is_an_error() {
    let mut det = Detector::from_checkpoint(tiny_path()).unwrap();
    let img = read_image(&shared("assets/images/demo.jpg")).unwrap();
    det.input_size = 100;
    let err = det.predict(&img).unwrap_err();
    assert!(err.to_string().contains("multiple of 32"), "{err}");
    det.input_size = 352;
    assert!(det.cpu_engine().is_some());
    let params = rtmdet::DetectParams::EVAL;
    let ours = det.predict_batch_with(std::slice::from_ref(&img), &params).unwrap().remove(0);
    det.set_engine(rtmdet::EngineKind::Burn, Default::default()).unwrap();
    let burn = det.predict_batch_with(std::slice::from_ref(&img), &params).unwrap().remove(0);
    assert!(ours.len() > 10);
    let tol = SetTol { boxes: 0.05, scores: 1e-4, soft_scores: 2e-4, soft_count: 3 };
    let (ours, burn) = above_cutoff(det_rows(&ours), det_rows(&burn), params.max_det, tol.soft_scores);
    match_sets(&ours, &burn, tol).unwrap();
}

/// A CMYK JPEG (Photoshop writes them; OpenCV reads them) decodes with OpenCV's CMYK → BGR
/// conversion instead of being rejected.
#[test]
fn cmyk_jpeg_decodes_like_opencv() {
    let (w, h) = (16, 16);
    let stored = [200u8, 100, 50, 255];
    let pixels: Vec<u8> = (0..w * h).flat_map(|_| stored).collect();
    let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
    comp.set_size(w, h);
    comp.set_quality(100.0);
    let mut started = comp.start_compress(Vec::new()).unwrap();
    started.write_scanlines(&pixels).unwrap();
    let bytes = started.finish().unwrap();
    let path = tmp("cmyk.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let img = read_image(&path).unwrap();
    assert_eq!((img.width, img.height), (16, 16));
    // OpenCV: channel = k - ((255 - stored) * k >> 8): B from y, G from m, R from c.
    let expected = [51i32, 101, 201];
    for (got, want) in img.data[..3].iter().zip(expected) {
        assert!((*got as i32 - want).abs() <= 3, "{:?} vs {expected:?}", &img.data[..3]);
    }
}

#[test]
fn truncated_jpeg_is_detected() {
    let bytes = std::fs::read(shared("assets/images/demo.jpg")).unwrap();
    assert!(!rtmdet::image_io::jpeg_is_truncated(&bytes));
    assert!(rtmdet::image_io::jpeg_is_truncated(&bytes[..bytes.len() / 2]));
    assert!(!rtmdet::image_io::jpeg_is_truncated(b"\x89PNG"));
}

/// `names` of the wrong shape and a label file starting with a byte-order mark.
#[test]
fn yaml_names_shape_and_label_bom() {
    let dir = tmp("yaml_bom");
    std::fs::create_dir_all(dir.join("images/val")).unwrap();
    std::fs::create_dir_all(dir.join("labels/val")).unwrap();
    std::fs::copy(shared("assets/images/demo.jpg"), dir.join("images/val/1.jpg")).unwrap();
    std::fs::write(dir.join("labels/val/1.txt"), "\u{feff}0 0.5 0.5 0.2 0.2\n").unwrap();
    let yaml = dir.join("d.yaml");
    std::fs::write(&yaml, "path: .\nval: images/val\nnames: person\n").unwrap();
    let e = rtmdet::data::Dataset::load(&yaml, "val").unwrap_err().to_string();
    assert!(e.contains("`names` must be a list") && e.contains("'person'"), "{e}");
    std::fs::write(&yaml, "\u{feff}path: .\nval: images/val\nnames: [person]\n").unwrap();
    let data = rtmdet::data::Dataset::load(&yaml, "val").unwrap();
    assert_eq!(data.report.annotations, 1);
}

/// A tensor stored as integers is reported with its dtype, not as missing.
#[test]
fn integer_tensor_is_named_with_its_dtype() {
    let header = r#"{"neck.x.weight":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 8]);
    let path = tmp("int.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let e = rtmdet::weights::read(&path, &ReadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("'neck.x.weight' has dtype I32"), "{e}");
    let dir = tmp("a_folder.pth");
    std::fs::create_dir_all(&dir).unwrap();
    let e = rtmdet::weights::read(&dir, &ReadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("is a folder"), "{e}");
}
