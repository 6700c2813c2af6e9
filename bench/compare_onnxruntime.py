#!/usr/bin/env python3
"""ONNX Runtime vs `rtmdet bench` on the same model, in the same run, per thread count.

    cargo build --release -p rtmdet-cli
    python3 bench/compare_onnxruntime.py                      # tiny, the reference ONNX export
    python3 bench/compare_onnxruntime.py --weights ../shared/reference/checkpoints/rtmdet_s_ref_seed1.pth

Without --onnx the ONNX graph is built from the checkpoint (bench/onnx_from_checkpoint.py,
BN folded as mmdeploy exports it). The two engines are timed alternately for --rounds rounds
(this machine's speed drifts); the table gives each side's best median and the ratio ours/ORT.
Needs: numpy, onnx, onnxruntime.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REF = os.path.join(ROOT, "..", "shared", "reference")


def ort_median_ms(path, threads, iters, imgsz):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, imgsz, imgsz), dtype=np.float32)
    for _ in range(3):
        sess.run(None, {name: x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), float(np.min(times))


def ours_median_ms(exe, weights, threads, iters, imgsz):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bench.json")
        cmd = [exe, "bench", "--weights", weights, "--threads", str(threads), "--iters", str(iters),
               "--imgsz", str(imgsz), "--json", out]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        row = json.load(open(out))[0]
    return row["model_ms"]["median"], row["model_ms"]["min"], row["gflops"], row["peak_gflops"], row["e2e_ms"]["median"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtmdet", default=os.path.join(ROOT, "target", "release", "rtmdet"))
    ap.add_argument("--weights", default=os.path.join(REF, "checkpoints", "rtmdet_tiny_ref_seed1.pth"))
    ap.add_argument("--onnx", help="ONNX model (default: the reference export for tiny seed 1, else built)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    onnx_path = args.onnx
    tmp = None
    if onnx_path is None:
        if os.path.basename(args.weights) == "rtmdet_tiny_ref_seed1.pth":
            onnx_path = os.path.join(REF, "onnx", "rtmdet_tiny_ref_seed1_raw.onnx")
        else:
            sys.path.insert(0, HERE)
            import onnx
            from onnx_from_checkpoint import build, read_state_dict
            tmp = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False)
            onnx.save(build(read_state_dict(args.weights)), tmp.name)
            onnx_path = tmp.name
    print(f"model {os.path.basename(args.weights)}, ONNX {os.path.basename(onnx_path)}, "
          f"onnxruntime {ort.__version__}, {args.imgsz}x{args.imgsz}, batch 1")
    rows = []
    for t in [int(v) for v in args.threads.split(",")]:
        ort_best, ours_best, extra = float("inf"), float("inf"), None
        for r in range(args.rounds):
            o_med, _ = ort_median_ms(onnx_path, t, args.iters, args.imgsz)
            m_med, _, gflops, peak, e2e = ours_median_ms(args.rtmdet, args.weights, t, args.iters, args.imgsz)
            print(f"  threads {t} round {r + 1}: ORT {o_med:7.2f} ms, ours {m_med:7.2f} ms, ratio {m_med / o_med:.3f}")
            ort_best = min(ort_best, o_med)
            if m_med < ours_best:
                ours_best, extra = m_med, (gflops, peak, e2e)
        rows.append({"threads": t, "ort_ms": ort_best, "ours_ms": ours_best, "ratio": ours_best / ort_best,
                     "gflops": extra[0], "peak_gflops": extra[1], "ours_e2e_ms": extra[2]})
    print(f"{'threads':>7} {'ORT ms':>9} {'ours ms':>9} {'ours/ORT':>9} {'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        print(f"{r['threads']:>7} {r['ort_ms']:>9.2f} {r['ours_ms']:>9.2f} {r['ratio']:>9.3f} "
              f"{r['gflops']:>8.0f} {100 * r['gflops'] / r['peak_gflops']:>7.0f}%")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=2)
    if tmp is not None:
        os.unlink(tmp.name)


if __name__ == "__main__":
    main()
