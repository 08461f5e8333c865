"""dlib's networks on ONNX Runtime: converted once from the PyPI model files, then cached.

The converted graph is written to ``<model_dir>/<model>-<sha256 of the .dat>-c<version>.onnx``
(a changed or replaced source file gets a new conversion; nothing is downloaded). Descriptors
equal dlib's to about 1e-6; the MMOD detector reproduces dlib's image pyramid, box decoding and
non-maximum suppression, so its boxes match ``dlib.cnn_face_detection_model_v1``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
from pathlib import Path

import dlib
import numpy as np

from facewarden.adapters.models.dlib_format import (
    ModelFormatError,
    mmod_spec,
    read_network,
    resnet_spec,
)
from facewarden.adapters.models.dlib_models import _clip_box, model_path
from facewarden.adapters.models.mmod_pyramid import Rect, nearest_rect, tiled_tensor
from facewarden.core.schemas import Detection

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1
RESNET = "dlib_face_recognition_resnet_model_v1"
MMOD = "mmod_human_face_detector"
_SPECS = {RESNET: (resnet_spec, "metric"), MMOD: (mmod_spec, "mmod")}
_LOCK = threading.Lock()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}
"""Checksums of model files already hashed in this process, by (path, size, mtime): each
pipeline built (the detector at two upsamplings, the ingest and the probe pipelines) asks
for its converted file, and hashing the 22 MB descriptor once is enough."""


def _source_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _sha256(path)
    return _DIGESTS[key]


def convert(source: Path, model: str) -> bytes:
    """The ONNX bytes of a dlib model file; ModelFormatError if it is not that model."""
    from facewarden.adapters.models.onnx_export import to_onnx

    data = source.read_bytes()
    if not data:
        raise ModelFormatError(f"{source} is empty")
    spec, loss = _SPECS[model]
    try:
        network = read_network(data, spec(), loss)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{source} is not a usable {model} file: {exc}") from None
    return to_onnx(network, model).SerializeToString()


def converted_path(model: str, model_dir: Path, source: Path | None = None) -> Path:
    """The cached ONNX file for ``model``, converting it first when missing."""
    source = source or model_path(f"{model}.dat")
    target = model_dir / f"{model}-{_source_digest(source)[:16]}-c{CONVERTER_VERSION}.onnx"
    with _LOCK:
        if target.is_file():
            return target
        model_dir.mkdir(parents=True, exist_ok=True)
        log.info("converting %s to ONNX (once; cached at %s)", source.name, target)
        payload = convert(source, model)
        fd, tmp = tempfile.mkstemp(dir=model_dir, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, target)  # atomic: concurrent first uses never see half a file
    return target


def providers() -> list[str]:
    """CUDA first when this onnxruntime build and machine have it, the CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


_SESSIONS: dict[tuple[str, int], object] = {}
"""One session per model file and thread count in a process: the detector at two upsamplings
(the retry) shares the network, loaded once (an ONNX Runtime session may run concurrently)."""


def _session(path: Path, threads: int):
    with _LOCK:
        session = _SESSIONS.get((str(path), threads))
        if session is None:
            session = _SESSIONS[(str(path), threads)] = _new_session(path, threads)
        return session


def _new_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: one per physical core
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=providers())


class OnnxEmbedder:
    """dlib's ResNet face descriptor on ONNX Runtime, batched (same template space as dlib)."""

    model_id = RESNET
    dimension = 128
    runtime = "onnx"

    def __init__(self, model_dir: Path, threads: int = 0, batch: int = 64) -> None:
        self._session = _session(converted_path(RESNET, model_dir), threads)
        self.batch = batch

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = []
        for start in range(0, len(chips), self.batch):
            batch = np.stack(chips[start : start + self.batch]).astype(np.uint8, copy=False)
            out.append(self._session.run(None, {"image": batch})[0])
        return np.concatenate(out).astype(np.float32, copy=False)


# --- MMOD detector --------------------------------------------------------------------------

_OUT_STRIDE, _OUT_OFFSET = 8, 14
"""Output cell (c, r) looks at input pixel (8c + 14, 8r + 14): three stride-2 5x5 convolutions
without padding, then size-preserving ones (dlib's map_output_to_input through the layers)."""


def _overlaps(a: Rect, b: Rect, iou: float, covered: float) -> bool:
    """dlib's test_box_overlap: intersection over the *bounding* box, or share covered."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return False
    inner = iw * ih
    outer = (max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1)
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inner / outer > iou or inner / area_a > covered or inner / area_b > covered


def _round(r: dlib.drectangle) -> Rect:
    return tuple(math.floor(v + 0.5) for v in (r.left(), r.top(), r.right(), r.bottom()))


class OnnxMmodDetector:
    """dlib's MMOD CNN face detector with its network on ONNX Runtime.

    As ``dlib.cnn_face_detection_model_v1``: ``upsample`` doublings (dlib's pyramid_up), the
    tiled 6:5 pyramid, windows scoring above 0, largest first, dlib's overlap test as NMS.
    """

    runtime = "onnx"

    def __init__(self, model_dir: Path, upsample: int = 1, threads: int = 0) -> None:
        self.upsample = upsample
        self.model_id = f"dlib-mmod-up{upsample}"
        source = model_path(f"{MMOD}.dat")
        self._session = _session(converted_path(MMOD, model_dir, source), threads)
        network = read_network(source.read_bytes(), mmod_spec(), "mmod")
        assert network.mmod is not None
        self.options, self._mean = network.mmod, network.input.mean
        self._pyr = dlib.pyramid_down(6)
        self._up = dlib.pyramid_down(2)

    def scores(self, image: np.ndarray) -> tuple[np.ndarray, list[Rect]]:
        """The network's output map over the tiled pyramid of ``image``, and the tiles."""
        tensor, rects = tiled_tensor(image, self._mean)
        return self._session.run(None, {"image": tensor})[0][0, 0], rects

    def detect(self, image: np.ndarray) -> list[Detection]:
        work = np.ascontiguousarray(image)
        for _ in range(self.upsample):
            up = self._up.rect_up(dlib.rectangle(0, 0, work.shape[1] - 1, work.shape[0] - 1))
            work = dlib.resize_image(work, up.bottom() + 1, up.right() + 1)
        if min(work.shape[:2]) < 40:  # smaller than the network's receptive field
            return []
        scores, rects = self.scores(work)
        (width, height), opts = self.options.windows[0], self.options
        half_w, half_h = (width - 1) / 2, (height - 1) / 2
        candidates: list[tuple[float, Rect]] = []
        for r, c in zip(*np.nonzero(scores > 0), strict=True):
            x, y = _OUT_STRIDE * c + _OUT_OFFSET, _OUT_STRIDE * r + _OUT_OFFSET
            level = nearest_rect(rects, float(x), float(y))
            x, y = x - rects[level][0], y - rects[level][1]  # into the level's own pixels
            box = dlib.drectangle(x - half_w, y - half_h, x + half_w, y + half_h)
            candidates.append((float(scores[r, c]), _round(self._pyr.rect_up(box, level))))
        candidates.sort(key=lambda item: -item[0])
        kept: list[tuple[float, Rect]] = []
        for score, box in candidates:
            if not any(_overlaps(k, box, opts.nms_iou, opts.nms_covered) for _, k in kept):
                kept.append((score, box))
        found = []
        for score, (left, top, right, bottom) in kept:
            rect = dlib.rectangle(left, top, right, bottom)
            if self.upsample:
                rect = self._up.rect_down(rect, self.upsample)
            found.append(Detection(_clip_box(rect, image.shape), score, "unknown"))
        return found
