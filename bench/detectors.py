"""Detection and descriptor options measured on LFW View 1, faces-small and a video clip.

    .venv/bin/python bench/detectors.py --lfw ../shared/data/lfw \
        --photos ../shared/data/faces-small --workers 2

One pass over the 4,992 View 1 images runs every detector option on each image (HOG and the
MMOD CNN on ONNX Runtime, upsampling 0 and 1) and embeds the face each option picks (the box
nearest the image centre, else the evaluation's fallback box) with every descriptor variant:
plain, horizontal-flip averaged, dlib-style jittering, other chip paddings. The strategies
that combine detectors ("hybrid": HOG, then the CNN only where HOG found nothing) are scored
from the same per-image detections and timings. The threshold is chosen on DevTrain
(2,200 pairs) and the figure reported on DevTest (1,000 pairs), split into pairs where a face
was detected in both images and pairs that needed the fallback.

Detection timings are per image in one worker process with one ONNX Runtime thread; they are
labelled with the load average, and are meaningful only when the machine was otherwise idle.
Accuracy figures do not depend on load.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result

DETECTORS = ("hog0", "hog1", "cnn0", "cnn1")
LFW_DETECTORS = ("hog0", "hog1", "cnn0")
"""CNN at upsampling 1 is left out on LFW (faces of about 100 pixels, which it finds at 0;
it costs four times as much); it is measured on the photos and the clip."""
STRATEGIES: dict[str, tuple[str, ...]] = {
    # name -> detectors tried in order, the next only where the previous found nothing
    "hog-up0": ("hog0",),
    "hog-up1": ("hog1",),
    "cnn-up0": ("cnn0",),
    "cnn-up1": ("cnn1",),
    "hybrid hog-up0 > cnn-up0": ("hog0", "cnn0"),
    "hybrid hog-up1 > cnn-up0": ("hog1", "cnn0"),
    "hybrid hog-up1 > cnn-up1": ("hog1", "cnn1"),
    "hybrid cnn-up0 > cnn-up1": ("cnn0", "cnn1"),
}
LFW_STRATEGIES = [s for s, chain in STRATEGIES.items() if "cnn1" not in chain]
VARIANT_BOXES = ("cnn0",)
"""Descriptor variants beyond plain/flip are computed for the boxes of these detectors."""
PADDINGS = (0.15, 0.35)
JITTERS = 5

W: dict[str, Any] = {}


def _init(model_dir: str) -> None:
    from facewarden.adapters.models.dlib_models import FivePointAligner, HogDetector
    from facewarden.adapters.models.onnx_models import OnnxEmbedder, OnnxMmodDetector

    md = Path(model_dir)
    W["det"] = {
        "hog0": HogDetector(0),
        "hog1": HogDetector(1),
        "cnn0": OnnxMmodDetector(md, 0, 1),
        "cnn1": OnnxMmodDetector(md, 1, 1),
    }
    W["aligner"] = FivePointAligner()
    W["embedder"] = OnnxEmbedder(md, 1)


def _work(path: str) -> dict[str, Any]:
    import dlib

    from facewarden.adapters.imaging import decode_image
    from facewarden.adapters.models.dlib_models import CHIP_SIZE
    from facewarden.evaluation.embedding import choose_box

    image = decode_image(Path(path).read_bytes(), max_pixels=50_000_000)
    found: dict[str, Any] = {}
    for name in LFW_DETECTORS:
        det = W["det"][name]
        t = time.perf_counter()
        dets = det.detect(image)
        found[name] = {"n": len(dets), "ms": 1000 * (time.perf_counter() - t)}
        found[name]["box"] = choose_box(image.shape, dets).as_list()
    descs: dict[tuple, np.ndarray] = {}
    aligner, embedder = W["aligner"], W["embedder"]
    # the boxes every strategy may pick: each detector's, and the fallback

    boxes = {tuple(found[n]["box"]) for n in LFW_DETECTORS}
    variant_boxes = {tuple(found[n]["box"]) for n in VARIANT_BOXES}
    for key in boxes:
        from facewarden.core.schemas import Box

        box = Box(*key)
        rect = dlib.rectangle(box.left, box.top, box.right, box.bottom)
        shape = aligner._predictor(image, rect)
        chip = np.asarray(dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25))
        chips = {"plain": chip, "mirror": chip[:, ::-1].copy()}
        if key in variant_boxes:
            for pad in PADDINGS:
                c = np.asarray(dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=pad))
                chips[f"pad{pad}"] = c
            for i, c in enumerate(dlib.jitter_image(chip, JITTERS)):
                chips[f"jit{i}"] = np.asarray(c)
        names = list(chips)
        vecs = embedder.embed([chips[n] for n in names])
        for n, v in zip(names, vecs, strict=True):
            descs[(key, n)] = v
    return {"found": found, "descs": descs}


def _descriptor(item: dict[str, Any], box: tuple, variant: str) -> np.ndarray:
    d = item["descs"]
    if variant == "plain":
        return d[(box, "plain")]
    if variant == "flip":
        return (d[(box, "plain")] + d[(box, "mirror")]) / 2
    if variant.startswith("pad") and variant.endswith("+flip"):
        p = variant.removesuffix("+flip")
        return (d[(box, p)] + d[(box, f"{p}-mirror")]) / 2
    if variant.startswith("pad"):
        return d[(box, variant)]
    if variant == f"jitter{JITTERS}":
        return np.mean([d[(box, f"jit{i}")] for i in range(JITTERS)], axis=0)
    if variant == f"jitter{JITTERS}+flip":
        return np.mean(
            [d[(box, f"jit{i}")] for i in range(JITTERS)] + [d[(box, "plain")], d[(box, "mirror")]],
            axis=0,
        )
    raise KeyError(variant)


def strategy_pick(item: dict[str, Any], chain: tuple[str, ...]) -> tuple:
    """(box, detected, ms) of a strategy on one image; where nothing was detected, the box
    is the image's fallback box (what each detector's entry holds then)."""
    ms = 0.0
    for name in chain:
        f = item["found"][name]
        ms += f["ms"]
        if f["n"]:
            return tuple(f["box"]), True, ms
    return tuple(item["found"][chain[-1]]["box"]), False, ms


def score(
    names: list[str],
    items: dict[str, dict[str, Any]],
    chain: tuple[str, ...],
    variant: str,
    train,
    test,
) -> dict[str, Any]:
    from facewarden.evaluation.lfw import split_accuracy
    from facewarden.evaluation.metrics import accuracy, best_threshold

    templates, detected, ms = {}, {}, []
    for n in names:
        box, ok, t = strategy_pick(items[n], chain)
        templates[n] = _descriptor(items[n], box, variant)
        detected[n] = ok
        ms.append(t)

    def dist(p) -> np.ndarray:
        return np.array(
            [np.linalg.norm(templates[a] - templates[b]) for a, b in zip(p.a, p.b, strict=True)]
        )

    t = best_threshold(dist(train), train.same)
    d = dist(test)
    both = np.array([detected[a] and detected[b] for a, b in zip(test.a, test.b, strict=True)])
    test_images = sorted({*test.a, *test.b})
    return {
        "threshold_chosen_on_devtrain": round(t, 4),
        "devtest_accuracy": round(accuracy(d, test.same, t), 4),
        "devtest_accuracy_at_0.6": round(accuracy(d, test.same, 0.6), 4),
        **split_accuracy(d, test.same, both, t),
        "images_without_detection": int(sum(not v for v in detected.values())),
        "devtest_images_without_detection": int(sum(not detected[n] for n in test_images)),
        "detect_ms_per_image_mean": round(float(np.mean(ms)), 2),
    }


def photos_and_clip(photos: Path, model_dir: Path, fps: float) -> dict[str, Any]:
    """Faces found per detector on the faces-small photos (against labels.csv) and frames
    with a face in short_hamilton_clip.mp4 at ``fps``."""
    from facewarden.adapters.imaging import decode_image
    from facewarden.adapters.video import VideoReader

    _init(str(model_dir))
    rows = list(csv.DictReader((photos / "labels.csv").open()))
    images = []
    for r in rows:
        p = photos / r["path"]
        if p.suffix.lower() in {".jpg", ".jpeg", ".png"} and p.is_file():
            images.append((r["path"], int(r["expected_faces"] or 0), p))
    per: dict[str, Any] = {}
    found: dict[str, dict[str, int]] = {}
    for name, det in W["det"].items():
        found[name] = {}
        total_ms = 0.0
        for rel, _exp, p in images:
            image = decode_image(p.read_bytes(), max_pixels=50_000_000)
            t = time.perf_counter()
            found[name][rel] = len(det.detect(image))
            total_ms += 1000 * (time.perf_counter() - t)
        per[name] = {"photo_ms_mean": round(total_ms / len(images), 1)}
    clip = photos / "face_recognition/examples/short_hamilton_clip.mp4"
    frames = []
    with VideoReader(clip, max_pixels=50_000_000) as reader:
        frames = [f.image for f in reader.frames(fps)]
    clip_found: dict[str, list[int]] = {}
    for name, det in W["det"].items():
        t = time.perf_counter()
        clip_found[name] = [len(det.detect(f)) for f in frames]
        per[name]["clip_ms_per_frame"] = round(1000 * (time.perf_counter() - t) / len(frames), 1)
    out: dict[str, Any] = {
        "photos": len(images),
        "expected_faces": sum(e for _, e, _ in images),
        "clip_frames": len(frames),
        "clip_fps": fps,
        "strategies": {},
    }
    for sname, chain in STRATEGIES.items():
        faces, exact = 0, 0
        for rel, exp, _ in images:
            n = next((found[c][rel] for c in chain if found[c][rel]), 0)
            faces += min(n, exp) if exp else 0
            exact += n == exp
        cf = [
            next((clip_found[c][i] for c in chain if clip_found[c][i]), 0)
            for i in range(len(frames))
        ]
        out["strategies"][sname] = {
            "photo_faces_found_of_expected": faces,
            "photos_with_expected_count": exact,
            "clip_frames_with_a_face": sum(1 for n in cf if n),
            "clip_faces": sum(cf),
        }
    out["per_detector"] = per
    out["per_photo"] = {
        rel: {"expected": exp, **{n: found[n][rel] for n in DETECTORS}} for rel, exp, _ in images
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, default=Path.home() / ".cache/facewarden-models")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--photos-json", type=Path, help="reuse this run's photo and clip part")
    ap.add_argument("--limit", type=int, default=0, help="images (0: all; for a smoke run)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/detectors_view1.json"))
    args = ap.parse_args()

    from facewarden.adapters.models.onnx_models import MMOD, RESNET, converted_path
    from facewarden.evaluation.lfw import read_pairs

    for m in (MMOD, RESNET):
        converted_path(m, args.model_dir)
    train = read_pairs(args.lfw / "pairsDevTrain.txt")
    test = read_pairs(args.lfw / "pairsDevTest.txt")
    if args.limit:
        for p in (train, test):
            keep = list(range(0, len(p.a), max(1, len(p.a) // args.limit)))
            p.a, p.b = [p.a[i] for i in keep], [p.b[i] for i in keep]
            p.same = p.same[keep]
    names = sorted({*train.a, *train.b, *test.a, *test.b})
    load_before = os.getloadavg()
    started = time.perf_counter()
    items: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(
        args.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init,
        initargs=(str(args.model_dir),),
    ) as pool:
        paths = [str(args.lfw / n) for n in names]
        for i, (n, item) in enumerate(zip(names, pool.map(_work, paths, chunksize=8), strict=True)):
            items[n] = item
            if i % 500 == 0:
                print(f"{i}/{len(names)} {time.perf_counter() - started:.0f}s", file=sys.stderr)
    lfw_seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    variants = ["plain", "flip", *(f"pad{p}" for p in PADDINGS)]
    variants += [f"jitter{JITTERS}", f"jitter{JITTERS}+flip"]
    detection = {
        s: score(names, items, chain, "plain", train, test)
        for s, chain in STRATEGIES.items()
        if s in LFW_STRATEGIES
    }
    descriptor: dict[str, Any] = {}
    descriptor["cnn-up0"] = {
        v: score(names, items, STRATEGIES["cnn-up0"], v, train, test) for v in variants
    }
    for s in ("hog-up1", "hybrid hog-up1 > cnn-up0", "hybrid hog-up0 > cnn-up0"):
        descriptor[s] = {
            v: score(names, items, STRATEGIES[s], v, train, test) for v in ("plain", "flip")
        }
    if args.photos_json:  # the photo and clip part of an earlier run (it takes minutes)
        photos = json.loads(args.photos_json.read_text())["faces_small_and_clip"]
    else:
        photos = photos_and_clip(args.photos, args.model_dir, 5.0)
    write_result(
        args.out,
        {
            "protocol": "LFW View 1: threshold chosen on pairsDevTrain.txt (2,200 pairs), "
            "accuracy on pairsDevTest.txt (1,000 pairs)",
            "images": len(names),
            "train_pairs": len(train.a),
            "test_pairs": len(test.a),
            "box_choice": "the detected box nearest the image centre; else the fallback box",
            "fallback_box": "centred square, side 80% of the shorter image side",
            "timing_note": "ms per image in one worker with one ONNX Runtime thread; "
            "valid only at low load (see load_average)",
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "lfw_seconds": round(lfw_seconds, 1),
            "detection": detection,
            "descriptor": descriptor,
            "faces_small_and_clip": photos,
        },
    )


if __name__ == "__main__":
    main()
