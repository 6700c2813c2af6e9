#!/usr/bin/env python3
"""Runs `rtmdet export` graphs in ONNX Runtime (CPU) on the reference inputs and compares them
with the original OpenMMLab outputs stored in ../shared/reference/infer (mmdet's deploy
post-processing in input pixels, `dep_in_*`), and FP16 exports with FP32 ones.

    pip install onnxruntime numpy
    cargo build --release -p rtmdet-cli
    python3 tools/check_export_onnxruntime.py [--runtime openvino]

`--runtime openvino` (pip install openvino) runs the same graphs in OpenVINO's CPU plugin with
FP32 inference precision (its default on CPUs with BF16 support is BF16).

Prints one line per (model, export, image): detections matched as sets (same label, box and
score differences), mask IoU for RTMDet-Ins, raw-map differences for raw exports.
"""
import argparse
import os
import subprocess
import tempfile

import numpy as np

REF = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'reference')
MODELS = {
    'tiny': ('checkpoints/rtmdet_tiny_ref_seed1.pth', 'rtmdet_tiny_ref_seed1'),
    'ins-tiny': ('checkpoints/rtmdet_ins_tiny_ref_seed1.pth', 'rtmdet_ins_tiny_ref_seed1'),
    'tiny-exp': ('checkpoints/rtmdet_tiny_exp_ref_seed3.pth', 'rtmdet_tiny_exp_ref_seed3'),
    's': ('checkpoints/rtmdet_s_ref_seed1.pth', 'rtmdet_s_ref_seed1'),
}
IMAGES = ['demo', 'zli20', 'coco049']


def export(binary, weights, out, *flags):
    subprocess.run([binary, 'export', '--weights', weights, '--out', out, '--force', *flags],
                   check=True, capture_output=True)


RUNTIME = 'onnxruntime'


def run(path, x):
    if RUNTIME == 'openvino':
        import openvino as ov
        core = ov.Core()
        m = core.compile_model(core.read_model(path), 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
        r = m([x])
        return {o.get_any_name(): r[o] for o in m.outputs}
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {'input': x})))


def match(dets, labels, rb, rs, rl):
    """Worst box and score difference over the reference detections (same label, nearest box)."""
    n = int((dets[:, 4] > 0).sum())
    worst_b = worst_s = 0.0
    pairs = []
    for i in range(len(rs)):
        d = np.abs(dets[:n, :4] - rb[i]).max(1) + 1e9 * (labels[:n] != rl[i])
        j = int(d.argmin())
        worst_b, worst_s = max(worst_b, float(d[j])), max(worst_s, float(abs(dets[j, 4] - rs[i])))
        pairs.append((i, j))
    return n, worst_b, worst_s, pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--binary', default='target/release/rtmdet')
    ap.add_argument('--runtime', choices=['onnxruntime', 'openvino'], default='onnxruntime')
    args = ap.parse_args()
    global RUNTIME
    RUNTIME = args.runtime
    tmp = tempfile.mkdtemp()
    for name, (ckpt, key) in MODELS.items():
        weights = os.path.join(REF, ckpt)
        fp32, fp16, raw = (os.path.join(tmp, f'{name}{s}.onnx') for s in ('', '-fp16', '-raw'))
        export(args.binary, weights, fp32)
        export(args.binary, weights, fp16, '--half')
        export(args.binary, weights, raw, '--mode', 'raw')
        for img in IMAGES:
            path = os.path.join(REF, 'infer', f'{key}__{img}.npz')
            if not os.path.exists(path):
                continue
            ref = np.load(path)
            x = np.load(os.path.join(REF, 'inputs', f'{img}.npz'))['input']
            r = run(raw, x)
            rel = max(float(np.abs(r[k] - ref[k if k != 'mask_feat' else 'proto']).max()
                            / np.abs(ref[k if k != 'mask_feat' else 'proto']).max()) for k in r)
            print(f'{name:9s} {img:8s} raw      maps within {rel:.1e} of their scale')
            for label, f in (('end2end', fp32), ('fp16', fp16)):
                e = run(f, x)
                dets, labels = e['dets'][0], e['labels'][0]
                n, wb, ws, pairs = match(dets, labels, ref['dep_in_bboxes'], ref['dep_in_scores'],
                                         ref['dep_in_labels'])
                line = (f'{name:9s} {img:8s} {label:8s} {n} detections (original {len(ref["dep_in_scores"])}), '
                        f'boxes within {wb:.2g} px, scores within {ws:.2g}')
                if 'masks' in e:
                    rm = ref['dep_in_masks'].astype(bool)
                    ious = []
                    for i, j in pairs:
                        mk = e['masks'][0][j] > 0.5
                        u = (mk | rm[i]).sum()
                        if u:
                            ious.append((mk & rm[i]).sum() / u)
                    line += f', worst mask IoU {min(ious):.4f}'
                print(line)


if __name__ == '__main__':
    main()
