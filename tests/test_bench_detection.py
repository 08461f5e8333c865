"""The detection benchmarks run on a tiny input (speed itself is never asserted here)."""

from __future__ import annotations

import io
import json
import shutil

from PIL import Image
from test_bench import _bench

from conftest import GALLERY, MODEL_CACHE, PROBES, REFERENCE


def test_detectors_bench_scores_every_option_with_failures_counted(tmp_path):
    people = {
        "Barack_Obama": [REFERENCE / "obama.jpg", REFERENCE / "obama2.jpg", PROBES / "obama1.jpg"],
        "Joe_Biden": [REFERENCE / "biden.jpg", GALLERY / "biden.jpg"],
    }
    lfw = tmp_path / "lfw"
    for name, files in people.items():
        (lfw / name).mkdir(parents=True)
        for i, f in enumerate(files, 1):
            shutil.copy(f, lfw / name / f"{name}_{i:04d}.jpg")
    (lfw / "No_Face").mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (250, 250), (128, 120, 110)).save(buf, "JPEG")
    (lfw / "No_Face" / "No_Face_0001.jpg").write_bytes(buf.getvalue())
    (lfw / "pairsDevTrain.txt").write_text(
        "2\nBarack_Obama 1 2\nJoe_Biden 1 2\nBarack_Obama 1 Joe_Biden 1\nJoe_Biden 2 No_Face 1\n"
    )
    (lfw / "pairsDevTest.txt").write_text("1\nBarack_Obama 1 3\nBarack_Obama 3 No_Face 1\n")
    photos = tmp_path / "photos.json"
    photos.write_text(json.dumps({"faces_small_and_clip": {"reused": True}}))
    result = _bench(
        "detectors.py",
        tmp_path / "r.json",
        "--lfw",
        str(lfw),
        "--photos",
        str(tmp_path),
        "--photos-json",
        str(photos),
        "--model-dir",
        str(MODEL_CACHE),
        "--workers",
        "1",
    )
    assert result["images"] == 6 and result["test_pairs"] == 2
    assert len(result["load_average_before"]) == 3
    for name in ("hog-up0", "hog-up1", "cnn-up0", "hybrid hog-up0 > cnn-up0"):
        row = result["detection"][name]
        # the faceless image: no detection, its pair decided on the fallback box
        assert row["images_without_detection"] == 1 and row["pairs_fallback"] == 1
        assert row["pairs_detected_both"] == 1 and row["accuracy_detected_both"] == 1.0
    assert set(result["descriptor"]["cnn-up0"]) >= {"plain", "flip", "jitter5", "pad0.15"}
    assert result["faces_small_and_clip"] == {"reused": True}


def test_ingest_search_bench_takes_detector_and_probe_size(tmp_path, database_url):
    result = _bench(
        "ingest_search.py",
        tmp_path / "r.json",
        "--data",
        str(GALLERY),
        "--limit",
        "2",
        "--workers",
        "1",
        "--runtimes",
        "onnx",
        "--probes",
        "1",
        "--probe-size",
        "640x480",
        "--detector",
        "hog",
        "--ingest-detector",
        "cnn",
        "--upsample",
        "1",
    )
    run = result["runs"][0]
    assert run["detector"].startswith("cnn-up1") and run["search_detector"].startswith("hog-up1")
    assert len(run["load_average"]) == 3
    assert run["search"]["probe_size"] == "640x480" and run["faces"] == 2
