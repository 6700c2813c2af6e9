//! Dataset loading and checking: Ultralytics YAML + labels, COCO JSON, and the report of
//! everything wrong with a dataset instead of a crash.

use std::path::PathBuf;

use crate::common::{coco8_yaml, shared};
use rtmdet::data::{Dataset, coco};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rtmdet-data-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn coco8_yolo_layout_loads_with_pixel_boxes() {
    let yaml = coco8_yaml(&tmp("yaml"));
    let val = Dataset::load(&yaml, "val").unwrap();
    assert_eq!((val.images.len(), val.report.annotations, val.categories.len()), (4, 17, 80));
    assert!(val.report.is_clean(), "{}", val.report);
    // 000000000049.jpg (381x500): first label row "0 0.34 0.56 0.15 0.28"-like, in pixels.
    let img = val.images.iter().find(|i| i.id == 49).unwrap();
    assert_eq!((img.width, img.height), (381, 500));
    let text = std::fs::read_to_string(shared("assets/coco8/labels/val/000000000049.txt")).unwrap();
    let row: Vec<f64> = text.lines().next().unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
    let a = &img.annotations[0];
    assert_eq!(a.label, row[0] as usize);
    assert!((a.bbox[0] - (row[1] - row[3] / 2.0) * 381.0).abs() < 1e-9);
    assert!((a.bbox[3] - (row[2] + row[4] / 2.0) * 500.0).abs() < 1e-9);
    let train = Dataset::load(&yaml, "train").unwrap();
    assert_eq!(train.images.len(), 4);
    assert_eq!(rtmdet::eval::coco_files::ground_truth(&val).boxes.len(), 17);
}

#[test]
fn coco_json_problems_are_reported_not_fatal() {
    let dir = tmp("coco");
    std::fs::copy(shared("assets/coco8/images/val/000000000049.jpg"), dir.join("a.jpg")).unwrap();
    std::fs::write(dir.join("b.jpg"), b"not an image").unwrap();
    let json = r#"{
      "images": [
        {"id": 1, "file_name": "a.jpg", "width": 381, "height": 500},
        {"id": 2, "file_name": "missing.jpg", "width": 10, "height": 10},
        {"id": 1, "file_name": "a.jpg", "width": 381, "height": 500},
        {"id": 3, "file_name": "b.jpg"},
        {"id": 4, "file_name": "a.jpg", "width": 381, "height": 500}
      ],
      "categories": [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}],
      "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40], "area": 900, "iscrowd": 0,
         "segmentation": [[10, 20, 40, 20, 40, 60]]},
        {"id": 2, "image_id": 1, "category_id": 90, "bbox": [-5, 480, 100, 50], "area": 10, "iscrowd": 1},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [50, 50, 0, 10], "area": 0},
        {"id": 4, "image_id": 1, "category_id": 77, "bbox": [1, 1, 5, 5], "area": 25}
      ]
    }"#;
    let path = dir.join("ann.json");
    std::fs::write(&path, json).unwrap();
    let d = coco::load(&path, None).unwrap();
    let r = &d.report;
    assert_eq!(r.images, 2);
    assert_eq!(r.missing_images.len(), 1);
    assert_eq!(r.unreadable_images.len(), 1);
    assert_eq!(r.duplicate_image_ids, vec![1]);
    assert_eq!((r.clipped_boxes, r.dropped_empty_boxes, r.unknown_categories), (1, 1, 1));
    assert_eq!(r.background_images, 1);
    assert!(!r.is_clean());
    let text = r.to_string();
    assert!(text.contains("clipped") && text.contains("missing"), "{text}");
    // Categories are ordered by id: car (3) is label 0, toothbrush (90) label 1.
    let a = &d.images[0].annotations;
    assert_eq!((a[0].label, a[1].label), (0, 1));
    assert_eq!(a[1].bbox, [0.0, 480.0, 95.0, 500.0]);
    assert!(a[1].iscrowd && a[0].segmentation.is_some());
    assert_eq!(a[0].area, 900.0);
}

#[test]
fn the_shared_coco_sample_loads_without_images() {
    let gt = rtmdet::eval::coco_files::read_ground_truth(&shared("assets/coco_sample.json")).unwrap();
    assert_eq!((gt.image_ids.len(), gt.boxes.len(), gt.categories.len()), (4, 7, 2)); // one has category 3
    let d = coco::load(&shared("assets/coco_sample.json"), None).unwrap();
    assert_eq!(d.report.missing_images.len(), 4);
    assert!(d.images.is_empty());
}

/// YOLO-seg rows (`class x1 y1 x2 y2 ...`, normalised) load as COCO polygons in pixels, with the
/// polygon's box and its area (what `segm` evaluation and mask targets read); box rows keep
/// no segmentation.
#[test]
fn yolo_seg_polygons_load_as_pixel_polygons() {
    let dir = tmp("yolo-seg");
    let images = dir.join("images/val");
    let labels = dir.join("labels/val");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    std::fs::copy(shared("assets/coco8/images/val/000000000049.jpg"), images.join("a.jpg")).unwrap();
    std::fs::write(labels.join("a.txt"), "0 0.1 0.1 0.5 0.1 0.5 0.3\n1 0.5 0.5 0.2 0.2\n").unwrap();
    let yaml = dir.join("data.yaml");
    std::fs::write(&yaml, format!("path: {}\ntrain: images/val\nval: images/val\nnames: [a, b]\n", dir.display()))
        .unwrap();
    let data = Dataset::load(&yaml, "val").unwrap();
    let anns = &data.images[0].annotations;
    let (w, h) = (381.0, 500.0);
    let poly = vec![0.1 * w, 0.1 * h, 0.5 * w, 0.1 * h, 0.5 * w, 0.3 * h];
    assert_eq!(anns[0].segmentation, Some(serde_json::json!([poly])));
    assert_eq!(anns[0].bbox, [0.1 * w, 0.1 * h, 0.5 * w, 0.3 * h]);
    assert!((anns[0].area - 0.5 * (0.4 * w) * (0.2 * h)).abs() < 1e-6);
    assert_eq!(anns[1].segmentation, None);
    let masks = rtmdet::eval::coco_files::ground_truth_masks(&Dataset {
        images: vec![rtmdet::data::ImageEntry { annotations: vec![anns[0].clone()], ..data.images[0].clone() }],
        ..data.clone()
    })
    .unwrap();
    assert_eq!((masks[0].height, masks[0].width), (500, 381));
}
