//! Class names of the datasets the official weights were trained on.

/// The 80 COCO classes in mmdetection's order (= index of the YOLO labels of coco8).
pub const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// The 15 DOTA-v1.0 classes in mmrotate's order (RTMDet-R).
pub const DOTA: [&str; 15] = [
    "plane",
    "baseball-diamond",
    "bridge",
    "ground-track-field",
    "small-vehicle",
    "large-vehicle",
    "ship",
    "tennis-court",
    "basketball-court",
    "storage-tank",
    "soccer-ball-field",
    "roundabout",
    "harbor",
    "swimming-pool",
    "helicopter",
];

/// What DOTA-v1.5 adds to v1.0 (in order, after its 15 classes).
pub const DOTA_V15_EXTRA: [&str; 1] = ["container-crane"];

/// What DOTA-v2.0 adds to v1.5.
pub const DOTA_V2_EXTRA: [&str; 2] = ["airport", "helipad"];

/// DIOR-R's 20 classes in mmrotate's order.
pub const DIOR: [&str; 20] = [
    "airplane",
    "airport",
    "baseballfield",
    "basketballcourt",
    "bridge",
    "chimney",
    "expressway-service-area",
    "expressway-toll-station",
    "dam",
    "golffield",
    "groundtrackfield",
    "harbor",
    "overpass",
    "ship",
    "stadium",
    "storagetank",
    "tenniscourt",
    "trainstation",
    "vehicle",
    "windmill",
];

/// The class lists a rotated dataset can name: `dota` (v1.0), `dota1.5`, `dota2.0`, `dior`,
/// `hrsc` (one class, `ship`); anything else is read as a comma-separated list of names.
pub fn rotated_preset(spec: &str) -> Vec<String> {
    let names: Vec<&str> = match spec.to_ascii_lowercase().as_str() {
        "dota" | "dota1.0" | "dota-v1.0" => DOTA.to_vec(),
        "dota1.5" | "dota-v1.5" => [&DOTA[..], &DOTA_V15_EXTRA].concat(),
        "dota2.0" | "dota-v2.0" => [&DOTA[..], &DOTA_V15_EXTRA, &DOTA_V2_EXTRA].concat(),
        "dior" | "dior-r" => DIOR.to_vec(),
        "hrsc" | "hrsc2016" => vec!["ship"],
        _ => return spec.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
    };
    names.into_iter().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_presets() {
        let n = |s: &str| rotated_preset(s).len();
        assert_eq!((n("dota"), n("DOTA1.5"), n("dota2.0"), n("dior"), n("hrsc")), (15, 16, 18, 20, 1));
        assert_eq!(rotated_preset("dota2.0")[17], "helipad");
        assert_eq!(rotated_preset(" car, truck ,"), vec!["car", "truck"]);
    }
}
