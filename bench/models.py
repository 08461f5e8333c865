"""Model speed: dlib against the same networks on ONNX Runtime.

    .venv/bin/python bench/models.py --data ../shared/data/lfw --photos ../shared/data/faces-small

Descriptor faces/s at batch 1, 32 and 128 (real LFW face chips); detector milliseconds per
image for HOG, dlib's MMOD and the ONNX MMOD at 250x250, 640x480 and 1280x720 (real photos
resized, no upsampling); the descriptor's FLOPs per face and the share of the CPU's peak.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result

from facewarden.adapters.models import dlib_models, onnx_models
from facewarden.adapters.models.dlib_format import Conv, Fc, read_network, resnet_spec

SIZES = [(250, 250), (640, 480), (1280, 720)]


def timed(fn, min_seconds: float, min_runs: int = 1) -> float:
    """Seconds per call (median of runs over at least ``min_seconds``)."""
    fn()  # warm-up
    runs, start = [], time.perf_counter()
    while len(runs) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return float(np.median(runs))


def face_chips(data: Path, count: int) -> list[np.ndarray]:
    detector, aligner = dlib_models.HogDetector(1), dlib_models.FivePointAligner()
    chips: list[np.ndarray] = []
    for path in sorted(data.rglob("*.jpg")):
        image = np.asarray(Image.open(path).convert("RGB"))
        chips += [aligner.align(image, d.box)[0] for d in detector.detect(image)[:1]]
        if len(chips) >= count:
            return chips
    return chips


def descriptor_flops() -> int:
    """Multiply-adds x 2 of the ResNet for one 150x150 chip (convolutions and the fc layer)."""
    source = dlib_models.model_path(f"{onnx_models.RESNET}.dat")
    net = read_network(source.read_bytes(), resnet_spec(), "metric")
    flops, shapes = 0, {}
    size = 150
    sizes: list[int] = []
    for layer in net.layers:  # spatial size follows the main path; tags restore it
        if isinstance(layer, Conv):
            out, cin, kh, _ = layer.weight.shape
            size = (size + 2 * layer.padding[0] - kh) // layer.stride[0] + 1
            flops += 2 * out * cin * kh * kh * size * size
            sizes.append(size)
        elif isinstance(layer, Fc):
            flops += 2 * layer.weight.size
        elif type(layer).__name__ == "Pool" and layer.size != (0, 0):
            size = (size - layer.size[0]) // layer.stride[0] + 1
        elif type(layer).__name__ == "Tag":
            shapes[layer.id] = size
        elif type(layer).__name__ == "Skip":
            size = shapes[layer.tag]
    return flops


def cpu_peak_gflops() -> dict[str, object]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = [float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", text)]
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if text else set()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = 2 * 2 * lanes if "fma" in flags else 2 * lanes  # two FMA units, 2 FLOP each
    ghz = (max(mhz) if mhz else 0) / 1000
    cores = os.cpu_count() or 1
    return {
        "cores": cores,
        "ghz": ghz,
        "fp32_flop_per_cycle_per_core": per_cycle,
        "assumption": "two vector FMA units per core at the reported clock",
        "peak_gflops": round(cores * ghz * per_cycle, 1),
    }


def bench_descriptor(chips: list[np.ndarray], model_dir: Path, seconds: float) -> dict:
    dlib_net = dlib_models.ResnetEmbedder()
    ort_net = onnx_models.OnnxEmbedder(model_dir, batch=128)
    rows = {}
    for batch in (1, 32, 128):
        sample = [chips[i % len(chips)] for i in range(batch)]
        rows[f"batch_{batch}"] = {
            "dlib_faces_per_s": round(
                batch / timed(lambda s=sample: dlib_net.embed(s), seconds), 1
            ),
            "onnx_faces_per_s": round(batch / timed(lambda s=sample: ort_net.embed(s), seconds), 1),
        }
    diff = np.abs(dlib_net.embed(chips) - ort_net.embed(chips)).max()
    return {"faces": len(chips), "max_abs_difference": float(diff), **rows}


def bench_detectors(
    photos: list[Path], model_dir: Path, seconds: float, sizes: list[tuple[int, int]]
) -> dict:
    detectors = {
        "hog": dlib_models.HogDetector(0),
        "dlib_mmod": dlib_models.CnnDetector(0),
        "onnx_mmod": onnx_models.OnnxMmodDetector(model_dir, 0),
    }
    out: dict[str, dict] = {}
    for w, h in sizes:
        images = [np.asarray(Image.open(p).convert("RGB").resize((w, h))) for p in photos]
        row = {}
        for name, det in detectors.items():
            budget = seconds if name != "dlib_mmod" else min(seconds, 1)
            per = [timed(lambda i=img, d=det: d.detect(i), budget / len(images)) for img in images]
            row[f"{name}_ms"] = round(1000 * float(np.mean(per)), 1)
        out[f"{w}x{h}"] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="face images (LFW)")
    parser.add_argument("--photos", type=Path, required=True, help="photos for the detectors")
    parser.add_argument("--faces", type=int, default=128)
    parser.add_argument("--photo-count", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--sizes", nargs="+", default=[f"{w}x{h}" for w, h in SIZES])
    parser.add_argument("--out", type=Path, default=Path("bench/results/models.json"))
    args = parser.parse_args()

    photos = sorted(args.photos.rglob("*.jpg"))[: args.photo_count]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        start = time.perf_counter()
        for model in (onnx_models.RESNET, onnx_models.MMOD):
            onnx_models.converted_path(model, model_dir)
        conversion_s = time.perf_counter() - start
        chips = face_chips(args.data, args.faces)
        descriptor = bench_descriptor(chips, model_dir, args.seconds)
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
        detectors = bench_detectors(photos, model_dir, args.seconds, sizes)
    flops = descriptor_flops()
    cpu = cpu_peak_gflops()
    best = max(v["onnx_faces_per_s"] for k, v in descriptor.items() if k.startswith("batch_"))
    achieved = best * flops / 1e9
    write_result(
        args.out,
        {
            "conversion_s": round(conversion_s, 2),
            "descriptor": descriptor,
            "detector_ms_per_image_upsample0": detectors,
            "photos": [p.name for p in photos],
            "descriptor_gflop_per_face": round(flops / 1e9, 3),
            "cpu": cpu,
            "onnx_descriptor_gflops": round(achieved, 1),
            "share_of_peak": round(achieved / cpu["peak_gflops"], 3)
            if cpu["peak_gflops"]
            else None,
        },
    )


if __name__ == "__main__":
    main()
