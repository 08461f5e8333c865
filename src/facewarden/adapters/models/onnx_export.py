"""Turns a parsed dlib network into an ONNX graph with the same layers and weights.

Affine layers (dlib's inference form of batch norm) are folded into the convolution before
them. The graph takes RGB uint8 images (N, H, W, 3) and applies dlib's input normalisation,
``(pixel - mean) / 256``, itself.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facewarden.adapters.models.dlib_format import (
    AddPrev,
    Affine,
    Conv,
    Fc,
    Network,
    Pool,
    Relu,
    Skip,
    Tag,
)

OPSET = 17


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _pool_out(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def _fold(conv: Conv, affine: Affine | None) -> tuple[np.ndarray, np.ndarray]:
    if affine is None:
        return conv.weight, conv.bias
    w = conv.weight.astype(np.float64) * affine.gamma[:, None, None, None]
    b = conv.bias.astype(np.float64) * affine.gamma + affine.beta
    return w.astype(np.float32), b.astype(np.float32)


def to_onnx(net: Network, name: str) -> onnx.ModelProto:
    """The network as an ONNX model: input ``image`` (uint8 NHWC, or the normalised tiled
    pyramid as float NCHW for a pyramid input), one float output ``output``."""
    g = _Graph()
    size = net.input.size
    rows, cols = size if size else ("height", "width")
    if net.input.pyramid:
        # The caller builds dlib's tiled pyramid, already normalised (NCHW float).
        x = "image"
        source = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, rows, cols])
    else:
        x = g.op("Cast", ["image"], to=TensorProto.FLOAT)
        x = g.op("Sub", [x, g.const(np.array(net.input.mean, np.float32), "mean")])
        x = g.op("Mul", [x, g.const(np.array(1 / 256, np.float32), "scale")])
        x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
        source = helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", rows, cols, 3])
    shape: tuple[int, int, int] | None = (3, size[0], size[1]) if size else None
    tags: dict[int, tuple[str, tuple[int, int, int] | None]] = {}
    layers = net.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, Conv):
            affine = layers[i + 1] if i + 1 < len(layers) else None
            affine = affine if isinstance(affine, Affine) else None
            w, b = _fold(layer, affine)
            (sy, sx), (py, px) = layer.stride, layer.padding
            x = g.op(
                "Conv",
                [x, g.const(w), g.const(b, "b")],
                kernel_shape=list(w.shape[2:]),
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
            if shape:
                shape = (
                    w.shape[0],
                    _pool_out(shape[1], w.shape[2], sy, py),
                    _pool_out(shape[2], w.shape[3], sx, px),
                )
            i += 2 if affine is not None else 1
            continue
        if isinstance(layer, Affine):
            gamma = g.const(layer.gamma.reshape(1, -1, 1, 1))
            x = g.op("Add", [g.op("Mul", [x, gamma]), g.const(layer.beta.reshape(1, -1, 1, 1))])
        elif isinstance(layer, Relu):
            x = g.op("Relu", [x])
        elif isinstance(layer, Pool):
            x, shape = _pool(g, layer, x, shape)
        elif isinstance(layer, Fc):
            x = g.op("Flatten", [x], axis=1)
            x = g.op("MatMul", [x, g.const(layer.weight)])
            if layer.bias is not None:
                x = g.op("Add", [x, g.const(layer.bias, "b")])
            shape = None
        elif isinstance(layer, Tag):
            tags[layer.id] = (x, shape)
        elif isinstance(layer, Skip):
            x, shape = tags[layer.tag]
        elif isinstance(layer, AddPrev):
            x, shape = _add_prev(g, x, shape, *tags[layer.tag])
        i += 1
    g.nodes[-1].output[0] = "output"
    dims = ["batch", None] if size else ["batch", None, None, None]
    graph = helper.make_graph(
        g.nodes,
        name,
        [source],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facewarden"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _pool(g: _Graph, layer: Pool, x: str, shape):
    (wy, wx), (sy, sx), (py, px) = layer.size, layer.stride, layer.padding
    if (wy, wx) == (0, 0):
        op = "GlobalMaxPool" if layer.kind == "max" else "GlobalAveragePool"
        return g.op(op, [x]), (shape[0], 1, 1) if shape else None
    op = "MaxPool" if layer.kind == "max" else "AveragePool"
    out = g.op(op, [x], kernel_shape=[wy, wx], strides=[sy, sx], pads=[py, px, py, px])
    if shape:
        shape = (shape[0], _pool_out(shape[1], wy, sy, py), _pool_out(shape[2], wx, sx, px))
    return out, shape


def _add_prev(g: _Graph, x: str, shape, other: str, other_shape):
    """dlib's add_prev: the sum over the larger of both shapes, missing parts as zeros."""
    if shape is None or other_shape is None:
        if shape != other_shape:
            raise ValueError("add_prev over tensors of unknown shape")
        return g.op("Add", [x, other]), shape
    target = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))

    def padded(name: str, s) -> str:
        if s == target:
            return name
        pads = [0, 0, 0, 0, 0, target[0] - s[0], target[1] - s[1], target[2] - s[2]]
        return g.op("Pad", [name, g.const(np.array(pads, np.int64), "pads")])

    return g.op("Add", [padded(x, shape), padded(other, other_shape)]), target
