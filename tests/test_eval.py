"""The evaluation commands on a tiny LFW-layout set built from the fixtures (real faces)."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facewarden.config import Settings
from facewarden.core.errors import InvalidInput
from facewarden.evaluation import metrics
from facewarden.evaluation.lfw import evaluate_lfw, plot_roc, read_pairs

from conftest import GALLERY, PROBES, REFERENCE


@pytest.fixture
def lfw(tmp_path):
    """Obama x4, Biden x2, Alex x2, Kit x2 and a faceless image, in LFW's layout."""
    people = {
        "Barack_Obama": [
            REFERENCE / "obama.jpg",
            REFERENCE / "obama2.jpg",
            REFERENCE / "obama3.jpg",
            PROBES / "obama1.jpg",
        ],
        "Joe_Biden": [REFERENCE / "biden.jpg", GALLERY / "biden.jpg"],
        "Alex_Lacamoire": [GALLERY / "alex_lacamoire.jpg", PROBES / "alex_lacamoire1.jpg"],
        "Kit_Harington": [GALLERY / "kit_harington.jpg", PROBES / "johnsnow_test1.jpg"],
    }
    root = tmp_path / "lfw"
    for name, files in people.items():
        (root / name).mkdir(parents=True)
        for i, f in enumerate(files, 1):
            shutil.copy(f, root / name / f"{name}_{i:04d}.jpg")
    (root / "No_Face").mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (250, 250), (128, 120, 110)).save(buf, "JPEG")
    (root / "No_Face" / "No_Face_0001.jpg").write_bytes(buf.getvalue())
    same = ["Barack_Obama 1 2", "Barack_Obama 1 3", "Joe_Biden 1 2", "Alex_Lacamoire 1 2"]
    diff = [
        "Barack_Obama 1 Joe_Biden 1",
        "Barack_Obama 4 Kit_Harington 1",
        "Alex_Lacamoire 1 Kit_Harington 2",
        "Joe_Biden 2 No_Face 1",
    ]
    (tmp_path / "pairs.txt").write_text("4\n" + "\n".join(same + diff) + "\n")
    folds = same[:2] + diff[:2] + same[2:] + diff[2:]
    (tmp_path / "folds.txt").write_text("2 2\n" + "\n".join(folds) + "\n")
    return root


def test_lfw_protocol_on_real_faces(lfw, tmp_path, pipeline):
    result, curves = evaluate_lfw(
        lfw,
        tmp_path / "pairs.txt",
        Settings(),
        train_file=tmp_path / "folds.txt",
        pipeline=pipeline,
    )
    assert (result["pairs"], result["genuine_pairs"], result["impostor_pairs"]) == (8, 4, 4)
    assert result["images"] == 11 and result["images_without_face"] == 1
    assert result["accuracy_at_fixed_threshold"] == 1.0
    # the faceless image's pair is reported apart from the pairs with two detected faces
    assert result["test_images_without_face"] == 1
    split = result["at_fixed_threshold"]
    assert (split["pairs_detected_both"], split["pairs_fallback"]) == (7, 1)
    assert split["accuracy_detected_both"] == 1.0 and split["accuracy_fallback"] == 1.0
    assert result["at_train_threshold"]["pairs_fallback"] == 1
    assert result["genuine_distance_mean"] < 0.6 < result["impostor_distance_mean"]
    assert 0 < result["threshold_chosen_on_train"] < 1 and result["accuracy_at_train_threshold"]
    assert len(result["dataset_fingerprint"]) == 64 and result["software"]["dlib-bin"]
    plot_roc(curves, tmp_path / "roc.png", "tiny")
    assert Image.open(tmp_path / "roc.png").size[0] > 500


def test_folds_follow_the_lfw_layout(lfw, tmp_path, pipeline):
    pairs = read_pairs(tmp_path / "folds.txt")
    assert pairs.folds == 2 and pairs.fold.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pairs.same.tolist() == [True, True, False, False] * 2
    result, _ = evaluate_lfw(lfw, tmp_path / "folds.txt", Settings(), pipeline=pipeline)
    assert result["k_fold"]["folds"] == 2 and len(result["k_fold"]["thresholds"]) == 2


def test_bad_pairs_files_are_clear_errors(lfw, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("3\nBarack_Obama 1 2\n")
    with pytest.raises(InvalidInput, match="promises 6 pairs, found 1"):
        read_pairs(bad)
    bad.write_text("pairs\n")
    with pytest.raises(InvalidInput, match="first line"):
        read_pairs(bad)
    bad.write_text("1\nBarack_Obama 1 9\nBarack_Obama 1 Joe_Biden 1\n")
    with pytest.raises(InvalidInput, match="missing"):
        evaluate_lfw(lfw, bad, Settings())


def test_metrics_on_known_values():
    d = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.25])
    same = np.array([True, True, True, False, False, False])
    assert metrics.accuracy(d, same, 0.5) == pytest.approx(5 / 6)
    t = metrics.best_threshold(d, same)
    assert metrics.accuracy(d, same, t) == 5 / 6
    tar, thr = metrics.tar_at_far(d, same, 0.0)
    assert tar == pytest.approx(2 / 3) and thr == 0.2
    fnir, thr = metrics.fnir_at_fpir(
        np.array([0.2, 0.4, 0.5]), np.array([True, True, False]), np.array([0.3, 0.6, 0.9]), 0.34
    )
    assert thr == pytest.approx(0.6 - 1e-6) and fnir == pytest.approx(1 / 3)


@pytest.mark.slow
def test_eval_cli_writes_json(lfw, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "facewarden",
            "eval",
            "lfw",
            "--data",
            lfw,
            "--pairs",
            tmp_path / "pairs.txt",
            "--workers",
            "1",
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy at 0.6" in proc.stdout
    result = json.loads(out.read_text())
    assert result["accuracy_at_fixed_threshold"] == 1.0 and "eval lfw" in result["command"]


def test_identification_on_real_faces(lfw, tmp_path, pipeline):
    from facewarden.evaluation.identify import evaluate_identification, split

    # Singletons go to the gallery or the non-mated probes by a hash of their name.
    (lfw / "Rose_Leslie").mkdir()
    shutil.copy(GALLERY / "rose_leslie.jpg", lfw / "Rose_Leslie" / "Rose_Leslie_0001.jpg")
    gallery, mated, nonmated, owners = split(lfw)
    assert len(mated) == 3 + 1 + 1 + 1 and nonmated
    assert {"Barack_Obama", "Joe_Biden", "Alex_Lacamoire", "Kit_Harington"} <= set(owners)
    result = evaluate_identification(lfw, Settings(), distractors=50, pipeline=pipeline)
    assert result["gallery_size"] == len(gallery) + 50
    assert result["rank1_identification_rate"] == 1.0
    assert result["rank10_identification_rate"] == 1.0
    assert 0 <= result["fnir_at_fpir_0.01"] <= 1 and result["threshold_at_fpir_0.01"] > 0


def test_fallback_box_is_relative_to_the_image_not_lfw_crops():
    from facewarden.core.schemas import Box, Detection
    from facewarden.evaluation.embedding import choose_box, fallback_box

    assert fallback_box(250, 250) == Box(top=25, right=225, bottom=225, left=25)
    wide = fallback_box(480, 640)  # a centred square of 80% of the shorter side
    assert (wide.width, wide.bottom - wide.top) == (384, 384)
    assert (wide.left + wide.right) / 2 == 320 and (wide.top + wide.bottom) / 2 == 240
    near = Detection(Box(200, 360, 280, 280), 1.0, "frontal")
    far = Detection(Box(0, 100, 80, 20), 2.0, "frontal")
    assert choose_box((480, 640, 3), [far, near]) == near.box
    assert choose_box((480, 640, 3), []) == wide


def test_split_accuracy_counts_each_kind_of_pair():
    from facewarden.evaluation.lfw import split_accuracy

    d = np.array([0.3, 0.9, 0.5, 0.2])
    same = np.array([True, False, True, False])
    both = np.array([True, True, False, False])
    out = split_accuracy(d, same, both, 0.6)
    assert out == {
        "pairs_detected_both": 2,
        "accuracy_detected_both": 1.0,
        "pairs_fallback": 2,
        "accuracy_fallback": 0.5,
    }
    assert split_accuracy(d, same, np.ones(4, bool), 0.6)["accuracy_fallback"] is None


def test_eval_cli_takes_detector_and_descriptor_options(lfw, tmp_path):
    import os
    import subprocess
    import sys

    def run(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "facewarden",
                "eval",
                "lfw",
                "--data",
                str(lfw),
                "--pairs",
                str(tmp_path / "pairs.txt"),
                "--workers",
                "1",
                *options,
            ],
            capture_output=True,
            text=True,
            env=os.environ | {"COLUMNS": "200", "FACEWARDEN_DATA_DIR": str(tmp_path / "fw")},
        )

    proc = run("--detector", "hybrid", "--upsample", "0", "--flip", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["settings"]["detector"] == "hybrid" and result["settings"]["upsample"] == 0
    assert result["settings"]["descriptor_flip"] is True and result["model"].endswith("+flip")
    assert result["accuracy_at_fixed_threshold"] == 1.0
    assert result["at_fixed_threshold"]["pairs_fallback"] == 1
    bad = run("--detector", "sift")
    assert bad.returncode == 2 and "error [invalid_input]" in bad.stderr
    assert "detector" in bad.stderr and "Traceback" not in bad.stderr
    assert run("--upsample", "9").returncode == 2
