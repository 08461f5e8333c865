"""Model speed: dlib against the same networks on ONNX Runtime.

    .venv/bin/python bench/models.py --data ../shared/data/lfw --photos ../shared/data/faces-small

Descriptor faces/s at batch 1, 32 and 128 (real LFW face chips); detector milliseconds per
image for HOG, dlib's MMOD and the ONNX MMOD at 250x250, 640x480 and 1280x720 (real photos
resized, no upsampling); the descriptor's FLOPs per face (counted on the ONNX graph) and the
share of the FP32 rate ONNX Runtime reaches on a large matrix product (the practical ceiling).
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
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result

from facewarden.adapters.models import dlib_models, onnx_models

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


def descriptor_flops(onnx_file: Path) -> int:
    """FLOPs (2 x multiply-adds) of convolutions and matrix products for one face, counted
    on the converted graph with ONNX shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(onnx_file))
    values = [*model.graph.value_info, *model.graph.output]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    flops = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            flops += 2 * int(np.prod(weights[node.input[1]])) * out[2] * out[3]
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in weights:
            flops += 2 * int(np.prod(weights[node.input[1]]))
    return flops


def cpu_ceiling(threads: int, n: int = 2048, seconds: float = 2.0) -> dict[str, object]:
    """The CPU's reported clock and vector width, and the FP32 rate ONNX Runtime reaches on a
    large matrix product with the same threads: the practical ceiling for a conv net."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split()) if text else set()
    w = onnx.numpy_helper.from_array(np.random.rand(n, n).astype(np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])],
        "sgemm",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, n])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, n])],
        [w],
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(
        onnx.helper.make_model(graph).SerializeToString(), opts, ["CPUExecutionProvider"]
    )
    x = np.random.rand(n, n).astype(np.float32)
    per_call = timed(lambda: session.run(None, {"x": x}), seconds)
    return {
        "model": model.group(1) if model else "unknown",
        "cores": os.cpu_count(),
        "reported_ghz": float(mhz.group(1)) / 1000 if mhz else None,
        "avx512": "avx512f" in flags,
        "onnxruntime_sgemm_gflops": round(2 * n**3 / per_call / 1e9, 1),
    }


def bench_descriptor(
    chips: list[np.ndarray], model_dir: Path, seconds: float, batches: list[int]
) -> dict:
    dlib_net = dlib_models.ResnetEmbedder()
    ort_net = onnx_models.OnnxEmbedder(model_dir, batch=max(batches))
    rows = {}
    for batch in batches:
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
    parser.add_argument(
        "--batches", nargs="+", type=int, default=[1, 32, 128], help="descriptor batch sizes"
    )
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
        descriptor = bench_descriptor(chips, model_dir, args.seconds, args.batches)
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
        detectors = bench_detectors(photos, model_dir, args.seconds, sizes)
        flops = descriptor_flops(onnx_models.converted_path(onnx_models.RESNET, model_dir))
    cpu = cpu_ceiling(os.cpu_count() or 1, seconds=args.seconds)
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
            "share_of_sgemm_ceiling": round(achieved / cpu["onnxruntime_sgemm_gflops"], 3),
        },
    )


if __name__ == "__main__":
    main()
