#!/usr/bin/env python3
"""Generate COCO bbox-evaluation fixtures for the Rust COCO evaluator.

Every case NAME produces three files in crates/rtmdet/tests/data/coco_eval/:

* ``NAME_gt.json``       COCO ground truth (images / annotations / categories)
* ``NAME_pred.json``     COCO results list ``[{image_id, category_id, bbox, score}]``
* ``NAME_expected.json`` reference numbers computed with pycocotools::

      {"stats": [12 floats of COCOeval.stats],
       "per_class_ap":   {"<category_id>": AP@[.5:.95] or -1},
       "per_class_ap50": {"<category_id>": AP@.5 or -1}}

  The per-class values are taken from ``COCOeval.eval['precision']`` exactly
  like ``COCOeval.summarize`` computes AP (area range 'all', maxDets 100, mean
  over the entries > -1, -1 when there is none).

Usage (from the repository root)::

    pip install pycocotools numpy
    python3 tools/gen_coco_eval_fixtures.py

The output is deterministic: each case draws from its own
``numpy.random.default_rng`` seeded from ``BASE_SEED``.
"""

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

BASE_SEED = 20240611

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "crates" / "rtmdet" / "tests" / "data" / "coco_eval"

# Deliberately non-contiguous category ids (as in COCO, where ids run 1..90
# with gaps). Cases take a prefix of this list.
CAT_ID_POOL = [1, 3, 7, 90, 5, 12, 18, 24, 33, 41,
               47, 52, 58, 63, 70, 76, 81, 84, 88, 99]


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def num(x, nd=2):
    """Round to `nd` decimals; emit an int when the value is integral (compact JSON)."""
    v = round(float(x), nd)
    if v == int(v):
        return int(v)
    return v


def shoelace(flat):
    """Area of a polygon given as a flat [x0, y0, x1, y1, ...] list."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    s = 0.0
    for i in range(n):
        j = (i + 1) % n
        s += xs[i] * ys[j] - xs[j] * ys[i]
    return abs(s) / 2.0


def octagon(box, c):
    """Octagon inscribed in `box` with corners cut by fraction `c` of w/h."""
    x, y, w, h = box
    cx, cy = c * w, c * h
    pts = [x + cx, y, x + w - cx, y, x + w, y + cy, x + w, y + h - cy,
           x + w - cx, y + h, x + cx, y + h, x, y + h - cy, x, y + cy]
    return [num(p) for p in pts]


def diamond(box):
    """Rhombus through the edge midpoints of `box` (area = w*h/2)."""
    x, y, w, h = box
    pts = [x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h, x, y + h / 2]
    return [num(p) for p in pts]


def rect_rle(box, img_w, img_h):
    """Uncompressed (column-major) COCO RLE of an integer rectangle, as used
    by crowd annotations in COCO. Returns (rle, pixel_area)."""
    x0, y0, w, h = (int(v) for v in box)
    x1, y1 = min(x0 + w, img_w), min(y0 + h, img_h)
    counts = [x0 * img_h + y0]
    for col in range(x0, x1):
        counts.append(y1 - y0)
        counts.append(img_h - (y1 - y0) if col < x1 - 1 else 0)
    counts[-1] = (img_w - x1) * img_h + (img_h - y1)
    assert sum(counts) == img_w * img_h
    return {"counts": counts, "size": [img_h, img_w]}, (x1 - x0) * (y1 - y0)


class Case:
    """Accumulates images, GT annotations and detections for one case."""

    def __init__(self, name, n_cats, seed_offset, nd=2):
        self.name = name
        self.rng = np.random.default_rng(BASE_SEED + seed_offset)
        self.cat_ids = CAT_ID_POOL[:n_cats]
        self.nd = nd  # decimals used for coordinates
        self.images, self.anns, self.preds = [], [], []
        self._next_img = 1

    # -- random primitives -------------------------------------------------
    def uniform(self, lo, hi):
        return float(self.rng.uniform(lo, hi))

    def randint(self, lo, hi):
        """Integer in [lo, hi] (inclusive)."""
        return int(self.rng.integers(lo, hi + 1))

    def chance(self, p):
        return bool(self.rng.random() < p)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def score(self, lo=0.0, hi=1.0):
        return num(self.uniform(lo, hi), 3)

    def box(self, img, smin, smax):
        """Random box with sqrt(area) in [smin, smax], inside the image."""
        W, H = img["width"], img["height"]
        s = self.uniform(smin, smax)
        ar = math.exp(self.uniform(-0.7, 0.7))
        w = min(s * math.sqrt(ar), W - 1)
        h = min(s / math.sqrt(ar), H - 1)
        x = self.uniform(0, W - w)
        y = self.uniform(0, H - h)
        return [num(v, self.nd) for v in (x, y, w, h)]

    def jitter(self, box, scale):
        """Perturb a box: shift ~ N(0, scale*size), log-size ~ N(0, scale)."""
        x, y, w, h = box
        nx = max(0.0, x + self.rng.normal(0, scale * max(w, 1)))
        ny = max(0.0, y + self.rng.normal(0, scale * max(h, 1)))
        nw = max(1.0, w * math.exp(self.rng.normal(0, scale)))
        nh = max(1.0, h * math.exp(self.rng.normal(0, scale)))
        return [num(v, self.nd) for v in (nx, ny, nw, nh)]

    def box_inside(self, outer, smin, smax):
        """Random box fully inside `outer`."""
        ox, oy, ow, oh = outer
        w = min(self.uniform(smin, smax), ow)
        h = min(self.uniform(smin, smax), oh)
        x = ox + self.uniform(0, ow - w)
        y = oy + self.uniform(0, oh - h)
        return [num(v, self.nd) for v in (x, y, w, h)]

    # -- record builders ---------------------------------------------------
    def image(self, w, h, img_id=None):
        if img_id is None:
            img_id = self._next_img
        self._next_img = max(self._next_img, img_id) + 1
        img = {"id": int(img_id), "width": int(w), "height": int(h),
               "file_name": f"{self.name}_{img_id:06d}.jpg"}
        self.images.append(img)
        return img

    def gt(self, img, cat, box, iscrowd=0, seg=None, area=None):
        """Add a GT annotation.

        seg: None (no segmentation, area = w*h unless `area` given),
             "oct" (octagon polygon, area = polygon area < w*h),
             "diamond" (rhombus polygon, area = w*h/2),
             "rle" (uncompressed RLE of the integer box, for crowd regions).
        """
        ann = {"id": len(self.anns) + 1, "image_id": img["id"],
               "category_id": int(cat), "bbox": box}
        if seg == "oct":
            poly = octagon(box, self.uniform(0.1, 0.3))
            ann["segmentation"] = [poly]
            ann["area"] = num(shoelace(poly))
        elif seg == "diamond":
            poly = diamond(box)
            ann["segmentation"] = [poly]
            ann["area"] = num(shoelace(poly))
        elif seg == "rle":
            rle, a = rect_rle(box, img["width"], img["height"])
            ann["segmentation"] = rle
            ann["area"] = a
        else:
            ann["area"] = num(box[2] * box[3])
        if area is not None:
            ann["area"] = area
        ann["iscrowd"] = int(iscrowd)
        self.anns.append(ann)
        return ann

    def det(self, img, cat, box, score):
        self.preds.append({"image_id": img["id"], "category_id": int(cat),
                           "bbox": list(box), "score": score})

    def shuffle_preds(self):
        """Results files are not grouped by image; order matters for ties."""
        order = self.rng.permutation(len(self.preds))
        self.preds = [self.preds[i] for i in order]

    def gt_json(self):
        cats = [{"id": c, "name": f"class_{c}", "supercategory": "object"}
                for c in self.cat_ids]
        return {"images": self.images, "annotations": self.anns,
                "categories": cats}


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

def detect(c, img, ann, p_hit=0.85, p_dup=0.15, p_wrong=0.05):
    """Typical detector output for one GT box: a jittered hit, sometimes a
    duplicate (lower score) and sometimes a wrong-class detection."""
    cat, box = ann["category_id"], ann["bbox"]
    if c.chance(p_hit):
        c.det(img, cat, c.jitter(box, c.uniform(0.02, 0.2)), c.score(0.3, 1.0))
    if c.chance(p_dup):
        c.det(img, cat, c.jitter(box, c.uniform(0.1, 0.4)), c.score(0.05, 0.8))
    if c.chance(p_wrong):
        other = c.pick([k for k in c.cat_ids if k != cat] or [cat])
        c.det(img, other, c.jitter(box, 0.05), c.score(0.1, 0.9))


def case_basic():
    c = Case("basic", 4, 1)
    for _ in range(20):
        img = c.image(*c.pick([(640, 480), (800, 600), (512, 512)]))
        for _ in range(c.randint(1, 6)):
            ann = c.gt(img, c.pick(c.cat_ids), c.box(img, 8, 300),
                       seg="oct" if c.chance(0.4) else None)
            detect(c, img, ann)
        for _ in range(c.randint(0, 4)):  # background false positives
            c.det(img, c.pick(c.cat_ids), c.box(img, 8, 200), c.score(0.0, 0.7))
    c.shuffle_preds()
    return c


def case_crowd():
    c = Case("crowd", 4, 2)
    for _ in range(15):
        img = c.image(640, 480)
        for _ in range(c.randint(1, 2)):
            cat = c.pick(c.cat_ids)
            # Crowd region: integer box, uncompressed-RLE segmentation like COCO.
            cb = [float(int(v)) for v in c.box(img, 120, 280)]
            cb = [num(v) for v in cb]
            c.gt(img, cat, cb, iscrowd=1, seg="rle")
            # Detections fully inside the crowd region, same class: ignored.
            for _ in range(c.randint(1, 5)):
                c.det(img, cat, c.box_inside(cb, 10, 60), c.score())
            # A detection straddling the crowd border: IoU(crowd) = inter/area(dt)
            # is somewhere in (0, 1), so it is ignored only at low thresholds.
            x, y, w, h = cb
            f = c.uniform(0.3, 0.9)
            dw = min(60.0, w)
            c.det(img, cat, [num(x + w - f * dw), num(y + h / 3), num(dw), 40],
                  c.score())
            # Same region, different class: a genuine false positive.
            other = c.pick([k for k in c.cat_ids if k != cat])
            c.det(img, other, c.box_inside(cb, 20, 50), c.score(0.2, 0.9))
            # A normal GT object inside the crowd region (matching must prefer it).
            if c.chance(0.6):
                ann = c.gt(img, cat, c.box_inside(cb, 30, 80))
                detect(c, img, ann, p_hit=0.9)
        for _ in range(c.randint(1, 4)):  # normal objects elsewhere
            ann = c.gt(img, c.pick(c.cat_ids), c.box(img, 15, 150),
                       seg="oct" if c.chance(0.3) else None)
            detect(c, img, ann)
        for _ in range(c.randint(0, 3)):
            c.det(img, c.pick(c.cat_ids), c.box(img, 10, 120), c.score(0.0, 0.6))
    c.shuffle_preds()
    return c


def case_areas():
    c = Case("areas", 4, 3)
    # (w, h) pairs whose w*h is exactly on an area-range boundary.
    boundary = [(32, 32), (16, 64), (64, 16), (96, 96), (48, 192), (128, 72)]
    for _ in range(25):
        img = c.image(1000, 800)
        for _ in range(c.randint(3, 8)):
            kind = c.pick(["small", "medium", "large", "boundary",
                           "boundary_seg", "straddle"])
            cat = c.pick(c.cat_ids)
            seg = None
            if kind == "small":
                box, seg = c.box(img, 3, 31), ("oct" if c.chance(0.3) else None)
            elif kind == "medium":
                box, seg = c.box(img, 33, 95), ("oct" if c.chance(0.3) else None)
            elif kind == "large":
                box, seg = c.box(img, 97, 400), ("oct" if c.chance(0.3) else None)
            elif kind == "boundary":
                # Integer box with w*h exactly 32^2 or 96^2 (area field = w*h).
                w, h = c.pick(boundary)
                box = [c.randint(0, 1000 - w), c.randint(0, 800 - h), w, h]
            elif kind == "boundary_seg":
                # Diamond polygon with area exactly 1024 or 9216 while w*h is
                # twice that: the area field, not w*h, decides the range.
                w, h = c.pick([(32, 64), (64, 32), (96, 192), (192, 96)])
                box, seg = [c.randint(0, 1000 - w), c.randint(0, 800 - h), w, h], "diamond"
            else:  # "straddle": w*h and area field fall in different ranges
                box, seg = c.box(img, 34, 44), "diamond"  # w*h medium, area small
                if c.chance(0.5):
                    box = c.box(img, 100, 130)  # w*h large, area medium
            ann = c.gt(img, cat, box, seg=seg)
            # Exact copies of boundary boxes keep dt area on the boundary too.
            if kind.startswith("boundary") and c.chance(0.5):
                c.det(img, cat, list(box), c.score(0.2, 1.0))
            else:
                detect(c, img, ann, p_hit=0.85, p_dup=0.1)
        # False positives, some with area exactly on a boundary (ignored or
        # not depending on the range of unmatched detections).
        for _ in range(c.randint(1, 4)):
            if c.chance(0.5):
                w, h = c.pick(boundary)
                b = [c.randint(0, 1000 - w), c.randint(0, 800 - h), w, h]
            else:
                b = c.box(img, 4, 300)
            c.det(img, c.pick(c.cat_ids), b, c.score(0.0, 0.8))
    c.shuffle_preds()
    return c


def case_empty():
    c = Case("empty", 7, 4)
    # Category roles (ids from CAT_ID_POOL[:7] = 1, 3, 7, 90, 5, 12, 18):
    #   1, 3, 7  regular classes
    #   90       GT but never detected          -> AP 0
    #   5        detections but no GT anywhere  -> AP -1
    #   12       neither GT nor detections      -> AP -1
    #   18       only crowd GT + dets inside it -> AP -1 (no non-ignored GT)
    normal, gt_only, det_only, crowd_only = [1, 3, 7], 90, 5, 18
    for i in range(16):
        img = c.image(640, 480)
        role = i % 4
        if role == 0:
            # No GT at all, but detections (all false positives).
            for _ in range(c.randint(1, 4)):
                c.det(img, c.pick(normal + [det_only]), c.box(img, 10, 150),
                      c.score())
        elif role == 1:
            # GT but no detections at all (all false negatives).
            for _ in range(c.randint(1, 3)):
                c.gt(img, c.pick(normal + [gt_only]), c.box(img, 10, 150))
        elif role == 2:
            # Regular image (gt_only objects are never detected).
            for _ in range(c.randint(1, 4)):
                cat = c.pick(normal + [gt_only])
                ann = c.gt(img, cat, c.box(img, 10, 200),
                           seg="oct" if c.chance(0.3) else None)
                if cat != gt_only:
                    detect(c, img, ann, p_wrong=0.0)
            c.det(img, det_only, c.box(img, 10, 100), c.score())
        else:
            if i == 15:
                continue  # image with neither GT nor detections
            # Only a crowd region of `crowd_only`, with detections inside it.
            cb = [num(int(v)) for v in c.box(img, 100, 200)]
            c.gt(img, crowd_only, cb, iscrowd=1, seg="rle")
            for _ in range(c.randint(1, 3)):
                c.det(img, crowd_only, c.box_inside(cb, 10, 50), c.score())
    c.shuffle_preds()
    return c


def case_ties():
    c = Case("ties", 4, 5)
    levels = [0.9, 0.75, 0.5, 0.25]  # only four distinct scores
    # Non-contiguous image ids, listed out of order in the GT file (the
    # evaluator sorts them; the accumulation order follows sorted ids).
    ids = [int(v) for v in c.rng.permutation(np.arange(15) * 7 + 1000)]
    for img_id in ids:
        img = c.image(c.pick([640, 800]), 480, img_id=img_id)
        for _ in range(c.randint(2, 5)):
            cat = c.pick(c.cat_ids)
            # Integer, even-sized boxes so that exact-IoU variants are exact.
            b = c.box(img, 24, 160)
            b = [int(b[0]), int(b[1]), max(4, int(b[2]) // 4 * 4), max(2, int(b[3]) // 2 * 2)]
            ann = c.gt(img, cat, b, seg="oct" if c.chance(0.3) else None)
            x, y, w, h = b
            # Several detections of one object with the same score: only the
            # first in (stable) order is a TP, the rest are FPs.
            s = c.pick(levels)
            for _ in range(c.randint(1, 3)):
                c.det(img, cat, c.jitter(b, 0.05), s)
            # Exact IoU 0.5 and 0.75 (boundary thresholds, matched with >=).
            if c.chance(0.5):
                c.det(img, cat, [x, y, w // 2, h], c.pick(levels))
            if c.chance(0.5):
                c.det(img, cat, [x + w // 4, y, w * 3 // 4, h], c.pick(levels))
            # A poor localisation (FP at every threshold) with a tied score.
            if c.chance(0.4):
                c.det(img, cat, [x + w * 0.7, y + h * 0.7, w, h], c.pick(levels))
            # Duplicate GT with the same box but a different area field: with
            # equal IoU pycocotools matches the *last* candidate GT.
            if c.chance(0.25):
                c.gt(img, cat, list(b), seg="diamond")
        for _ in range(c.randint(0, 3)):
            c.det(img, c.pick(c.cat_ids), c.box(img, 10, 120), c.pick(levels))
    c.shuffle_preds()
    return c


def case_many():
    c = Case("many", 10, 6)
    img_id = 0
    for i in range(200):
        img_id += c.randint(1, 4)  # gaps in the id sequence
        W, H = c.pick([(640, 480), (800, 600), (1024, 768), (480, 640)])
        img = c.image(W, H, img_id=img_id)
        for _ in range(c.randint(0, 12)):
            seg = "oct" if c.chance(0.2) else None
            ann = c.gt(img, c.pick(c.cat_ids), c.box(img, 4, 400), seg=seg)
            detect(c, img, ann)
        if c.chance(0.02):
            # Degenerate GT (zero width): never matched, area 0.
            b = c.box(img, 10, 50)
            c.gt(img, c.pick(c.cat_ids), [b[0], b[1], 0, b[3]])
        crowded = i % 13 == 0
        # Crowded images get 101..110 extra detections of one class, so the
        # per-image, per-class maxDets=100 truncation kicks in; other images
        # are topped up to 3..20 detections.
        own = [a for a in c.anns if a["image_id"] == img_id]
        n_dets = sum(1 for p in c.preds if p["image_id"] == img_id)
        n_extra = c.randint(101, 110) if crowded else max(0, c.randint(3, 20) - n_dets)
        dom = c.pick(c.cat_ids)
        for _ in range(n_extra):
            cat = dom if crowded else c.pick(c.cat_ids)
            r = c.rng.random()
            if r < 0.05:  # degenerate detection boxes (w or h == 0)
                b = c.box(img, 5, 100)
                b[2 if c.chance(0.5) else 3] = 0
            elif r < 0.35 and own:  # near (but not on) a GT object
                near = c.pick(own)
                b = c.jitter(near["bbox"], 0.3)
                if not crowded:
                    cat = near["category_id"]
            else:
                b = c.box(img, 4, 300)
            c.det(img, cat, b, c.score())
    c.shuffle_preds()
    return c


def case_large():
    # Integer coordinates and 3-decimal scores keep this at ~1.25 MB in total
    # (~12 detections per image; more would bloat the repository).
    c = Case("large", 20, 7, nd=0)
    for _ in range(1000):
        img = c.image(*c.pick([(640, 480), (800, 600), (1280, 720)]))
        for _ in range(c.randint(1, 6)):
            ann = c.gt(img, c.pick(c.cat_ids), c.box(img, 6, 400))
            detect(c, img, ann, p_hit=0.85, p_dup=0.2, p_wrong=0.1)
        for _ in range(c.randint(4, 12)):
            c.det(img, c.pick(c.cat_ids), c.box(img, 6, 300), c.score(0.0, 0.6))
    c.shuffle_preds()
    return c


CASES = [case_basic, case_crowd, case_areas, case_empty, case_ties,
         case_many, case_large]


# --------------------------------------------------------------------------
# Reference evaluation and output
# --------------------------------------------------------------------------

def write_json_lines(path, obj):
    """Compact JSON with one list element per line (small and diff-friendly)."""
    def dump(v):
        return json.dumps(v, separators=(",", ":"))

    def dump_list(items):
        return "[\n" + ",\n".join(dump(v) for v in items) + "\n]"

    if isinstance(obj, list):
        text = dump_list(obj)
    else:
        text = "{\n" + ",\n".join(
            f"{dump(k)}:{dump_list(v) if isinstance(v, list) else dump(v)}"
            for k, v in obj.items()) + "\n}"
    path.write_text(text + "\n")


def mean_valid(s):
    """pycocotools summarize: mean over entries > -1, or -1 if there are none."""
    v = s[s > -1]
    return float(np.mean(v)) if v.size else -1.0


def evaluate(gt_path, pred_path, iou_type="bbox"):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(pred_path))
        E = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        E.evaluate()
        E.accumulate()
        E.summarize()
    p = E.params
    prec = E.eval["precision"]  # [T, R, K, A, M]
    a_all = p.areaRngLbl.index("all")
    m_100 = p.maxDets.index(100)
    t_50 = np.where(p.iouThrs == 0.5)[0]  # same lookup as summarize
    ap, ap50 = {}, {}
    for k, cat_id in enumerate(p.catIds):
        ap[str(cat_id)] = mean_valid(prec[:, :, k, a_all, m_100])
        ap50[str(cat_id)] = mean_valid(prec[t_50, :, k, a_all, m_100])
    return {"stats": [float(s) for s in E.stats],
            "per_class_ap": ap, "per_class_ap50": ap50}


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for make in CASES:
        c = make()
        gt_path = OUT_DIR / f"{c.name}_gt.json"
        pred_path = OUT_DIR / f"{c.name}_pred.json"
        exp_path = OUT_DIR / f"{c.name}_expected.json"
        write_json_lines(gt_path, c.gt_json())
        write_json_lines(pred_path, c.preds)
        expected = evaluate(gt_path, pred_path)
        exp_path.write_text(json.dumps(expected, indent=1) + "\n")
        stats = " ".join(f"{s:.4f}" for s in expected["stats"])
        print(f"{c.name:6s} imgs={len(c.images):4d} gt={len(c.anns):5d} "
              f"dets={len(c.preds):6d}  stats: {stats}")


if __name__ == "__main__":
    main()
