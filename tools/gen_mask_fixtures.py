#!/usr/bin/env python3
"""Generate COCO mask (RLE) fixtures for the Rust port in crates/rtmdet/src/structures/mask.rs.

Writes crates/rtmdet/tests/data/masks/fixtures.json with the answers of pycocotools itself
(``pycocotools.mask``, i.e. maskApi.c) for:

* ``encode``:   bitmaps -> uncompressed counts, compressed string, area, bbox
                (``encode``, ``area``, ``toBbox``) and back (``decode``);
* ``polygons``: polygon lists -> per-part RLE (``frPyObjects`` / ``frPoly``) and the
                merged RLE of ``COCO.annToRLE`` (``frPyObjects`` + ``merge``), plus the
                lists that pycocotools rejects (``error``);
* ``bboxes``:   ``[x, y, w, h]`` boxes -> RLE (``frPyObjects`` / ``frBbox``);
* ``merge``:    union and intersection of 1 to 4 masks (``merge``);
* ``iou``:      ``iou(dt, gt, iscrowd)`` of RLE lists, crowd flags and size mismatches;
* ``counts``:   uncompressed counts (zero-length runs, large counts, negative string
                deltas) -> compressed string, area, bbox (``frPyObjects`` with a dict).

Bitmaps are stored row-major as hex of ``numpy.packbits`` (MSB first, padded to a byte).
Counts are lists of ints, strings are the ASCII of pycocotools' compressed form, floats
are written with ``repr`` (exact round trip).

Usage (from the repository root)::

    pip install pycocotools numpy
    python3 tools/gen_mask_fixtures.py

The output is deterministic (``numpy.random.default_rng(SEED)``).
"""

import json
import os
import sys

import numpy as np
from importlib.metadata import version

from pycocotools import mask as mu

SEED = 20240611
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "rtmdet", "tests", "data",
                   "masks", "fixtures.json")


def bits_hex(m):
    """Row-major bitmap -> hex string of packed bits."""
    return np.packbits(m.astype(np.uint8).ravel()).tobytes().hex()


def uncompressed_counts(m):
    """Column-major run lengths of a bitmap, computed independently in numpy."""
    flat = np.asarray(m, dtype=np.uint8).ravel(order="F")
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return counts


def as_str(rle):
    c = rle["counts"]
    return c.decode() if isinstance(c, bytes) else c


def encode_case(m):
    m = np.asarray(m, dtype=np.uint8)
    h, w = m.shape
    rle = mu.encode(np.asfortranarray(m[:, :, None]))[0]
    case = {"h": h, "w": w, "bits": bits_hex(m), "counts": uncompressed_counts(m), "string": as_str(rle),
            "area": int(mu.area(rle)), "bbox": [float(v) for v in mu.toBbox(rle)]}
    back = mu.decode(rle)
    assert back.shape == (h, w) and (back == m).all()
    return case


def random_blobs(rng, h, w, n):
    m = np.zeros((h, w), np.uint8)
    for _ in range(n):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h + 1), rng.integers(x0, w + 1)
        m[y0:y1, x0:x1] ^= 1
    return m


def gen_encode(rng):
    cases = []
    for h, w in [(1, 1), (1, 7), (7, 1), (3, 5), (5, 3), (2, 2), (4, 6)]:
        cases.append(encode_case(np.zeros((h, w))))
        cases.append(encode_case(np.ones((h, w))))
    for h, w in [(3, 4), (5, 5), (6, 2)]:
        for y, x in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)]:
            m = np.zeros((h, w)); m[y, x] = 1
            cases.append(encode_case(m))
            cases.append(encode_case(1 - m))
    for h, w, p in [(9, 11, 0.5), (13, 7, 0.1), (17, 19, 0.9), (31, 29, 0.3), (1, 40, 0.5), (40, 1, 0.5)]:
        cases.append(encode_case(rng.random((h, w)) < p))
    for h, w, n in [(48, 64, 3), (97, 83, 6), (120, 160, 10)]:
        cases.append(encode_case(random_blobs(rng, h, w, n)))
    return cases


def poly_case(polys, h, w):
    case = {"h": h, "w": w, "polys": [[float(v) for v in p] for p in polys]}
    try:
        parts = mu.frPyObjects(polys, h, w)
        merged = mu.merge(parts)
    except Exception as e:  # pycocotools rejects the list
        case["error"] = type(e).__name__
        return case
    case["parts"] = [as_str(r) for r in parts]
    case["merged"] = as_str(merged)
    case["merged_area"] = int(mu.area(merged))
    case["merged_bbox"] = [float(v) for v in mu.toBbox(merged)]
    return case


def star(rng, cx, cy, r, n):
    ang = np.sort(rng.random(n) * 2 * np.pi)
    rad = r * (0.3 + 0.7 * rng.random(n))
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    return pts.ravel().tolist()


def gen_polygons(rng):
    cases = []
    # Random star polygons, inside and across the image border, odd image sizes.
    for h, w in [(10, 10), (17, 23), (64, 48), (101, 77), (480, 640)]:
        for _ in range(4):
            cx, cy = rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(-0.2 * h, 1.2 * h)
            r = rng.uniform(1, 0.6 * max(h, w))
            cases.append(poly_case([star(rng, cx, cy, r, int(rng.integers(3, 25)))], h, w))
        # Several parts (merged as a union, overlapping or not).
        parts = [star(rng, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, 0.4 * max(h, w)),
                      int(rng.integers(3, 12))) for _ in range(3)]
        cases.append(poly_case(parts, h, w))
        # Random self-intersecting polygon (vertices in random order).
        pts = rng.uniform([-2, -2], [w + 2, h + 2], size=(int(rng.integers(4, 10)), 2))
        cases.append(poly_case([pts.ravel().tolist()], h, w))
        # Integer, half-integer and tenth coordinates (rounding ties of 5x + .5).
        for q in [1.0, 0.5, 0.1, 0.2]:
            pts = np.round(rng.uniform([-1, -1], [w + 1, h + 1], size=(6, 2)) / q) * q
            cases.append(poly_case([pts.ravel().tolist()], h, w))
    h, w = 12, 15
    deg = [
        [2, 2, 2, 2, 2, 2],                      # one point three times
        [1, 1, 5, 5, 9, 9],                      # collinear
        [1, 1, 8, 1, 8, 6, 1, 6, 1, 1],          # closing vertex repeated
        [1, 1, 8, 1, 8, 1, 8, 6, 1, 6],          # repeated vertex in the middle
        [1, 1, 8, 1, 8, 6, 1, 6, 3],             # odd number of coordinates
        [3.3, 3.3, 3.5, 3.3, 3.5, 3.5],          # smaller than a pixel
        [0.4, 0.4, 0.6, 0.4, 0.6, 0.6, 0.4, 0.6],  # around a pixel centre
        [-5, -5, -1, -5, -1, -1],                # entirely outside (top-left)
        [20, 2, 30, 2, 30, 9],                   # entirely outside (right)
        [-100, -100, 100, -100, 100, 100, -100, 100],  # covers the image
        [-0.1, -0.1, 14.9, -0.1, 14.9, 11.9, -0.1, 11.9],
        [-0.3, 0, 4, -0.3, 4, 4],                 # truncation toward zero of negatives
        [0, 0, 14, 0, 14, 11, 0, 11],            # exactly on the border pixel centres
        [0, 0, 15, 0, 15, 12, 0, 12],            # on the image edge
        [5, 0, 5.1, 11, 5.2, 0],                 # thin sliver
        [0, 5, 14, 5.1, 0, 5.2],                 # thin horizontal sliver
        [1, 1, 13, 10, 1, 10, 13, 1],            # bow tie
    ]
    for p in deg:
        cases.append(poly_case([p], h, w))
    cases.append(poly_case([[2, 2, 6, 2, 6, 6], [1, 1, 1, 1, 1, 1]], h, w))  # a degenerate 2nd part
    cases.append(poly_case([[2, 2, 6, 2, 6, 6], [3, 3]], h, w))             # a 1-point 2nd part
    cases.append(poly_case([[2, 2, 6, 2, 6, 6], []], h, w))                 # an empty 2nd part
    # frPyObjects quirk: a first part of exactly 4 numbers makes the list a list of boxes.
    cases.append(poly_case([[2, 3, 4, 5]], h, w))
    cases.append(poly_case([[2, 3, 4, 5], [0.5, 0.5, 3.2, 2.7]], h, w))
    cases.append(poly_case([[2, 3, 4, 5], [1, 1, 8, 1, 8, 6]], h, w))      # rejected
    cases.append(poly_case([[1, 2]], h, w))                                  # rejected
    cases.append(poly_case([[]], h, w))                                      # rejected
    # Image sizes with a 1-pixel side.
    cases.append(poly_case([[0, 0, 5, 0, 5, 0.6, 0, 0.6]], 1, 6))
    cases.append(poly_case([[0, 0, 0.6, 0, 0.6, 5, 0, 5]], 6, 1))
    return cases


def gen_bboxes(rng):
    cases = []
    h, w = 20, 30
    boxes = [[0, 0, 30, 20], [0, 0, 1, 1], [2.3, 4.7, 10.2, 3.3], [-5, -5, 10, 10], [25, 15, 10, 10],
             [5, 5, 0, 4], [5, 5, 4, 0], [3.5, 3.5, 2, 2], [40, 40, 3, 3]]
    boxes += np.round(rng.uniform([-5, -5, 0, 0], [w, h, 15, 15], size=(12, 4)), 3).tolist()
    for b in boxes:
        rle = mu.frPyObjects(np.array([b], dtype=np.float64), h, w)[0]
        cases.append({"h": h, "w": w, "bbox": [float(v) for v in b], "string": as_str(rle),
                      "area": int(mu.area(rle))})
    return cases


def gen_merge(rng):
    cases = []
    for h, w, n in [(5, 5, 1), (5, 5, 2), (9, 7, 3), (16, 16, 4), (30, 20, 2), (1, 1, 2)]:
        for _ in range(3):
            ms = [random_blobs(rng, h, w, int(rng.integers(0, 4))) for _ in range(n)]
            rles = [mu.encode(np.asfortranarray(m[:, :, None]))[0] for m in ms]
            union = mu.merge(rles, intersect=0)
            inter = mu.merge(rles, intersect=1)
            assert (mu.decode(union) == np.any(ms, 0)).all()
            assert (mu.decode(inter) == np.all(ms, 0)).all()
            cases.append({"h": h, "w": w, "inputs": [as_str(r) for r in rles],
                          "union": as_str(union), "intersection": as_str(inter)})
    return cases


def rle_dict(m):
    return mu.encode(np.asfortranarray(np.asarray(m, np.uint8)[:, :, None]))[0]


def gen_iou(rng):
    cases = []
    for h, w, m, n in [(10, 10, 3, 4), (23, 17, 6, 5), (50, 40, 8, 8), (7, 9, 1, 1)]:
        for _ in range(2):
            gts = [random_blobs(rng, h, w, int(rng.integers(1, 4))) for _ in range(n)]
            dts = [random_blobs(rng, h, w, int(rng.integers(0, 4))) for _ in range(m)]
            if m > 1:
                dts[0] = gts[0].copy()                 # identical
                dts[1] = np.zeros((h, w), np.uint8)    # empty
            crowd = [bool(rng.random() < 0.4) for _ in range(n)]
            d = [rle_dict(x) for x in dts]
            g = [rle_dict(x) for x in gts]
            iou = np.asarray(mu.iou(d, g, [int(c) for c in crowd]))
            cases.append({"dt": [{"size": [h, w], "string": as_str(r)} for r in d],
                          "gt": [{"size": [h, w], "string": as_str(r)} for r in g],
                          "iscrowd": crowd, "iou": iou.reshape(m, n).tolist()})
    # Sizes that differ: -1 where the boxes overlap, 0 elsewhere.
    a = np.zeros((10, 10), np.uint8); a[2:6, 2:6] = 1
    b = np.zeros((10, 12), np.uint8); b[3:8, 3:8] = 1
    c = np.zeros((10, 12), np.uint8); c[8:, 9:] = 1
    d, g = [rle_dict(a)], [rle_dict(b), rle_dict(c)]
    iou = np.asarray(mu.iou(d, g, [0, 1]))
    cases.append({"dt": [{"size": [10, 10], "string": as_str(d[0])}],
                  "gt": [{"size": [10, 12], "string": as_str(r)} for r in g],
                  "iscrowd": [False, True], "iou": iou.reshape(1, 2).tolist()})
    return cases


def gen_counts(rng):
    cases = []
    lists = [
        (3, 4, [0, 3, 0, 2, 7]),         # zero-length runs inside
        (3, 4, [5, 0, 7]),               # only an empty foreground run (toBbox wraps)
        (3, 4, [12]),
        (3, 4, [0, 12]),
        (3, 4, [4, 4, 4]),               # a whole column
        (3, 4, [1, 5, 6]),               # a run across a column boundary
        (1000, 1000, [100000, 3, 5, 200000, 1, 699991]),     # large counts, negative deltas
        (2000, 3000, [0, 5999999, 1]),
        (1, 1, [0, 1]),
        (1, 1, [1]),
    ]
    for _ in range(6):
        h, w = int(rng.integers(1, 400)), int(rng.integers(1, 400))
        cuts = np.sort(rng.choice(h * w, size=int(rng.integers(1, 12)), replace=False))
        counts = np.diff(np.concatenate([[0], cuts, [h * w]])).tolist()
        lists.append((h, w, counts))
    for h, w, counts in lists:
        assert sum(counts) == h * w
        rle = mu.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        cases.append({"h": h, "w": w, "counts": [int(c) for c in counts], "string": as_str(rle),
                      "area": int(mu.area(rle)), "bbox": [float(v) for v in mu.toBbox(rle)]})
    return cases


def main():
    rng = np.random.default_rng(SEED)
    out = {
        "generator": "tools/gen_mask_fixtures.py",
        "pycocotools": version("pycocotools"),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "encode": gen_encode(rng),
        "polygons": gen_polygons(rng),
        "bboxes": gen_bboxes(rng),
        "merge": gen_merge(rng),
        "iou": gen_iou(rng),
        "counts": gen_counts(rng),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
