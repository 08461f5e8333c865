"""eval identify: predicted (calibration) against observed FPIR by gallery size, on real
faces, and the arithmetic behind it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from facewarden.calibration import for_model
from facewarden.evaluation.fpir import (
    DISTRACTORS,
    counts_within,
    fidelity,
    held_out_calibration,
    ks_two_sample,
    wilson,
)
from facewarden.evaluation.identify import nearest_and_counts, split

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


def test_synthetic_distractors_keep_the_real_mean_spread_and_norms():
    rng = np.random.default_rng(2)
    real = (rng.normal(size=(400, 128)) * 0.04 + 0.01).astype(np.float32)
    norms = np.linalg.norm(real, axis=1)
    for make in DISTRACTORS.values():
        fake = make(real, 20_000, seed=3)
        assert fake.shape == (20_000, 128)
        assert np.allclose(fake.mean(axis=0), real.mean(axis=0), atol=0.005)
        assert np.trace(np.cov(fake, rowvar=False)) == pytest.approx(
            np.trace(np.cov(real, rowvar=False)), rel=0.1
        )
        # every draw has the norm of a real template
        fake_norms = np.linalg.norm(fake, axis=1)
        assert fake_norms.min() >= norms.min() - 1e-4 and fake_norms.max() <= norms.max() + 1e-4


def test_fidelity_tells_real_strangers_from_unlike_ones():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(300, 128)) * 0.07
    probes = rng.normal(size=(50, 128)) * 0.07
    same = fidelity(probes, real, rng.normal(size=(3000, 128)) * 0.07, [0.85, 1.1])
    far = fidelity(probes, real, rng.normal(size=(3000, 128)) * 0.09, [0.85, 1.1])
    assert same["ks_probe_distances"] < 0.05 < far["ks_probe_distances"]
    assert same["at_threshold"]["1.100"]["realistic"] is True
    assert far["at_threshold"]["1.100"]["realistic"] is False
    # no real pair that close: the ratio is unknown, not "unlike"
    assert same["at_threshold"]["0.850"]["real_pairs_within"] < 10
    assert same["at_threshold"]["0.850"]["realistic"] is None
    assert ks_two_sample(np.arange(10.0), np.arange(10.0)) == 0
    assert ks_two_sample(np.zeros(5), np.ones(5)) == 1


def test_held_out_calibration_has_the_committed_layout_and_counts_its_pairs():
    committed = for_model("dlib_face_recognition_resnet_model_v1+dlib-sp5")
    assert committed is not None
    rng = np.random.default_rng(5)
    real = rng.normal(size=(60, 128)) * 0.07
    held = held_out_calibration(real, committed)
    d = np.linalg.norm(real[:, None] - real[None], axis=2)[np.triu_indices(60, 1)]
    assert held.pairs == len(d) == 1770 and held.distances == committed.distances
    assert held.fmr(0.8) == pytest.approx(max((d <= 0.8).mean(), 3 / 1770))
    _, counts = counts_within(real[:5], real[5:], [0.8], chunk=7)
    assert counts[0] == (np.linalg.norm(real[:5, None] - real[None, 5:], axis=2) <= 0.8).sum()


@pytest.mark.slow
def test_eval_identify_reports_predicted_vs_observed_fpir_by_gallery_size(small_lfw, tmp_path):
    _, _, nonmated, _ = split(small_lfw)
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
    assert "tolerance: stated before the run" in proc.stdout
    result = json.loads(out.read_text())
    pvo = result["fpir_predicted_vs_observed"]
    assert pvo["nonmated_searches"] + pvo["probes_without_face_left_out"] == len(nonmated)
    assert pvo["calibration"]["recipe_id"] and pvo["calibration_recipe_matches_settings"]
    rows = pvo["rows"]
    assert {(r["gallery_size"], r["distractor_method"]) for r in rows} == {
        (2, None),
        (200, "gaussian"),
        (200, "mixture16"),
    }
    assert {r["policy"] for r in rows} == {"fpir 0.01", "fpir 0.1", "fixed 0.6"}
    committed = for_model("dlib_face_recognition_resnet_model_v1+dlib-sp5")
    for r in rows:
        for field in ("threshold", "fmr", "expected_false_candidates", "predicted_fpir",
                      "observed_fpir", "observed_95ci", "within_tolerance", "index_mode",
                      "predicted_fpir_held_out_calibration", "fpir_model_with_measured_fmr",
                      "synthetic_realistic_at_threshold"):  # fmt: skip
            assert field in r
        assert 0 <= r["predicted_fpir"] <= 1 and 0 <= r["observed_fpir"] <= 1
        assert r["observed_95ci"][0] <= r["observed_fpir"] <= r["observed_95ci"][1]
        assert r["real_people"] + r["synthetic_distractors"] == r["gallery_size"]
        assert r["synthetic_distractors"] == max(0, r["gallery_size"] - r["real_people"])
        # the same numbers a search states: the policy's threshold and the calibration's FMR
        if r["policy"].startswith("fpir"):
            target = float(r["policy"].split()[1])
            assert r["threshold"] == committed.policy_threshold(target, r["gallery_size"], 0.6)
        assert r["predicted_fpir"] == pytest.approx(
            committed.predicted_fpir(r["threshold"], r["gallery_size"]), abs=1e-4
        )
        assert r["expected_false_candidates"] == pytest.approx(
            committed.expected_strangers(r["threshold"], r["gallery_size"]), rel=1e-2
        )
    fid = pvo["synthetic_fidelity"]
    assert set(fid) == {"gaussian", "mixture16"}
    assert "mixture_cluster_check" in pvo  # too few people here: it says so
    assert all(0 <= f["ks_probe_distances"] <= 1 for f in fid.values())
    assert cache.is_file()
    # a second run reuses the cached templates and measures the same
    again = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=env)
    assert again.returncode == 0
    rows2 = json.loads(out.read_text())["fpir_predicted_vs_observed"]["rows"]
    assert [r["observed_fpir"] for r in rows2] == [r["observed_fpir"] for r in rows]


@pytest.mark.slow
def test_eval_identify_reads_the_calibration_it_is_given(small_lfw, tmp_path):
    """The prediction comes from the table read at run time (a re-derived calibration
    changes it without a code change); a file that is no table is a clear error."""
    committed = for_model("dlib_face_recognition_resnet_model_v1+dlib-sp5")
    doc = committed.source | {
        "table": [{"distance": d, "fmr": 0.5} for d in committed.distances],
        "impostor_pairs": 10,
        "fmr_floor": 0.3,
    }
    table, out = tmp_path / "table.json", tmp_path / "fpir.json"
    table.write_text(json.dumps(doc))
    base = [
        sys.executable, "-m", "facewarden", "eval", "identify", "--data", small_lfw,
        "--workers", "1", "--gallery-size", "2", "--no-cache", "--out", out,
    ]  # fmt: skip
    env = os.environ | {"COLUMNS": "200", "FACEWARDEN_DATA_DIR": str(tmp_path / "d")}
    proc = subprocess.run(
        list(map(str, [*base, "--calibration", table])), capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["fpir_predicted_vs_observed"]["rows"]
    fixed = next(r for r in rows if r["policy"] == "fixed 0.6")
    assert fixed["fmr"] == 0.5 and fixed["predicted_fpir"] == 0.75
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    proc = subprocess.run(
        list(map(str, [*base, "--calibration", bad])), capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2 and "error [invalid_input]" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
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


def test_templates_cache_of_another_recipe_is_not_reused(small_lfw, tmp_path):
    """A cache made under other settings (e.g. before the default detector changed) would
    give the evaluation another detector's templates: it is ignored and rewritten."""
    from facewarden.config import Settings
    from facewarden.evaluation.embedding import cache_recipe, embed_cached

    paths = sorted(small_lfw.glob("Rose_Leslie/*.jpg"))
    cache = tmp_path / "templates.npz"
    settings = Settings(data_dir=tmp_path / "d")
    first = embed_cached(paths, small_lfw, settings, cache)
    with np.load(cache) as z:
        assert str(z["recipe"]) == cache_recipe(settings)
        stale = {k: z[k] for k in z.files}
    stale["vecs"] = np.zeros_like(stale["vecs"])
    for recipe in ("cnn-up0;runtime=auto;flip=False;fallback=0.8", None):
        doc = (
            dict(stale, recipe=np.array(recipe))
            if recipe
            else {k: v for k, v in stale.items() if k != "recipe"}
        )
        with cache.open("wb") as f:
            np.savez(f, **doc)
        again = embed_cached(paths, small_lfw, settings, cache)
        assert np.allclose(again[0].descriptor, first[0].descriptor)
    # the same recipe is reused as stored (zeros here prove it was not recomputed)
    with cache.open("wb") as f:
        np.savez(f, **stale)
    assert not embed_cached(paths, small_lfw, settings, cache)[0].descriptor.any()
