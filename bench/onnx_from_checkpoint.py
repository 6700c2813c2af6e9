#!/usr/bin/env python3
"""Builds a BN-folded ONNX graph of an RTMDet checkpoint (OpenMMLab .pth), as mmdeploy's raw
export does (Conv, Sigmoid·Mul for SiLU, GlobalAveragePool·Conv·HardSigmoid for channel
attention, MaxPool, nearest Resize, Concat), so ONNX Runtime can be timed on sizes that have
no reference export (e.g. s). Needs numpy and onnx only (no torch).

    python3 bench/onnx_from_checkpoint.py CKPT.pth OUT.onnx
"""
import pickle
import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
          "LongStorage": np.int64, "IntStorage": np.int32, "BoolStorage": np.bool_}


def read_state_dict(path):
    """The `state_dict` of a torch zip checkpoint as {name: ndarray}."""
    zf = zipfile.ZipFile(path)
    root = zf.namelist()[0].split("/")[0]

    class Dummy:
        def __init__(self, *a, **k):
            pass

        def __setstate__(self, state):
            pass

    def rebuild(storage, offset, size, stride, *rest):
        dtype, key = storage
        raw = np.frombuffer(zf.read(f"{root}/data/{key}"), dtype=dtype)
        if not size:
            return raw[offset:offset + 1].reshape(())
        return np.lib.stride_tricks.as_strided(raw[offset:], shape=size,
                                               strides=[s * raw.itemsize for s in stride]).copy()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if name == "_rebuild_tensor_v2":
                return rebuild
            if module == "collections" and name == "OrderedDict":
                import collections
                return collections.OrderedDict
            if name in DTYPES:
                return name
            return Dummy

        def persistent_load(self, pid):
            return (DTYPES.get(pid[1], np.float32), pid[2])

    ckpt = Unpickler(zf.open(f"{root}/data.pkl")).load()
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    return {k: np.asarray(v) for k, v in sd.items() if isinstance(v, np.ndarray)}


class Graph:
    def __init__(self, sd):
        self.sd, self.eps, self.nodes, self.inits, self.n = sd, 1e-5, [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, arr, base="w"):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n))
        return n

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def has(self, k):
        return k in self.sd

    def conv_module(self, p, x, stride, act=True):
        w = self.sd[f"{p}.conv.weight"].astype(np.float64)
        o, i, k, _ = w.shape
        g, b, m, v = (self.sd[f"{p}.bn.{n}"].astype(np.float64) for n in ("weight", "bias", "running_mean", "running_var"))
        scale = g / np.sqrt(v + self.eps)
        bias = (self.sd.get(f"{p}.conv.bias", np.zeros(o)) - m) * scale + b
        groups = o if i == 1 and o > 1 else 1
        y = self.node("Conv", [x, self.const((w * scale[:, None, None, None]).astype(np.float32)),
                               self.const(bias.astype(np.float32))],
                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups)
        return self.silu(y) if act else y

    def silu(self, x):
        return self.node("Mul", [x, self.node("Sigmoid", [x])])

    def conv(self, p, x, stride):
        if self.has(f"{p}.depthwise_conv.conv.weight"):
            x = self.conv_module(f"{p}.depthwise_conv", x, stride)
            return self.conv_module(f"{p}.pointwise_conv", x, 1)
        return self.conv_module(p, x, stride)

    def csp(self, p, x, add, attention):
        short = self.conv_module(f"{p}.short_conv", x, 1)
        y = self.conv_module(f"{p}.main_conv", x, 1)
        j = 0
        while self.has(f"{p}.blocks.{j}.conv2.pointwise_conv.conv.weight"):
            b = f"{p}.blocks.{j}"
            t = self.conv(f"{b}.conv1", y, 1)
            t = self.conv_module(f"{b}.conv2.depthwise_conv", t, 1)
            t = self.conv_module(f"{b}.conv2.pointwise_conv", t, 1)
            y = self.node("Add", [t, y]) if add else t
            j += 1
        y = self.node("Concat", [y, short], axis=1)
        if attention:
            pooled = self.node("GlobalAveragePool", [y])
            fc = self.node("Conv", [pooled, self.const(self.sd[f"{p}.attention.fc.weight"]),
                                    self.const(self.sd[f"{p}.attention.fc.bias"])], kernel_shape=[1, 1])
            y = self.node("Mul", [y, self.node("HardSigmoid", [fc], alpha=1 / 6, beta=0.5)])
        return self.conv_module(f"{p}.final_conv", y, 1)

    def spp(self, p, x):
        x = self.conv_module(f"{p}.conv1", x, 1)
        pools = [self.node("MaxPool", [x], kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4) for k in (5, 9, 13)]
        return self.conv_module(f"{p}.conv2", self.node("Concat", [x] + pools, axis=1), 1)

    def up(self, x):
        scales = self.const(np.array([1, 1, 2, 2], np.float32), "scales")
        return self.node("Resize", [x, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor")


def build(sd):
    g = Graph(sd)
    x = "input"
    for i in range(3):
        x = g.conv_module(f"backbone.stem.{i}", x, 2 if i == 0 else 1)
    outs = []
    for s in range(1, 5):
        p = f"backbone.stage{s}"
        x = g.conv(f"{p}.0", x, 2)
        idx = 1
        if g.has(f"{p}.1.conv1.conv.weight"):
            x = g.spp(f"{p}.1", x)
            idx = 2
        x = g.csp(f"{p}.{idx}", x, add=s < 4, attention=True)
        if s >= 2:
            outs.append(x)
    c3, c4, c5 = outs
    csp = lambda p, x: g.csp(f"neck.{p}", x, add=False, attention=False)
    r5 = g.conv_module("neck.reduce_layers.0", c5, 1)
    t4 = csp("top_down_blocks.0", g.node("Concat", [g.up(r5), c4], axis=1))
    r4 = g.conv_module("neck.reduce_layers.1", t4, 1)
    n3 = csp("top_down_blocks.1", g.node("Concat", [g.up(r4), c3], axis=1))
    n4 = csp("bottom_up_blocks.0", g.node("Concat", [g.conv("neck.downsamples.0", n3, 2), r4], axis=1))
    n5 = csp("bottom_up_blocks.1", g.node("Concat", [g.conv("neck.downsamples.1", n4, 2), r5], axis=1))
    feats = [g.conv(f"neck.out_convs.{i}", f, 1) for i, f in enumerate((n3, n4, n5))]
    outputs = {}
    for level, f in enumerate(feats):
        for tower, pred, key in (("cls_convs", "rtm_cls", "cls"), ("reg_convs", "rtm_reg", "reg")):
            y = f
            for i in range(2):
                y = g.conv(f"bbox_head.{tower}.{level}.{i}", y, 1)
            y = g.node("Conv", [y, g.const(sd[f"bbox_head.{pred}.{level}.weight"]),
                                g.const(sd[f"bbox_head.{pred}.{level}.bias"])], kernel_shape=[1, 1])
            outputs[f"{key}_s{8 << level}"] = y
    for name, src in outputs.items():
        g.nodes.append(helper.make_node("Identity", [src], [name]))
    graph = helper.make_graph(
        g.nodes, "rtmdet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", "c", "h", "w"]) for n in sorted(outputs)],
        g.inits)
    # IR version 8 (what opset 17 needs) so older ONNX Runtime releases load it too: recent
    # `onnx` packages stamp their own newest IR version, which ORT before 1.24 rejects.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


if __name__ == "__main__":
    model = build(read_state_dict(sys.argv[1]))
    onnx.checker.check_model(model)
    onnx.save(model, sys.argv[2])
    print(f"wrote {sys.argv[2]} ({len(model.graph.node)} nodes)")
