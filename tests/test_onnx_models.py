"""The dlib networks converted to ONNX: parity with dlib, the converter's errors, the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facewarden.adapters.models import dlib_models, onnx_models
from facewarden.adapters.models.dlib_format import ModelFormatError
from facewarden.adapters.models.registry import build_detector, build_embedder

from conftest import GALLERY, MODEL_CACHE, PROBES


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _iou(a, b) -> float:
    w = min(a.right, b.right) - max(a.left, b.left)
    h = min(a.bottom, b.bottom) - max(a.top, b.top)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area = lambda r: (r.right - r.left) * (r.bottom - r.top)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def chips() -> list[np.ndarray]:
    detector, aligner = dlib_models.HogDetector(1), dlib_models.FivePointAligner()
    found = []
    for path in sorted(PROBES.glob("*.jpg")) + sorted(GALLERY.glob("*.jpg")):
        image = _rgb(path)
        found += [aligner.align(image, d.box)[0] for d in detector.detect(image)]
    return found


def test_onnx_descriptors_equal_dlibs(chips):
    assert len(chips) >= 10
    reference = dlib_models.ResnetEmbedder().embed(chips)
    onnx = onnx_models.OnnxEmbedder(MODEL_CACHE, batch=4)  # several batches, one partial
    got = onnx.embed(chips)
    assert got.shape == reference.shape == (len(chips), 128)
    assert np.abs(got - reference).max() <= 1e-4
    assert onnx.model_id == dlib_models.ResnetEmbedder.model_id  # one template space
    assert onnx.embed([]).shape == (0, 128)


@pytest.mark.parametrize(
    ("name", "upsample"),
    [
        ("kit_with_rose.jpg", 0),
        ("obama_and_biden.jpg", 0),
        # dlib's own CNN detector on an upsampled photo takes most of a minute on two cores
        pytest.param("obama1.jpg", 1, marks=pytest.mark.slow),
    ],
)
def test_onnx_mmod_boxes_equal_dlibs(name, upsample):
    image = _rgb(PROBES / name)
    reference = dlib_models.CnnDetector(upsample).detect(image)
    got = onnx_models.OnnxMmodDetector(MODEL_CACHE, upsample).detect(image)
    assert len(reference) >= 1
    assert len(got) == len(reference)
    for ours, theirs in zip(got, reference, strict=True):
        assert _iou(ours.box, theirs.box) >= 0.95
        assert ours.score == pytest.approx(theirs.score, abs=1e-3)


def test_onnx_mmod_handles_tiny_and_faceless_images():
    detector = onnx_models.OnnxMmodDetector(MODEL_CACHE, 0)
    assert detector.detect(np.zeros((20, 30, 3), np.uint8)) == []
    assert detector.detect(np.full((300, 400, 3), 127, np.uint8)) == []


def test_converter_refuses_truncated_and_wrong_files(tmp_path):
    source = dlib_models.model_path(f"{onnx_models.RESNET}.dat")
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(source.read_bytes()[:1_000_000])
    with pytest.raises(ModelFormatError, match="ends early"):
        onnx_models.convert(truncated, onnx_models.RESNET)
    wrong = dlib_models.model_path(f"{onnx_models.MMOD}.dat")
    with pytest.raises(ModelFormatError, match="mmod network where metric was expected"):
        onnx_models.convert(wrong, onnx_models.RESNET)
    landmarks = dlib_models.model_path("shape_predictor_5_face_landmarks.dat")
    with pytest.raises(ModelFormatError, match="not a usable mmod_human_face_detector file"):
        onnx_models.convert(landmarks, onnx_models.MMOD)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        onnx_models.convert(empty, onnx_models.MMOD)
    # A refused conversion leaves nothing in the cache.
    with pytest.raises(ModelFormatError):
        onnx_models.converted_path(onnx_models.RESNET, tmp_path / "cache", truncated)
    assert not list((tmp_path / "cache").glob("*.onnx"))


def test_conversion_is_cached_by_source_checksum(tmp_path):
    source = tmp_path / "mmod.dat"
    source.write_bytes(dlib_models.model_path(f"{onnx_models.MMOD}.dat").read_bytes())
    first = onnx_models.converted_path(onnx_models.MMOD, tmp_path / "cache", source)
    stamp = first.stat().st_mtime_ns
    again = onnx_models.converted_path(onnx_models.MMOD, tmp_path / "cache", source)
    assert again == first and again.stat().st_mtime_ns == stamp  # not converted twice
    # Another source file (here: the same network re-saved with a trailing byte is refused,
    # so change a weight instead) gets its own conversion next to the first.
    data = bytearray(source.read_bytes())
    data[-200] ^= 0x01
    source.write_bytes(bytes(data))
    other = onnx_models.converted_path(onnx_models.MMOD, tmp_path / "cache", source)
    assert other != first and other.is_file()
    assert not list((tmp_path / "cache").glob("*.part"))


def test_runtime_auto_falls_back_to_dlib_and_onnx_does_not(tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the model cache should be")
    embedder = build_embedder("auto", blocked / "models")
    assert embedder.runtime == "dlib"
    assert "ONNX embedder unavailable" in caplog.text
    with pytest.raises(OSError):
        build_embedder("onnx", blocked / "models")
    assert build_detector("cnn", 0, "auto", MODEL_CACHE).runtime == "onnx"
    assert build_detector("hog", 0, "onnx", MODEL_CACHE).runtime == "dlib"  # no network
    with pytest.raises(ValueError, match="unknown runtime"):
        build_embedder("tensorflow", MODEL_CACHE)


@pytest.mark.slow
def test_models_cli_converts_and_reports(tmp_path):
    env = {
        "FACEWARDEN_DATA_DIR": str(tmp_path / "fw"),
        "FACEWARDEN_DETECTOR": "cnn",
        "FACEWARDEN_UPSAMPLE": "0",
        "FACEWARDEN_DETECTOR_RETRY": "true",
    }
    cli = [sys.executable, "-m", "facewarden"]
    run = lambda *args: subprocess.run(  # noqa: E731
        [*cli, *args], capture_output=True, text=True, env={**_base_env(), **env}
    )
    done = run("models", "convert", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    # the networks converted, and HOG's detector cached beside them (no network to convert)
    assert {r["model"] for r in rows} == {onnx_models.RESNET, onnx_models.MMOD, "dlib_hog_frontal"}
    assert all(Path(r["file"]).is_file() and r["bytes"] > 100_000 for r in rows)
    assert all(r["onnx"] == r["file"] for r in rows if r["model"] != "dlib_hog_frontal")
    info = run("models", "info", "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["detector"] == "dlib-mmod-up0>dlib-mmod-up1 (onnx)"  # the retry at up1
    assert data["embedder"].endswith("(onnx)")
    assert "CPUExecutionProvider" in data["onnx providers"]


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FACEWARDEN_")}
