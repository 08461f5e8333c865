"""The default detection settings compared in one run: faces found and detection time.

    nice -n 10 .venv/bin/python bench/detector_defaults.py --lfw ../shared/data/lfw \
        --photos ../shared/data/faces-small

Each candidate strategy runs on the same images in one process, one after the other on each
image (the order rotated per image), so a busy machine slows all of them alike and their
times compare within the run (not with idle figures):

* the 600-image LFW ingest bench (``bench/ingest_search.py --limit 600``: the first 600 LFW
  images by path): faces found as ingest enrols them (box at least ``min_face_size``) and
  detection ms per image;
* the faces-small photos (``labels.csv``): labelled faces found (capped at the expected
  count per photo);
* ``short_hamilton_clip.mp4`` sampled at 5 frames per second: frames with a face, faces, and
  the faces nearest Alex Lacamoire's reference photo (he is seen only turned away) with
  their distance; a contact sheet of the default's clip faces is written beside the result;
* 640x480 probes (LFW images placed on a 640x480 canvas, as ``ingest_search.py`` does):
  detection ms per probe.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

CLIP = "face_recognition/examples/short_hamilton_clip.mp4"
ALEX = "face_recognition/examples/alex-lacamoire.png"
MIRANDA = "face_recognition/examples/lin-manuel-miranda.png"
MIN_FACE = 20  # Settings.min_face_size: smaller boxes are not enrolled


CHAINS: dict[str, tuple[str, ...]] = {
    # strategy -> detectors tried in order, the next only where the previous found nothing
    "hog-up1 (old default)": ("hog1",),
    "cnn-up0+retry-up1": ("cnn0", "cnn1"),
    "hybrid hog-up0 > cnn-up0": ("hog0", "cnn0"),
    "hybrid hog-up0 > cnn-up0+retry-up1": ("hog0", "cnn0", "cnn1"),
    "hybrid hog-up1 > cnn-up0+retry-up1": ("hog1", "cnn0", "cnn1"),
    "hybrid hog-x1.5 > cnn-up0+retry-up1": ("hogx1.5", "cnn0", "cnn1"),
}
DEFAULT = "cnn-up0+retry-up1"
"""The default of probes, video and redaction (``detector``)."""
INGEST_DEFAULT = "hybrid hog-x1.5 > cnn-up0+retry-up1"
"""The default of photo ingest (``ingest_detector``)."""
OLD_DEFAULT = "hog-up1 (old default)"


def detectors(model_dir: Path) -> dict[str, Any]:
    from facewarden.adapters.models.dlib_models import HogDetector
    from facewarden.adapters.models.onnx_models import OnnxMmodDetector

    return {
        "hog0": HogDetector(0),
        "hog1": HogDetector(1),
        "hogx1.5": HogDetector(0, 1.5),
        "cnn0": OnnxMmodDetector(model_dir, 0, 1),
        "cnn1": OnnxMmodDetector(model_dir, 1, 1),
    }


def run_all(dets: dict[str, Any], images: list[np.ndarray]) -> dict[str, dict[str, list]]:
    """Per strategy: detections and ms per image. Each detector runs once per image (the
    order rotated per image; the CNN at upsampling 1 only where it found nothing at 0, the
    only place a strategy uses it) and each strategy is scored from those runs: its time is
    the sum of the detectors its chain ran on that image."""
    base = ["hog0", "hog1", "hogx1.5", "cnn0"]
    out: dict[str, dict[str, list]] = {n: {"found": [], "ms": []} for n in CHAINS}
    for i, image in enumerate(images):
        runs: dict[str, tuple[list, float]] = {}
        for name in base[i % len(base) :] + base[: i % len(base)]:
            t = time.perf_counter()
            runs[name] = (dets[name].detect(image), 1000 * (time.perf_counter() - t))
        if not runs["cnn0"][0]:
            t = time.perf_counter()
            runs["cnn1"] = (dets["cnn1"].detect(image), 1000 * (time.perf_counter() - t))
        for sname, chain in CHAINS.items():
            found, ms = [], 0.0
            for name in chain:
                found, took = runs[name]
                ms += took
                if found:
                    break
            out[sname]["found"].append(found)
            out[sname]["ms"].append(ms)
    return out


def _big(found: list) -> int:
    return sum(1 for d in found if min(d.box.width, d.box.height) >= MIN_FACE)


def _iou(a: Any, b: Any) -> float:
    w = min(a.right, b.right) - max(a.left, b.left)
    h = min(a.bottom, b.bottom) - max(a.top, b.top)
    inter = max(0, w) * max(0, h)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union else 0.0


def _missed(reference: list[list], found: list[list]) -> int:
    """Faces (enrolled size) of ``reference`` with no box of ``found`` overlapping them (IoU
    above 0.3: the detectors' boxes differ in size and place for one face)."""
    return sum(
        1
        for ref, got in zip(reference, found, strict=True)
        for a in ref
        if min(a.box.width, a.box.height) >= MIN_FACE
        and not any(_iou(a.box, b.box) > 0.3 for b in got)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=Path, required=True)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, default=Path.home() / ".cache/facewarden-models")
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--probes", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("bench/results/detector_defaults.json"))
    args = ap.parse_args()

    from PIL import Image

    from facewarden.adapters.imaging import decode_image
    from facewarden.adapters.models.dlib_models import FivePointAligner
    from facewarden.adapters.models.onnx_models import OnnxEmbedder
    from facewarden.adapters.video import VideoReader

    dets = detectors(args.model_dir)
    aligner, embedder = FivePointAligner(), OnnxEmbedder(args.model_dir, 1)
    load_before = os.getloadavg()
    started = time.perf_counter()

    def load(p: Path) -> np.ndarray:
        return decode_image(p.read_bytes(), max_pixels=50_000_000)

    lfw_paths = sorted(p for p in args.lfw.rglob("*.jpg"))[: args.limit]
    lfw = run_all(dets, [load(p) for p in lfw_paths])

    rows = list(csv.DictReader((args.photos / "labels.csv").open()))
    photos = [
        (r["path"], int(r["expected_faces"] or 0))
        for r in rows
        if Path(r["path"]).suffix.lower() in {".jpg", ".jpeg", ".png"}
        and (args.photos / r["path"]).is_file()
    ]
    photo = run_all(dets, [load(args.photos / p) for p, _ in photos])

    with VideoReader(args.photos / CLIP, max_pixels=50_000_000) as reader:
        frames = [(f.time_s, f.image) for f in reader.frames(5.0)]
    clip = run_all(dets, [im for _, im in frames])

    canvas = []
    for p in lfw_paths[: args.probes]:
        c = Image.new("RGB", (640, 480), (90, 90, 90))
        c.paste(Image.open(p).convert("RGB"), (195, 115))
        canvas.append(np.asarray(c))
    probe = run_all(dets, canvas)

    def template(image: np.ndarray, box: Any) -> np.ndarray:
        chip, _ = aligner.align(image, box)
        return embedder.embed([chip])[0]

    refs = {}
    for who, rel in (("alex_lacamoire", ALEX), ("lin_manuel_miranda", MIRANDA)):
        im = load(args.photos / rel)
        found = dets["cnn0"].detect(im) or dets["cnn1"].detect(im)
        refs[who] = template(im, max(found, key=lambda d: d.box.width).box)

    results: dict[str, Any] = {}
    sheet: list[np.ndarray] = []
    for n in CHAINS:
        faces_photos = sum(
            min(len(f), exp) for f, (_, exp) in zip(photo[n]["found"], photos, strict=True) if exp
        )
        clip_faces = []
        for (t, image), found in zip(frames, clip[n]["found"], strict=True):
            for d in found:
                v = template(image, d.box)
                dist = {who: round(float(np.linalg.norm(v - r)), 3) for who, r in refs.items()}
                clip_faces.append({"time": round(t, 2), "box": d.box.as_list(), **dist})
                if n == DEFAULT:
                    chip, _ = aligner.align(image, d.box)
                    sheet.append(chip)
        nearest_alex = sorted(clip_faces, key=lambda f: f["alex_lacamoire"])[:3]
        results[n] = {
            "lfw600_faces_found": sum(_big(f) for f in lfw[n]["found"]),
            "lfw600_images_without_a_face": sum(1 for f in lfw[n]["found"] if not f),
            "lfw600_old_default_faces_missed": _missed(lfw[OLD_DEFAULT]["found"], lfw[n]["found"]),
            "lfw600_detect_ms_mean": round(float(np.mean(lfw[n]["ms"])), 1),
            "photos_labelled_faces_found": faces_photos,
            "photos_detect_ms_mean": round(float(np.mean(photo[n]["ms"])), 1),
            "clip_frames_with_a_face": sum(1 for f in clip[n]["found"] if f),
            "clip_faces": len(clip_faces),
            "clip_faces_within_0.6_of_alex_lacamoire": sum(
                f["alex_lacamoire"] <= 0.6 for f in clip_faces
            ),
            "clip_faces_within_0.6_of_miranda": sum(
                f["lin_manuel_miranda"] <= 0.6 for f in clip_faces
            ),
            "clip_faces_nearest_alex_lacamoire": nearest_alex,
            "clip_detect_ms_per_frame": round(float(np.mean(clip[n]["ms"])), 1),
            "probe_640x480_detect_ms_mean": round(float(np.mean(probe[n]["ms"])), 1),
        }
    if sheet:
        cols = 10
        rows_n = (len(sheet) + cols - 1) // cols
        grid = np.zeros((rows_n * 150, cols * 150, 3), np.uint8)
        for i, chip in enumerate(sheet):
            r, c = divmod(i, cols)
            grid[r * 150 : (r + 1) * 150, c * 150 : (c + 1) * 150] = chip
        Image.fromarray(grid).save(args.out.with_suffix(".clip_faces.jpg"), quality=80)
    write_result(
        args.out,
        {
            "lfw_images": len(lfw_paths),
            "photos": len(photos),
            "photos_expected_faces": sum(e for _, e in photos),
            "clip": CLIP,
            "clip_frames": len(frames),
            "clip_fps": 5.0,
            "probes_640x480": len(canvas),
            "faces_found_rule": f"faces with a box of at least {MIN_FACE} px (as ingest enrols)",
            "defaults": {"probes, video, redaction": DEFAULT, "photo ingest": INGEST_DEFAULT},
            "timing_note": "one process, one ONNX Runtime thread, detectors interleaved per "
            "image: times compare within this run only (see load_average)",
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.perf_counter() - started, 1),
            "strategies": results,
        },
    )


if __name__ == "__main__":
    main()
