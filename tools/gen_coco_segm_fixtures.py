#!/usr/bin/env python3
"""Generate COCO `segm` evaluation fixtures from the bbox fixtures.

For each case NAME of ``crates/rtmdet/tests/data/coco_eval`` listed in ``CASES`` it writes
into ``crates/rtmdet/tests/data/coco_segm``:

* ``NAME_gt.json``: the bbox case's ground truth where every annotation has a mask: the
  given polygons and uncompressed crowd RLEs stay, annotations without one get an octagon
  polygon of their box, and every third polygon annotation is stored as a compressed RLE
  string instead (so all three COCO forms occur);
* ``NAME_pred.json``: the bbox case's detections with a ``segmentation`` (compressed RLE, as
  ``loadRes`` requires and ``rtmdet predict`` writes): alternately an octagon, a diamond and
  the full box of the detection, rasterised at the image size;
* ``NAME_expected.json``: pycocotools' ``COCOeval(iouType='segm')`` numbers, in the bbox
  fixtures' format;
* ``areas_nobox_*``: the ``areas`` case with the detections' boxes removed (``loadRes`` then
  derives boxes and areas from the masks).

Usage (from the repository root): ``pip install pycocotools numpy``, then
``python3 tools/gen_coco_segm_fixtures.py``. Deterministic (no randomness).
"""

import importlib.util
import json
from pathlib import Path

from pycocotools import mask as mask_utils

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_ROOT / "crates" / "rtmdet" / "tests" / "data" / "coco_eval"
OUT_DIR = REPO_ROOT / "crates" / "rtmdet" / "tests" / "data" / "coco_segm"
CASES = ["basic", "crowd", "areas", "empty", "ties"]
# Results without boxes: loadRes then takes boxes and areas from the masks.
NO_BOX_CASES = {"areas_nobox": "areas"}

spec = importlib.util.spec_from_file_location("bbox_fixtures", REPO_ROOT / "tools" / "gen_coco_eval_fixtures.py")
bbox = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bbox)


def compressed(polys, h, w):
    rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def box_poly(b):
    x, y, w, h = b
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def segm_gt(gt):
    sizes = {i["id"]: (i["height"], i["width"]) for i in gt["images"]}
    n_poly = 0
    for a in gt["annotations"]:
        h, w = sizes[a["image_id"]]
        seg = a.get("segmentation")
        if seg is None:
            seg = [bbox.octagon(a["bbox"], 0.2)]
        if isinstance(seg, list):
            n_poly += 1
            if n_poly % 3 == 0:
                seg = compressed(seg, h, w)
        a["segmentation"] = seg
    return gt


def segm_pred(pred, gt):
    sizes = {i["id"]: (i["height"], i["width"]) for i in gt["images"]}
    for k, d in enumerate(pred):
        h, w = sizes[d["image_id"]]
        b = d["bbox"]
        shape = [bbox.octagon(b, 0.25), bbox.diamond(b), box_poly(b)][k % 3]
        d["segmentation"] = compressed([shape], h, w)
    return pred


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for case in CASES + list(NO_BOX_CASES):
        src = NO_BOX_CASES.get(case, case)
        gt = segm_gt(json.loads((SRC_DIR / f"{src}_gt.json").read_text()))
        pred = segm_pred(json.loads((SRC_DIR / f"{src}_pred.json").read_text()), gt)
        if case in NO_BOX_CASES:
            for d in pred:
                del d["bbox"]
        gt_path, pred_path = OUT_DIR / f"{case}_gt.json", OUT_DIR / f"{case}_pred.json"
        bbox.write_json_lines(gt_path, gt)
        bbox.write_json_lines(pred_path, pred)
        expected = bbox.evaluate(gt_path, pred_path, iou_type="segm")
        (OUT_DIR / f"{case}_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        print(case, [round(s, 4) for s in expected["stats"]])


if __name__ == "__main__":
    main()
