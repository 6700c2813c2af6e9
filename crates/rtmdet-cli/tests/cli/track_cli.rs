//! `rtmdet track` on a synthetic clip: the bundled person pasted into a grey canvas at a
//! moving position, frame by frame, tracked by the embedded detector with one id throughout.

use crate::common::*;

#[test]
fn a_walking_person_keeps_one_id() {
    let d = tmp("track");
    let frames = d.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let person = image::open(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/person.jpg")).unwrap();
    for f in 0..8u32 {
        let mut canvas = image::RgbImage::from_pixel(560, 400, image::Rgb([128, 128, 128]));
        image::imageops::overlay(&mut canvas, &person.to_rgb8(), 20 + 30 * f as i64, 20 + 4 * f as i64);
        canvas.save(frames.join(format!("{f:03}.png"))).unwrap();
    }
    let json = d.join("tracks.jsonl");
    let out = d.join("run");
    let o = rtmdet(&[
        "track",
        frames.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--save-json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&json).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 8);
    for (f, line) in lines.iter().enumerate() {
        assert_eq!(line["frame"], f);
        assert_eq!(line["time_s"].as_f64().unwrap(), f as f64 / 30.0);
        let tracks = line["detections"].as_array().unwrap();
        let people: Vec<&serde_json::Value> =
            tracks.iter().filter(|t| t["class"] == "person" && t["score"].as_f64().unwrap() > 0.5).collect();
        assert_eq!(people.len(), 1, "frame {f}: {tracks:?}");
        assert_eq!(people[0]["id"], 1, "frame {f}");
        // The box follows the pasted person (moved 30 px right per frame).
        let x1 = people[0]["bbox"][0].as_f64().unwrap();
        assert!((x1 - (20.0 + 30.0 * f as f64)).abs() < 15.0, "frame {f}: x1 {x1}");
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 8, "one annotated frame each");
    // The JSON Lines file is never overwritten without --exist-ok.
    let o = rtmdet(&["track", frames.to_str().unwrap(), "--no-draw", "--save-json", json.to_str().unwrap()]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read_to_string(&json).unwrap(), text);
}
