#!/usr/bin/env python3
"""Generate quadrilateral fixtures for crates/rtmdet/src/structures/quad.rs.

Writes crates/rtmdet/tests/data/dota/quad_fixtures.json with the answers of the libraries
mmrotate uses for DOTA annotations:

* ``min_area_rect``: ``cv2.minAreaRect`` (OpenCV 4.10, what mmrotate's ``qbox2rbox``
  calls) of float32 quads: axis-aligned and rotated rectangles, integer DOTA-like quads,
  jittered rectangles, random convex and non-convex quads, collinear/duplicate points.
  Outputs are float32 ``(cx, cy, w, h, angle_degrees)``.
* ``iof``: ``img_split.py``'s ``bbox_overlaps_iof``: the shapely area of the quad's
  intersection with a horizontal window over the quad's area (float32 union clamped at
  1e-6), for valid (simple) quads only.

Floats are written with ``repr`` of Python floats (exact round trip of float32 values).

Usage (from the repository root)::

    pip install opencv-python-headless==4.10.0.84 shapely numpy
    python3 tools/gen_quad_fixtures.py

The output is deterministic (``numpy.random.default_rng(SEED)``).
"""

import json

import cv2
import numpy as np
import shapely.geometry as shgeo

SEED = 20261202
rng = np.random.default_rng(SEED)


def rect(cx, cy, w, h, t):
    c, s = np.cos(t), np.sin(t)
    v1 = np.array([w / 2 * c, w / 2 * s])
    v2 = np.array([-h / 2 * s, h / 2 * c])
    ctr = np.array([cx, cy])
    return np.concatenate([ctr + v1 + v2, ctr + v1 - v2, ctr - v1 - v2, ctr - v1 + v2])


quads = []
# Axis-aligned rectangles in all four corner orders and both orientations.
for _ in range(20):
    x1, y1 = rng.integers(0, 900, 2)
    w, h = rng.integers(1, 120, 2)
    q = np.array([x1, y1, x1 + w, y1, x1 + w, y1 + h, x1, y1 + h], dtype=np.float64)
    pts = q.reshape(4, 2)
    k = int(rng.integers(0, 4))
    pts = np.roll(pts, k, axis=0)
    if rng.random() < 0.5:
        pts = pts[::-1]
    quads.append(pts.reshape(8))
# Exact squares (ties between every edge).
for _ in range(10):
    x1, y1 = rng.integers(0, 900, 2)
    s = rng.integers(1, 100)
    quads.append(np.array([x1, y1, x1 + s, y1, x1 + s, y1 + s, x1, y1 + s], dtype=np.float64))
# Rotated rectangles, float and rounded to integers (DOTA labels are integer quads).
for _ in range(150):
    r = rect(rng.uniform(0, 1000), rng.uniform(0, 1000), rng.uniform(2, 200), rng.uniform(2, 200),
             rng.uniform(-np.pi, np.pi))
    quads.append(np.round(r) if rng.random() < 0.5 else r)
# Jittered rectangles, random convex/non-convex quads.
for _ in range(150):
    r = rect(rng.uniform(0, 1000), rng.uniform(0, 1000), rng.uniform(5, 200), rng.uniform(5, 200),
             rng.uniform(-np.pi, np.pi))
    quads.append(np.round(r + rng.normal(0, 3, 8)))
for _ in range(100):
    quads.append(np.round(rng.uniform(0, 300, 8)))
# Degenerate: collinear and repeated points.
quads.append(np.array([0, 0, 10, 0, 20, 0, 30, 0], dtype=np.float64))
quads.append(np.array([5, 5, 5, 5, 5, 5, 5, 5], dtype=np.float64))
quads.append(np.array([0, 0, 10, 10, 10, 10, 0, 0], dtype=np.float64))
quads.append(np.array([0, 0, 10, 0, 10, 0, 0, 5], dtype=np.float64))

cases = []
for q in quads:
    q32 = np.asarray(q, dtype=np.float32)
    (cx, cy), (w, h), a = cv2.minAreaRect(q32.reshape(4, 2))
    cases.append({
        "quad": [float(v) for v in q32],
        "rect": [float(np.float32(v)) for v in (cx, cy, w, h, a)],
    })

iof = []
for _ in range(300):
    r = rect(rng.uniform(-100, 1200), rng.uniform(-100, 1200), rng.uniform(5, 300), rng.uniform(5, 300),
             rng.uniform(-np.pi, np.pi))
    q = np.round(r + rng.normal(0, 2, 8)).astype(np.float32)
    poly = shgeo.Polygon(q.reshape(4, 2))
    if not poly.is_valid:
        continue
    x0, y0 = rng.integers(0, 600, 2)
    win = [float(x0), float(y0), float(x0 + 1024), float(y0 + 1024)]
    l, t, rr, b = win
    wpoly = shgeo.Polygon([(l, t), (rr, t), (rr, b), (l, b)])
    inter = poly.intersection(wpoly).area
    union = max(float(np.float32(poly.area)), 1e-6)
    iof.append({"quad": [float(v) for v in q], "window": win, "iof": inter / union})

out = {"seed": SEED, "opencv": cv2.__version__, "min_area_rect": cases, "iof": iof}
with open("crates/rtmdet/tests/data/dota/quad_fixtures.json", "w") as f:
    json.dump(out, f)
print(len(cases), "minAreaRect cases,", len(iof), "iof cases")
