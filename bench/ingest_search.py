"""End-to-end ingest throughput (1 and 2 workers) and search latency on real LFW images.

    .venv/bin/python bench/ingest_search.py --data ../shared/data/lfw --limit 600

Ingest: images/s and faces/s through the whole pipeline (decode, HOG detect, align, embed,
encrypt, store, index), per model runtime (dlib, onnx) and worker count. Stages: time per
image of decode, detect, align and embed in one process; the rest of the one-worker ingest's
wall time per image; and within it, the main process's time to store (suppression check,
encrypt, insert, commit) and index (add, periodic save), which overlaps the worker's models.
Search: end-to-end latency of
``SearchService.search`` (decode, detect, embed, index, database re-check, audit write).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_app, percentile, write_result

from facewarden.config import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def images(data: Path, limit: int) -> list[Path]:
    found = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return found[:limit]


def stages(files: list[Path], runtime: str, upsample: int) -> dict[str, float]:
    """Milliseconds per image of each model stage, in one process (1 worker's view)."""
    from facewarden.adapters.imaging import decode_image
    from facewarden.adapters.models.registry import build_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), runtime=runtime, workers=1, upsample=upsample)
        pipe = build_pipeline(settings, threads=1, ingest=True)  # the ingest detector
        totals = dict.fromkeys(("decode", "detect", "align", "embed"), 0.0)
        for path in files:
            t = time.perf_counter()
            image = decode_image(path.read_bytes(), max_pixels=settings.max_image_pixels)
            t1 = time.perf_counter()
            boxes = pipe.detector.detect(image)
            t2 = time.perf_counter()
            chips = [pipe.aligner.align(image, d.box)[0] for d in boxes]
            t3 = time.perf_counter()
            pipe.embedder.embed(chips)
            t4 = time.perf_counter()
            for key, span in zip(totals, (t1 - t, t2 - t1, t3 - t2, t4 - t3), strict=True):
                totals[key] += span
    return {f"{k}_ms": round(1000 * v / len(files), 2) for k, v in totals.items()}


def run(
    files: list[Path],
    workers: int,
    probes: int,
    runtime: str,
    upsample: int,
    ray: str | None = None,
    probe_size: tuple[int, int] | None = None,
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(
            data_dir=Path(tmp) / "fw",
            database_url=None,
            workers=workers,
            runtime=runtime,
            upsample=upsample,
        )
        fw, actor = bench_app(s, purpose="benchmark", jurisdiction="US", retention="1d")
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0, cpu0 = time.perf_counter(), time.process_time()
        summary = fw.ingest.run(actor, files, "bench", workers=workers, ray=ray)
        elapsed, main_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's workers, ended
        workers_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        result: dict[str, object] = {
            "runtime": runtime,
            "executor": f"ray ({ray})" if ray else "processes",
            "upsample": upsample,
            "detector": s.ingest_detector_setting,
            "search_detector": s.detector_setting,
            "workers": workers,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "images": summary.images,
            "faces": summary.faces,
            "skipped": len(summary.skipped),
            "seconds": round(elapsed, 2),
            "images_per_s": round(summary.images / elapsed, 2),
            "faces_per_s": round(summary.faces / elapsed, 2),
            "store_s": round(summary.seconds["store"], 4),
            "index_s": round(summary.seconds["index"], 4),
            # CPU of this (the main) process and of the worker processes, their start-up
            # included (Ray actors are not this process's children: not counted).
            "main_cpu_s": round(main_cpu, 2),
            "workers_cpu_s": round(workers_cpu, 2),
        }
        if probes:
            fw.cases.open(
                actor,
                "BENCH",
                purpose="benchmark",
                legal_basis="benchmark",
                authorisation="benchmark",
            )
            latencies = []
            for path in files[:probes]:
                data = probe_bytes(path, probe_size)
                t = time.perf_counter()
                # LFW's 250x250 crops scaled up to the frame are soft: some fall below the probe
                # quality bar, and this bench times the search, so it overrides (logged).
                fw.search.search(actor, data, case="BENCH", allow_low_quality=True)
                latencies.append((time.perf_counter() - t) * 1000)
            result["search"] = {
                "gallery_faces": summary.faces,
                "probes": len(latencies),
                "p50_ms": round(percentile(latencies, 50), 1),
                "p99_ms": round(percentile(latencies, 99), 1),
                "probe_size": "x".join(map(str, probe_size)) if probe_size else "as stored",
            }
        fw.close()
        return result


def probe_bytes(path: Path, size: tuple[int, int] | None) -> bytes:
    """The probe as stored, or scaled to the frame's height and centred on a grey frame of
    ``size`` (width, height), as a JPEG: a camera still of that size with the same face."""
    if size is None:
        return path.read_bytes()
    import io

    from PIL import Image

    image = Image.open(path).convert("RGB")
    width, height = size
    scaled = image.resize((round(image.width * height / image.height), height))
    frame = Image.new("RGB", size, (118, 118, 118))
    frame.paste(scaled, ((width - scaled.width) // 2, 0))
    buf = io.BytesIO()
    frame.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--runtimes", nargs="+", default=["dlib", "onnx"])
    ap.add_argument("--upsample", type=int, help="detector upsampling (default: the setting)")
    ap.add_argument("--detector", help="hog, cnn or hybrid (default: the setting)")
    ap.add_argument("--ingest-detector", help="same, hog, cnn or hybrid (default: the setting)")
    ap.add_argument("--probe-size", help="search probes as WxH frames, e.g. 640x480")
    ap.add_argument("--ray", help="also ingest in Ray actors at this address ('local')")
    ap.add_argument("--out", type=Path, default=Path("bench/results/ingest_search.json"))
    args = ap.parse_args()
    if args.detector:  # read by every Settings, in this process and the workers
        os.environ["FACEWARDEN_DETECTOR"] = args.detector
    if args.ingest_detector:
        os.environ["FACEWARDEN_INGEST_DETECTOR"] = args.ingest_detector
    if args.upsample is None:
        args.upsample = Settings().upsample
    size = tuple(int(x) for x in args.probe_size.split("x")) if args.probe_size else None
    files = images(args.data, args.limit)
    if not files:
        sys.exit(f"no images under {args.data}")
    runs, per_stage = [], {}
    for runtime in args.runtimes:
        per_stage[runtime] = stages(files, runtime, args.upsample)
        for w in args.workers:
            probes = args.probes if w == args.workers[-1] else 0
            runs.append(run(files, w, probes, runtime, args.upsample, probe_size=size))
            if args.ray:
                runs.append(run(files, w, 0, runtime, args.upsample, args.ray))
        one = next(r for r in runs if r["runtime"] == runtime and r["workers"] == args.workers[0])
        stage = per_stage[runtime]
        models_ms = sum(stage.values())
        if one["workers"] == 1:  # (with more workers, the wall time is shared: no rest)
            # Wall time per image beyond the models: reading and hashing files, handing work
            # to the worker and back, storing, indexing, the audit records.
            stage["rest_ms"] = round(1000 * one["seconds"] / one["images"] - models_ms, 2)
        # Of which the main process spent storing and indexing (overlapping the worker's
        # detection and embedding, so they can add up to more than the rest).
        stage["store_ms"] = round(1000 * one["store_s"] / one["images"], 2)
        stage["index_ms"] = round(1000 * one["index_s"] / one["images"], 2)
    write_result(
        args.out,
        {
            "dataset": str(args.data),
            "limit": args.limit,
            "upsample": args.upsample,
            "detector": Settings(upsample=args.upsample).ingest_detector_setting,
            "search_detector": Settings(upsample=args.upsample).detector_setting,
            "timing_note": "speed figures are valid only at low load (see each run's load_average)",
            "stages": per_stage,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
