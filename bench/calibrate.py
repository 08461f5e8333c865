"""Calibrate the template space's false match rate on labelled impostor pairs (LFW).

One image per person (the first of each LFW folder, sorted by name) goes through the
default pipeline (as ingest enrols it: detector, 5-point alignment, ResNet embedding; the
face nearest the image centre when there are several; images without a detected face are
left out, as ingest would store no face). Every pair of images of different people is an
impostor comparison: with 3,095 people about 4.8 million pairs (``--max-pairs`` samples
them at random with a fixed seed instead). The table gives, at each distance, the share
of impostor pairs at or below it: the false match rate per comparison (FMR).

Writes ``src/facewarden/calibration/dlib_resnet_v1.json`` (package data read by search)
and ``bench/results/calibration.json`` (the run's provenance and timings).

    .venv/bin/python bench/calibrate.py --data ../shared/data/lfw --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result

from facewarden.config import Settings
from facewarden.evaluation.embedding import embed_cached
from facewarden.evaluation.provenance import software_versions

OUT = Path(__file__).resolve().parents[1] / "src/facewarden/calibration/dlib_resnet_v1.json"
STEP = 0.005
LOW, HIGH = 0.30, 0.80
SEED = 20


def one_per_person(data: Path) -> list[Path]:
    out = []
    for person in sorted(p for p in data.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if images:
            out.append(images[0])
    return out


def impostor_histogram(
    vecs: np.ndarray, max_pairs: int | None, seed: int, edges: np.ndarray
) -> tuple[np.ndarray, int, float]:
    """Counts of impostor distances per bin of ``edges``, the pair count and the smallest
    impostor distance. One vector per person: every pair is an impostor pair."""
    n = len(vecs)
    counts = np.zeros(len(edges) - 1, np.int64)
    total = 0
    smallest = float("inf")
    if max_pairs is None:
        sq = (vecs**2).sum(axis=1)
        for i in range(n - 1):
            d2 = sq[i] + sq[i + 1 :] - 2 * vecs[i + 1 :] @ vecs[i]
            d = np.sqrt(np.maximum(d2, 0))
            counts += np.histogram(d, edges)[0]
            total += len(d)
            smallest = min(smallest, float(d.min()))
        return counts, total, smallest
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, max_pairs)
    b = rng.integers(0, n, max_pairs)
    keep = a != b
    d = np.linalg.norm(vecs[a[keep]] - vecs[b[keep]], axis=1)
    return np.histogram(d, edges)[0], int(keep.sum()), float(d.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="LFW folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-pairs", type=int, default=None, help="sample this many pairs")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=OUT, help="the calibration table")
    parser.add_argument(
        "--result",
        type=Path,
        default=Path(__file__).resolve().parent / "results/calibration.json",
        help="the run's record",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="templates cache (npz), shared with eval identify"
    )
    args = parser.parse_args()

    from facewarden.adapters.models.dlib_models import FivePointAligner, ResnetEmbedder
    from facewarden.core.pipeline import template_space_id

    settings = Settings()
    started = time.perf_counter()
    paths = one_per_person(args.data)
    listing = "\n".join(str(p.relative_to(args.data)) for p in paths) + "\n"
    embedded = embed_cached(paths, args.data, settings, args.cache, workers=args.workers)
    embed_s = time.perf_counter() - started
    content = hashlib.sha256()
    for p, e in zip(paths, embedded, strict=True):
        content.update(f"{p.relative_to(args.data)}:{e.sha256}\n".encode())
    used = [e for e in embedded if e.faces_found > 0]
    vecs = np.stack([e.descriptor for e in used]).astype(np.float64)
    edges = np.round(np.arange(0, 2.0 + 1e-9, 0.001), 3)
    counts, pairs, smallest = impostor_histogram(vecs, args.max_pairs, args.seed, edges)
    cumulative = np.cumsum(counts)
    floor = 3.0 / pairs  # rule of three: 95% upper bound when no pair was that close
    table = []
    for d in np.round(np.arange(LOW, HIGH + 1e-9, STEP), 3):
        at_or_below = int(cumulative[round(d * 1000) - 1])
        table.append(
            {
                "distance": float(d),
                "impostor_pairs_at_or_below": at_or_below,
                "fmr": max(at_or_below / pairs, floor),
            }
        )
    model_id = template_space_id(ResnetEmbedder.model_id, FivePointAligner.model_id)
    recipe = {
        "template_space": model_id,
        "detector": settings.detector,
        "upsample": settings.upsample,
        "detector_retry": settings.detector_retry,
        "detector_setting": settings.detector_setting,
        "runtime": settings.runtime,
        "face_choice": "face nearest the image centre; images without a detected face left out",
    }
    recipe_id = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    doc = {
        "model_id": model_id,
        "recipe": recipe,
        "recipe_id": recipe_id,
        "data": {
            "name": "LFW original (shared/data/lfw: the View 1 development images), "
            "first image of each person",
            "people": len(paths),
            "images_used": len(used),
            "images_without_face_left_out": len(paths) - len(used),
            "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
            "content_sha256": content.hexdigest(),
        },
        "method": "all pairs of images of different people"
        if args.max_pairs is None
        else f"{args.max_pairs} random pairs (seed {args.seed})",
        "seed": args.seed,
        "impostor_pairs": pairs,
        "smallest_impostor_distance": round(smallest, 4),
        "fmr_floor": floor,
        "fmr_floor_note": "3 / pairs: the 95% upper bound where no impostor pair was that close",
        "table_note": "fmr at distance d: share of impostor pairs with distance <= d",
        "software": software_versions(),
        "table": table,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    at = {r["distance"]: r["fmr"] for r in table}
    write_result(
        args.result,
        {k: v for k, v in doc.items() if k != "table"}
        | {
            "fmr_at": {f"{d:.2f}": at[d] for d in (0.35, 0.4, 0.45, 0.5, 0.55, 0.6)},
            "embed_seconds": round(embed_s, 1),
            "seconds": round(time.perf_counter() - started, 1),
            "table_file": args.out.name,
        },
    )


if __name__ == "__main__":
    main()
