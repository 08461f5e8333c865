"""eval identify: predicted (calibration) against observed FPIR by gallery size, on real
faces, and the arithmetic behind it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from facewarden.evaluation.identify import (
    mixed_distractors,
    nearest_and_counts,
    split,
    synthetic_distractors,
    wilson,
)

from conftest import GALLERY, PROBES, REFERENCE, UNKNOWN


@pytest.fixture
def small_lfw(tmp_path):
    people = {
        "Barack_Obama": [REFERENCE / "obama.jpg", REFERENCE / "obama2.jpg", PROBES / "obama1.jpg"],
        "Joe_Biden": [REFERENCE / "biden.jpg", GALLERY / "biden.jpg"],
        "Kit_Harington": [GALLERY / "kit_harington.jpg", PROBES / "johnsnow_test1.jpg"],
        "Rose_Leslie": [GALLERY / "rose_leslie.jpg"],
        "Angela_Merkel": [UNKNOWN / "Angela_Merkel_0001.jpg"],
        "Aaron_Sorkin": [UNKNOWN / "Aaron_Sorkin_0001.jpg"],
        "Alex_Lacamoire": [GALLERY / "alex_lacamoire.jpg"],
    }
    root = tmp_path / "lfw"
    for name, files in people.items():
        (root / name).mkdir(parents=True)
        for i, f in enumerate(files, 1):
            shutil.copy(f, root / name / f"{name}_{i:04d}.jpg")
    return root


def test_nearest_and_counts_match_brute_force():
    rng = np.random.default_rng(1)
    probes = rng.normal(size=(7, 128)).astype(np.float32) * 0.05
    gallery = rng.normal(size=(53, 128)).astype(np.float32) * 0.05
    d = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    nearest, counts = nearest_and_counts(probes, gallery, [0.7, 0.8], split_at=20, chunk=16)
    assert np.allclose(nearest, d.min(axis=1), atol=1e-5)
    for i, t in enumerate([0.7, 0.8]):
        assert counts[i, 0] == (d[:, :20] <= t).sum() and counts[i, 1] == (d[:, 20:] <= t).sum()
    low, high = wilson(9, 941)
    assert low < 9 / 941 < high and wilson(0, 941)[0] == 0


def test_synthetic_distractors_keep_the_real_mean_and_spread():
    rng = np.random.default_rng(2)
    real = (rng.normal(size=(400, 128)) * 0.04 + 0.01).astype(np.float32)
    for make in (synthetic_distractors, mixed_distractors):
        fake = make(real, 20_000, seed=3)
        assert fake.shape == (20_000, 128)
        assert np.allclose(fake.mean(axis=0), real.mean(axis=0), atol=0.005)
        assert np.trace(np.cov(fake, rowvar=False)) == pytest.approx(
            np.trace(np.cov(real, rowvar=False)), rel=0.1
        )


def test_eval_identify_reports_predicted_vs_observed_fpir_by_gallery_size(small_lfw, tmp_path):
    gallery, _, nonmated, _ = split(small_lfw)
    out, cache = tmp_path / "fpir.json", tmp_path / "templates.npz"
    args = [
        sys.executable, "-m", "facewarden", "eval", "identify", "--data", small_lfw,
        "--workers", "1", "--gallery-size", "2", "--gallery-size", "200",
        "--cache", cache, "--out", out,
    ]  # fmt: skip
    env = os.environ | {"COLUMNS": "200", "FACEWARDEN_DATA_DIR": str(tmp_path / "d")}
    proc = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "FPIR predicted (calibration) vs observed" in proc.stdout
    result = json.loads(out.read_text())
    pvo = result["fpir_predicted_vs_observed"]
    assert pvo["nonmated_searches"] == len(nonmated)
    rows = pvo["rows"]
    assert {(r["gallery_size"], r["distractor_method"]) for r in rows} == {
        (2, None),
        (200, "gaussian"),
        (200, "mixed"),
    }
    for r in rows:
        assert 0 <= r["predicted_fpir"] <= 1 and 0 <= r["observed_fpir"] <= 1
        assert r["observed_95ci"][0] <= r["observed_fpir"] <= r["observed_95ci"][1]
        assert r["synthetic_distractors"] == max(0, r["gallery_size"] - len(gallery))
        want = 1 - (1 - r["fmr"]) ** r["gallery_size"]
        assert r["predicted_fpir"] == pytest.approx(want, abs=2e-3)
    assert cache.is_file()
    # a second run reuses the cached templates and measures the same
    again = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=env)
    assert again.returncode == 0
    rows2 = json.loads(out.read_text())["fpir_predicted_vs_observed"]["rows"]
    assert [r["observed_fpir"] for r in rows2] == [r["observed_fpir"] for r in rows]


def test_calibration_bench_writes_a_table_search_can_read(small_lfw, tmp_path):
    from pathlib import Path

    from facewarden.calibration import from_dict
    from facewarden.config import Settings

    bench = Path(__file__).resolve().parents[1] / "bench" / "calibrate.py"
    table, record = tmp_path / "table.json", tmp_path / "record.json"
    args = [sys.executable, bench, "--data", small_lfw, "--workers", "1", "--out", table,
            "--result", record]  # fmt: skip
    proc = subprocess.run(list(map(str, args)), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(table.read_text())
    # 7 people, one image each, every one with a face: 21 impostor pairs
    assert doc["data"]["people"] == 7 and doc["impostor_pairs"] == 21
    assert len(doc["data"]["files_sha256"]) == 64 and doc["recipe_id"]
    # the detection setting that made the boxes is part of the recorded recipe
    assert doc["recipe"]["detector_setting"] == Settings().detector_setting
    cal = from_dict(doc)
    assert cal.fmr(0.8) >= cal.fmr(0.5) >= cal.fmr_floor == 3 / 21
    assert json.loads(record.read_text())["impostor_pairs"] == 21
