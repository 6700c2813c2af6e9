//! The bad-input matrix: a crafted file or flag → a subcommand → the documented exit code
//! and a message naming the cause, and no file the user had changes. Each case runs in its
//! own folder (also the working directory, so default run folders land there too).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{rtmdet, shared, tiny_weights, tmp};

/// One case: files to create, the arguments (`{d}` stands for the case's folder), and what
/// must come out.
struct Case {
    name: &'static str,
    setup: fn(&Path),
    args: &'static [&'static str],
    code: i32,
    message: &'static str,
}

const W: &str = "{weights}";

fn demo() -> PathBuf {
    shared("assets/images/demo.jpg")
}

fn copy_demo(d: &Path) {
    std::fs::copy(demo(), d.join("demo.jpg")).unwrap();
}

fn nothing(_: &Path) {}

fn results_file(d: &Path) {
    copy_demo(d);
    std::fs::write(d.join("results.json"), "my earlier results").unwrap();
}

fn unreadable_images(d: &Path) {
    std::fs::write(d.join("a.jpg"), "not an image").unwrap();
    std::fs::write(d.join("b.png"), [0x89, b'P', b'N', b'G']).unwrap();
    std::fs::write(d.join("results.json"), "my earlier results").unwrap();
}

fn one_bad_image(d: &Path) {
    copy_demo(d);
    std::fs::write(d.join("broken.jpg"), "not an image").unwrap();
}

/// The library's test video cut in half, and an empty `.mp4`.
fn broken_videos(d: &Path) {
    let walk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rtmdet/tests/data/video/walk.mp4");
    let bytes = std::fs::read(walk).unwrap();
    std::fs::write(d.join("cut.mp4"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(d.join("empty.mp4"), b"").unwrap();
    copy_demo(d);
}

/// A list of two images, one of which does not exist.
fn list_with_missing(d: &Path) {
    copy_demo(d);
    std::fs::write(d.join("list.txt"), "# picks\ndemo.jpg\nmissing.jpg\n").unwrap();
}

fn truncated_jpeg(d: &Path) {
    let bytes = std::fs::read(demo()).unwrap();
    std::fs::write(d.join("cut.jpg"), &bytes[..bytes.len() * 2 / 3]).unwrap();
}

const COCO_GT: &str = r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
 "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}],
 "categories": [{"id": 1, "name": "thing"}]}"#;

fn eval_files(d: &Path) {
    std::fs::write(d.join("gt.json"), COCO_GT).unwrap();
    std::fs::write(
        d.join("pred.json"),
        r#"[{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]"#,
    )
    .unwrap();
}

/// `segm` inputs: a two-point polygon in the ground truth, or a broken RLE string in the results.
fn segm_bad_polygon(d: &Path) {
    let gt = COCO_GT.replace(r#""iscrowd": 0}"#, r#""iscrowd": 0, "segmentation": [[10, 10, 30, 10]]}"#);
    std::fs::write(d.join("gt.json"), gt).unwrap();
    std::fs::write(d.join("pred.json"), "[]").unwrap();
}

fn segm_bad_rle(d: &Path) {
    let gt = COCO_GT.replace(r#""iscrowd": 0}"#, r#""iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 30]]}"#);
    std::fs::write(d.join("gt.json"), gt).unwrap();
    let det = r#"[{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9,
                   "segmentation": {"size": [100, 100], "counts": "ZZ"}}]"#;
    std::fs::write(d.join("pred.json"), det).unwrap();
}

fn eval_nan(d: &Path) {
    std::fs::write(d.join("gt.json"), COCO_GT).unwrap();
    std::fs::write(
        d.join("pred.json"),
        r#"[{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": NaN}]"#,
    )
    .unwrap();
}

fn weights_folder(d: &Path) {
    std::fs::create_dir_all(d.join("w.pth")).unwrap();
    copy_demo(d);
}

fn weights_loop(d: &Path) {
    std::os::unix::fs::symlink(d.join("w.pth"), d.join("w.pth")).unwrap();
    copy_demo(d);
}

fn weights_fifo(d: &Path) {
    assert!(Command::new("mkfifo").arg(d.join("w.pth")).status().unwrap().success());
    copy_demo(d);
}

/// A safetensors file whose first needed tensor is stored as integers.
fn weights_int_dtype(d: &Path) {
    let header = r#"{"backbone.stem.0.conv.weight":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 8]);
    std::fs::write(d.join("w.safetensors"), bytes).unwrap();
    copy_demo(d);
}

fn yaml_tree(d: &Path, names: &str) {
    std::fs::create_dir_all(d.join("images/train")).unwrap();
    std::fs::create_dir_all(d.join("labels/train")).unwrap();
    std::fs::copy(demo(), d.join("images/train/1.jpg")).unwrap();
    std::fs::write(d.join("labels/train/1.txt"), "\u{feff}0 0.5 0.5 0.2 0.2\n").unwrap();
    std::fs::write(d.join("data.yaml"), format!("path: .\ntrain: images/train\nval: images/train\n{names}")).unwrap();
}

fn yaml_scalar_names(d: &Path) {
    yaml_tree(d, "names: person\n");
}

fn yaml_duplicate_key(d: &Path) {
    yaml_tree(d, "names:\n  0: person\n  0: car\n");
}

fn yaml_bom_label(d: &Path) {
    yaml_tree(d, "names: [person]\n");
}

fn yaml_boxes_only(d: &Path) {
    yaml_tree(d, "names: [person]\n");
}

/// Every label row names a class that is not in `names`: all of them are dropped.
fn yaml_unknown_classes(d: &Path) {
    yaml_tree(d, "names: [person]\n");
    std::fs::write(d.join("labels/train/1.txt"), "3 0.5 0.5 0.2 0.2\n7 0.3 0.3 0.1 0.1\n").unwrap();
}

/// The only object is a crowd region, which training ignores.
fn coco_crowd_only(d: &Path) {
    std::fs::copy(demo(), d.join("a.jpg")).unwrap();
    let json = COCO_GT
        .replace(r#""width": 100, "height": 100"#, r#""width": 640, "height": 427"#)
        .replace(r#""iscrowd": 0"#, r#""iscrowd": 1"#);
    std::fs::write(d.join("data.json"), json).unwrap();
}

fn coco_wrong_size(d: &Path) {
    std::fs::copy(demo(), d.join("a.jpg")).unwrap();
    let json = COCO_GT.replace(r#""width": 100, "height": 100"#, r#""width": 300, "height": 200"#);
    std::fs::write(d.join("data.json"), json).unwrap();
}

fn coco_orphans(d: &Path) {
    std::fs::copy(demo(), d.join("a.jpg")).unwrap();
    let json = COCO_GT.replace(r#""width": 100, "height": 100"#, r#""width": 640, "height": 427"#).replace(
        r#""iscrowd": 0}]"#,
        r#""iscrowd": 0}, {"id": 2, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}]"#,
    );
    std::fs::write(d.join("data.json"), json).unwrap();
}

fn locked_run(d: &Path) {
    std::fs::create_dir_all(d.join("run/weights")).unwrap();
    // The test process itself holds the lock: a process that runs.
    std::fs::write(d.join("run/.lock"), std::process::id().to_string()).unwrap();
}

fn a_file(d: &Path) {
    std::fs::write(d.join("runs"), "a file, not a folder").unwrap();
    yaml_tree(d, "names: [person]\n");
}

fn val_out_taken(d: &Path) {
    yaml_tree(d, "names: [person]\n");
    std::fs::create_dir_all(d.join("out")).unwrap();
    std::fs::write(d.join("out/metrics.json"), "{}").unwrap();
}

fn split_with_bad_image(d: &Path) {
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::copy(demo(), d.join("src/demo.jpg")).unwrap();
    std::fs::write(d.join("src/broken.png"), "not an image").unwrap();
}

fn val_missing_image(d: &Path) {
    yaml_tree(d, "names: [person]\n");
    std::fs::write(d.join("list.txt"), "images/train/1.jpg\nimages/train/gone.jpg\n").unwrap();
    let names = rtmdet::classes::COCO.join(", ");
    std::fs::write(d.join("data.yaml"), format!("path: .\ntrain: images/train\nval: list.txt\nnames: [{names}]\n"))
        .unwrap();
}

fn eval_and_old_json(d: &Path) {
    eval_files(d);
    std::fs::write(d.join("scores.json"), "my earlier scores").unwrap();
}

fn not_a_run(d: &Path) {
    std::fs::create_dir_all(d.join("run")).unwrap();
}

/// The reference weights with one NaN, in our format: they load, with a warning.
fn weights_with_nan(d: &Path) {
    let (cfg, mut map) = rtmdet::weights::read(Path::new(&tiny_weights()), &Default::default()).unwrap();
    map.values_mut().next().unwrap().data[0] = f32::NAN;
    rtmdet::weights::safetensors::save(&d.join("nan.safetensors"), &cfg, &map).unwrap();
    copy_demo(d);
}

fn coco_listed_twice(d: &Path) {
    std::fs::copy(demo(), d.join("a.jpg")).unwrap();
    let json = COCO_GT.replace(r#""width": 100, "height": 100"#, r#""width": 640, "height": 427"#).replace(
        r#""height": 427}]"#,
        r#""height": 427}, {"id": 2, "file_name": "a.jpg", "width": 640, "height": 427}]"#,
    );
    std::fs::write(d.join("data.json"), json).unwrap();
}

/// A FIFO would block a reader forever; it must be refused, not read.
fn gt_fifo(d: &Path) {
    assert!(Command::new("mkfifo").arg(d.join("gt.json")).status().unwrap().success());
    std::fs::write(d.join("pred.json"), "[]").unwrap();
}

/// A CMYK JPEG (as Photoshop writes them): valid input that must be predicted on.
fn cmyk_jpeg(d: &Path) {
    let rgb = image::open(demo()).unwrap().to_rgb8();
    let (w, h) = rgb.dimensions();
    // Adobe's inverted CMYK: stored = 255 - ink, with no black ink.
    let cmyk: Vec<u8> = rgb.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
    comp.set_size(w as usize, h as usize);
    let mut started = comp.start_compress(Vec::new()).unwrap();
    started.write_scanlines(&cmyk).unwrap();
    std::fs::write(d.join("cmyk.jpg"), started.finish().unwrap()).unwrap();
}

/// An ONNX file of ours that must survive a refused export.
fn existing_onnx(d: &Path) {
    let o = rtmdet(&[
        "export",
        "--weights",
        &tiny_weights(),
        "--mode",
        "raw",
        "--out",
        d.join("model.onnx").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn rotated_weights(d: &Path) {
    std::os::unix::fs::symlink(
        shared("reference/rotated/checkpoints/rotated_rtmdet_tiny_ref_seed1.pth"),
        d.join("rotated.pth"),
    )
    .unwrap();
}

const CASES: &[Case] = &[
    // Flags: one validation layer, messages that say the range.
    Case {
        name: "imgsz huge",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--imgsz", "100000"],
        code: 2,
        message: "multiple of 32 from 32 to",
    },
    Case {
        name: "conf negative",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--conf", "-0.5"],
        code: 2,
        message: "from 0 to 1",
    },
    Case {
        name: "conf NaN",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--conf=NaN"],
        code: 2,
        message: "not a finite number",
    },
    Case {
        name: "conf 2",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--conf", "2"],
        code: 2,
        message: "from 0 to 1",
    },
    Case {
        name: "threads 100000",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--threads", "100000"],
        code: 2,
        message: "cores of this machine",
    },
    Case {
        name: "bench train batch 0",
        setup: nothing,
        args: &["bench", "train", "--batch", "0"],
        code: 2,
        message: "from 1",
    },
    Case {
        name: "bench train imgsz 0",
        setup: nothing,
        args: &["bench", "train", "--batch", "1", "--imgsz", "0"],
        code: 2,
        message: "multiple of 32",
    },
    Case {
        name: "bench train imgsz 100",
        setup: nothing,
        args: &["bench", "train", "--imgsz", "100"],
        code: 2,
        message: "multiple of 32",
    },
    Case {
        name: "bench batch too large",
        setup: nothing,
        args: &["bench", "--batch", "4000000000"],
        code: 1,
        message: "GiB, more than this machine's",
    },
    // A batch that cannot fit names the batch to try (the largest that fits, same estimate).
    Case {
        name: "bench train more objects than fit",
        setup: nothing,
        args: &["bench", "train", "--imgsz", "64", "--objects", "1000000000"],
        code: 1,
        message: "at most 256 objects fit on a 64x64 input",
    },
    Case {
        name: "bench train batch too large",
        setup: nothing,
        args: &["bench", "train", "--batch", "4000000000"],
        code: 1,
        message: "try --batch ",
    },
    Case {
        name: "train batch too large",
        setup: yaml_bom_label,
        args: &["train", "--data", "{d}/data.yaml", "--batch", "4000000000"],
        code: 1,
        message: "(the largest that fits at image size 640)",
    },
    Case {
        name: "bench data without --data",
        setup: nothing,
        args: &["bench", "data"],
        code: 2,
        message: "--data <DATA>",
    },
    Case {
        name: "bench data workers 0",
        setup: yaml_bom_label,
        args: &["bench", "data", "--data", "{d}/data.yaml", "--workers", "0"],
        code: 2,
        message: "must be from 1 to",
    },
    Case {
        name: "bench data fewer batches than workers",
        setup: yaml_bom_label,
        args: &["bench", "data", "--data", "{d}/data.yaml", "--workers", "1,2", "--iters", "1"],
        code: 1,
        message: "give at least one batch per worker",
    },
    Case {
        name: "bench data batch too large",
        setup: yaml_bom_label,
        args: &["bench", "data", "--data", "{d}/data.yaml", "--batch", "4000000000"],
        code: 1,
        message: "try --batch ",
    },
    Case {
        name: "bench data missing file",
        setup: nothing,
        args: &["bench", "data", "--data", "{d}/nope.yaml"],
        code: 1,
        message: "does not exist",
    },
    Case {
        name: "browse batches 0",
        setup: yaml_bom_label,
        args: &["browse", "--data", "{d}/data.yaml", "--batches", "0"],
        code: 2,
        message: "from 1",
    },
    Case {
        name: "train lr and scale-lr",
        setup: yaml_bom_label,
        args: &["train", "--data", "{d}/data.yaml", "--lr", "0.01", "--scale-lr"],
        code: 2,
        message: "cannot be used with",
    },
    Case {
        name: "resume with epochs",
        setup: locked_run,
        args: &["train", "--resume", "{d}/run", "--epochs", "5"],
        code: 2,
        message: "cannot be used with",
    },
    // Outputs: never replaced without --exist-ok, never an input.
    Case {
        name: "save-json exists",
        setup: results_file,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--no-draw", "--save-json", "{d}/results.json"],
        code: 1,
        message: "already exists",
    },
    Case {
        name: "save-json is the image",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--no-draw", "--exist-ok", "--save-json", "{d}/demo.jpg"],
        code: 1,
        message: "is an input",
    },
    Case {
        name: "all images fail",
        setup: unreadable_images,
        args: &[
            "predict",
            "{d}/a.jpg",
            "{d}/b.png",
            "--weights",
            W,
            "--no-draw",
            "--exist-ok",
            "--save-json",
            "{d}/results.json",
        ],
        code: 1,
        message: "none of the 2 images",
    },
    Case {
        name: "eval json is pred",
        setup: eval_files,
        args: &["eval", "--gt", "{d}/gt.json", "--pred", "{d}/pred.json", "--exist-ok", "--json", "{d}/pred.json"],
        code: 1,
        message: "is an input",
    },
    Case {
        name: "ins training without masks",
        setup: yaml_boxes_only,
        args: &[
            "train",
            "--data",
            "{d}/data.yaml",
            "--model",
            "ins-tiny",
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--out",
            "{d}/runs",
        ],
        code: 1,
        message: "no object has a polygon mask",
    },
    Case {
        name: "segm polygon of two points",
        setup: segm_bad_polygon,
        args: &["eval", "--gt", "{d}/gt.json", "--pred", "{d}/pred.json", "--iou-type", "segm"],
        code: 1,
        message: "annotation #0 (id 1): bad polygon",
    },
    Case {
        name: "segm broken RLE",
        setup: segm_bad_rle,
        args: &["eval", "--gt", "{d}/gt.json", "--pred", "{d}/pred.json", "--iou-type", "segm"],
        code: 1,
        message: "result #0: RLE string",
    },
    Case {
        name: "eval json exists",
        setup: eval_files,
        args: &["eval", "--gt", "{d}/gt.json", "--pred", "{d}/pred.json", "--json", "{d}/gt.json"],
        code: 1,
        message: "is an input",
    },
    Case {
        name: "val out taken",
        setup: val_out_taken,
        args: &["val", "--weights", W, "--data", "{d}/data.yaml", "--split", "train", "--out", "{d}/out"],
        code: 1,
        message: "already holds metrics.json",
    },
    // Nothing left to train on: refused with the reason, before a run folder is made.
    Case {
        name: "train with every label dropped",
        setup: yaml_unknown_classes,
        args: &["train", "--data", "{d}/data.yaml", "--epochs", "1", "--imgsz", "64", "--out", "{d}/runs"],
        code: 1,
        message: "nothing to train on, no image has a usable object (1 images, 0 objects, 1 background images; \
                  2 annotations with unknown category ids (dropped))",
    },
    Case {
        name: "train on crowd regions only",
        setup: coco_crowd_only,
        args: &["train", "--data", "{d}/data.json", "--epochs", "1", "--imgsz", "64", "--out", "{d}/runs"],
        code: 1,
        message: "left out of training: 1 crowd regions (iscrowd)",
    },
    Case {
        name: "train out is a file",
        setup: a_file,
        args: &["train", "--data", "{d}/data.yaml", "--out", "{d}/runs"],
        code: 1,
        message: "is a file",
    },
    Case {
        name: "resume locked",
        setup: locked_run,
        args: &["train", "--resume", "{d}/run"],
        code: 1,
        message: "in use by process",
    },
    Case {
        name: "eval json exists",
        setup: eval_and_old_json,
        args: &["eval", "--gt", "{d}/gt.json", "--pred", "{d}/pred.json", "--json", "{d}/scores.json"],
        code: 1,
        message: "already exists",
    },
    Case {
        name: "predict out is a file",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--out", "{d}/demo.jpg"],
        code: 1,
        message: "is a file",
    },
    Case {
        name: "resume not a run",
        setup: not_a_run,
        args: &["train", "--resume", "{d}/run"],
        code: 1,
        message: "not a run folder",
    },
    Case {
        name: "weights with NaN warn",
        setup: weights_with_nan,
        args: &["predict", "{d}/demo.jpg", "--weights", "{d}/nan.safetensors", "--no-draw"],
        code: 0,
        message: "hold NaN or infinite values",
    },
    Case {
        name: "coco image listed twice",
        setup: coco_listed_twice,
        args: &["browse", "--data", "{d}/data.json", "--batches", "1", "--batch", "1", "--imgsz", "128"],
        code: 0,
        message: "image a.jpg is listed twice (ids 1 and 2)",
    },
    Case {
        name: "eval gt is a fifo",
        setup: gt_fifo,
        args: &["eval", "--gt", "{d}/gt.json", "--pred", "{d}/pred.json"],
        code: 1,
        message: "gt.json is not a regular file",
    },
    Case {
        name: "train on an empty folder",
        setup: not_a_run,
        args: &["train", "--data", "{d}/run"],
        code: 1,
        message: "not a DOTA folder",
    },
    Case {
        name: "CMYK JPEG is predicted on",
        setup: cmyk_jpeg,
        args: &["predict", "{d}/cmyk.jpg", "--weights", W, "--no-draw"],
        code: 0,
        message: "cmyk.jpg: 640x427",
    },
    // Exit codes: some inputs skipped is not success.
    Case {
        name: "split one image broken",
        setup: split_with_bad_image,
        args: &["dota-split", "--images", "{d}/src", "--out", "{d}/split"],
        code: 3,
        message: "1 of 2 images could not be split",
    },
    Case {
        name: "val image missing",
        setup: val_missing_image,
        args: &["val", "--weights", W, "--data", "{d}/data.yaml"],
        code: 3,
        message: "1 images of the dataset were missing",
    },
    Case {
        name: "one image of two unreadable",
        setup: one_bad_image,
        args: &["predict", "{d}/demo.jpg", "{d}/broken.jpg", "--weights", W, "--no-draw"],
        code: 3,
        message: "1 of 2 inputs were skipped",
    },
    Case {
        name: "slice overlap 1.5",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--slice", "512", "--slice-overlap", "1.5"],
        code: 2,
        message: "a fraction of the slice size from 0 to below 1",
    },
    Case {
        name: "slice overlap as large as the slice",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--slice", "512", "--slice-overlap", "512"],
        code: 1,
        message: "must be smaller than --slice (512)",
    },
    Case {
        name: "empty glob alone",
        setup: copy_demo,
        args: &["predict", "{d}/*.gif", "--weights", W, "--no-draw"],
        code: 1,
        message: "no images or videos match the glob pattern",
    },
    Case {
        name: "empty glob with an image",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "{d}/*.gif", "--weights", W, "--no-draw"],
        code: 3,
        message: "1 of 2 inputs were skipped",
    },
    Case {
        name: "list names a missing file",
        setup: list_with_missing,
        args: &["predict", "{d}/list.txt", "--weights", W, "--no-draw"],
        code: 3,
        message: "missing.jpg (listed in",
    },
    // A GPU device in this CPU-only build (CI builds no GPU feature): the feature to rebuild with.
    Case {
        name: "wgpu device in a CPU build",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--device", "wgpu", "--no-draw"],
        code: 1,
        message: "rebuild with `--features wgpu`",
    },
    Case {
        name: "bench train on a GPU device in a CPU build",
        setup: nothing,
        args: &["bench", "train", "--device", "cuda"],
        code: 1,
        message: "rebuild with `--features cuda`",
    },
    Case {
        name: "unknown device",
        setup: copy_demo,
        args: &["predict", "{d}/demo.jpg", "--weights", W, "--device", "tpu", "--no-draw"],
        code: 1,
        message: "device tpu: unknown device",
    },
    Case {
        name: "truncated video with an image",
        setup: broken_videos,
        args: &["predict", "{d}/demo.jpg", "{d}/cut.mp4", "--weights", W, "--save-json", "{d}/out.jsonl"],
        code: 3,
        message: "it may be truncated",
    },
    Case {
        name: "empty video file",
        setup: broken_videos,
        args: &["track", "{d}/empty.mp4", "--weights", W, "--no-draw"],
        code: 3,
        message: "empty.mp4: not a readable MP4 file",
    },
    Case {
        name: "vid-stride 0",
        setup: broken_videos,
        args: &["predict", "{d}/cut.mp4", "--weights", W, "--vid-stride", "0"],
        code: 2,
        message: "--vid-stride",
    },
    Case {
        name: "folder without images",
        setup: nothing,
        args: &["predict", "{d}", "--recursive", "--weights", W, "--no-draw"],
        code: 1,
        message: "no images or videos in folder (or its subfolders)",
    },
    // Messages that name the cause.
    Case {
        name: "truncated jpeg warns",
        setup: truncated_jpeg,
        args: &["predict", "{d}/cut.jpg", "--weights", W, "--no-draw"],
        code: 0,
        message: "premature end of JPEG data",
    },
    Case {
        name: "eval NaN score",
        setup: eval_nan,
        args: &["eval", "--gt", "{d}/gt.json", "--pred", "{d}/pred.json"],
        code: 1,
        message: "NaN or Infinity is not a JSON number",
    },
    Case {
        name: "weights folder",
        setup: weights_folder,
        args: &["predict", "{d}/demo.jpg", "--weights", "{d}/w.pth"],
        code: 1,
        message: "is a folder",
    },
    Case {
        name: "weights symlink loop",
        setup: weights_loop,
        args: &["predict", "{d}/demo.jpg", "--weights", "{d}/w.pth"],
        code: 1,
        message: "symbolic link loop",
    },
    Case {
        name: "weights fifo",
        setup: weights_fifo,
        args: &["predict", "{d}/demo.jpg", "--weights", "{d}/w.pth"],
        code: 1,
        message: "not a regular file",
    },
    Case {
        name: "weights int dtype",
        setup: weights_int_dtype,
        args: &["predict", "{d}/demo.jpg", "--weights", "{d}/w.safetensors"],
        code: 1,
        message: "has dtype I64",
    },
    Case {
        name: "names scalar",
        setup: yaml_scalar_names,
        args: &["browse", "--data", "{d}/data.yaml", "--batches", "1"],
        code: 1,
        message: "`names` must be a list",
    },
    Case {
        name: "names duplicate key",
        setup: yaml_duplicate_key,
        args: &["browse", "--data", "{d}/data.yaml", "--batches", "1"],
        code: 1,
        message: "duplicate",
    },
    Case {
        name: "label with BOM",
        setup: yaml_bom_label,
        args: &["browse", "--data", "{d}/data.yaml", "--batches", "1", "--batch", "1", "--imgsz", "128"],
        code: 0,
        message: "1 images, 1 objects",
    },
    Case {
        name: "coco size disagrees",
        setup: coco_wrong_size,
        args: &["browse", "--data", "{d}/data.json", "--batches", "1", "--batch", "1", "--imgsz", "128"],
        code: 0,
        message: "the JSON says 300x200, the file is 640x427",
    },
    Case {
        name: "coco orphan annotations",
        setup: coco_orphans,
        args: &["browse", "--data", "{d}/data.json", "--batches", "1", "--batch", "1", "--imgsz", "128"],
        code: 0,
        message: "1 annotations refer to image ids that are not in `images`",
    },
    // rtmdet export: unsupported combinations, and nothing existing overwritten.
    Case {
        name: "export over an existing file",
        setup: existing_onnx,
        args: &["export", "--weights", W, "--out", "{d}/model.onnx"],
        code: 1,
        message: "already exists",
    },
    Case {
        name: "export half with opset 12",
        setup: nothing,
        args: &["export", "--weights", W, "--half", "--opset", "12", "--out", "{d}/m.onnx"],
        code: 1,
        message: "--half needs 13 or later",
    },
    Case {
        name: "export batch 0",
        setup: nothing,
        args: &["export", "--weights", W, "--batch", "0", "--out", "{d}/m.onnx"],
        code: 2,
        message: "--batch",
    },
    Case {
        name: "export batch and dynamic",
        setup: nothing,
        args: &["export", "--weights", W, "--batch", "2", "--dynamic", "--out", "{d}/m.onnx"],
        code: 2,
        message: "cannot be used with",
    },
    Case {
        name: "export unknown mode",
        setup: nothing,
        args: &["export", "--weights", W, "--mode", "fast", "--out", "{d}/m.onnx"],
        code: 1,
        message: "expected end2end or raw",
    },
    Case {
        name: "export not to .onnx",
        setup: nothing,
        args: &["export", "--weights", W, "--out", "{d}/m.txt"],
        code: 1,
        message: "ending in .onnx",
    },
    Case {
        name: "export rotated end2end",
        setup: rotated_weights,
        args: &["export", "--weights", "{d}/rotated.pth", "--out", "{d}/m.onnx"],
        code: 1,
        message: "raw mode only",
    },
    Case {
        name: "export over its own weights",
        setup: existing_onnx,
        args: &["export", "--weights", "{d}/model.onnx", "--out", "{d}/model.onnx", "--force"],
        code: 1,
        message: "input of this command",
    },
    // rtmdet track: the same sources and output rules as predict, its own flags checked.
    Case {
        name: "track empty glob",
        setup: nothing,
        args: &["track", "{d}/*.jpg", "--no-draw"],
        code: 1,
        message: "no image",
    },
    Case {
        name: "track buffer 0",
        setup: copy_demo,
        args: &["track", "{d}/demo.jpg", "--track-buffer", "0"],
        code: 2,
        message: "--track-buffer",
    },
    Case {
        name: "track frame rate negative",
        setup: copy_demo,
        args: &["track", "{d}/demo.jpg", "--frame-rate", "-5"],
        code: 2,
        message: "above 0",
    },
    Case {
        name: "track json over an existing file",
        setup: results_file,
        args: &["track", "{d}/demo.jpg", "--no-draw", "--save-json", "{d}/results.json"],
        code: 1,
        message: "already exists",
    },
];

/// Content hash of every file under `dir` (symlinks and FIFOs by their kind, not read).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = p.symlink_metadata().unwrap();
            let mut h = DefaultHasher::new();
            if meta.is_dir() {
                stack.push(p);
                continue;
            } else if meta.is_file() {
                std::fs::read(&p).unwrap().hash(&mut h);
            } else {
                format!("{:?}", meta.file_type()).hash(&mut h);
            }
            out.insert(p, h.finish());
        }
    }
    out
}

/// Runs a case; a command still running after a minute is a hang: killed and reported.
fn run(case: &Case, dir: &Path) -> Output {
    use std::io::Read;
    let args: Vec<String> =
        case.args.iter().map(|a| a.replace("{d}", dir.to_str().unwrap()).replace(W, &tiny_weights())).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtmdet"))
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap();
            v
        })
    };
    let (out, err) = (drain(Box::new(child.stdout.take().unwrap())), drain(Box::new(child.stderr.take().unwrap())));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{}: still running after 60 s (a hang)", case.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

#[test]
fn bad_inputs_give_their_exit_code_and_cause_and_change_no_user_file() {
    let root = tmp("bad_inputs");
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let dir = root.join(format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        (case.setup)(&dir);
        let before = snapshot(&dir);
        let o = run(case, &dir);
        let stderr = String::from_utf8_lossy(&o.stderr);
        let after = snapshot(&dir);
        let changed: Vec<&PathBuf> = before.iter().filter(|(p, h)| after.get(*p) != Some(h)).map(|(p, _)| p).collect();
        if o.status.code() != Some(case.code) || !stderr.contains(case.message) || !changed.is_empty() {
            failures.push(format!(
                "{}: exit {:?} (want {}), changed {changed:?}, want message '{}' in:\n{stderr}",
                case.name,
                o.status.code(),
                case.code,
                case.message
            ));
        }
        assert!(!stderr.contains("panicked"), "{}: {stderr}", case.name);
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}
