"""The benchmark scripts run on a tiny input (speed itself is never asserted here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GALLERY, pg_database_url

pytestmark = pytest.mark.slow  # every test runs a bench script in a subprocess

ROOT = Path(__file__).parent.parent


def _bench(script: str, out: Path, *args: str) -> dict:
    """Run ``bench/<script>`` with ``args`` and ``--out``; its JSON result."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        # FAISS's OpenMP threads spin-wait for each other: on two busy cores one descheduled
        # thread stalls the rest (the service bench took 4 s or 28 s; see conftest.py).
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_ingest_search_bench_runs_on_tiny_input(tmp_path, database_url):
    out = tmp_path / "r.json"
    result = _bench(
        "ingest_search.py",
        out,
        "--data",
        str(GALLERY),
        "--limit",
        "3",
        "--workers",
        "1",
        "--runtimes",
        "dlib",
        "onnx",
        "--probes",
        "2",
    )
    assert result["machine"]["cores"] >= 1 and "command" in result
    assert [(r["runtime"], r["images"]) for r in result["runs"]] == [("dlib", 3), ("onnx", 3)]
    assert all(r["search"]["probes"] == 2 for r in result["runs"])
    # Same images, same faces: the runtimes differ in speed only.
    assert result["runs"][0]["faces"] == result["runs"][1]["faces"] > 0
    assert set(result["stages"]["onnx"]) == {
        "decode_ms",
        "detect_ms",
        "align_ms",
        "embed_ms",
        "store_ms",
        "index_ms",
        "rest_ms",
    }
    # Storing three images takes measurable time; adding three vectors may round to nothing.
    assert all(r["store_s"] > 0 and r["index_s"] >= 0 for r in result["runs"])


def test_models_bench_runs_on_tiny_input(tmp_path):
    out = tmp_path / "m.json"
    result = _bench(
        "models.py",
        out,
        "--data",
        str(GALLERY),
        "--photos",
        str(GALLERY),
        "--faces",
        "2",
        "--photo-count",
        "1",
        "--seconds",
        "0.01",
        "--sizes",
        "250x250",
        "--batches",  # dlib embeds about 18 faces/s here: batch 128 alone took 14 s
        "1",
        "4",
    )
    assert result["descriptor"]["faces"] == 2
    assert set(result["descriptor"]) == {"faces", "max_abs_difference", "batch_1", "batch_4"}
    assert result["descriptor"]["max_abs_difference"] <= 1e-4
    assert set(result["detector_ms_per_image_upsample0"]) == {"250x250"}
    assert 0.4 < result["descriptor_gflop_per_face"] < 0.7


def test_video_bench_runs_on_tiny_input(tmp_path):
    out = tmp_path / "v.json"
    clip = ROOT / "tests" / "fixtures" / "video" / "short_hamilton_clip.mp4"
    result = _bench(
        "video.py",
        out,
        "--video",
        str(clip),
        "--gallery",
        str(ROOT / "tests" / "fixtures" / "video" / "lin_manuel_miranda.jpg"),
        "--workers",
        "1",
        "--fps",
        "1",
    )
    run = result["runs"][0]
    assert run["frames_sampled"] == 10 and run["video"]["width"] == 640
    assert run["search"]["timeline_entries"] >= 1 and run["ingest"]["faces_stored"] >= 1


def test_index_bench_runs_on_tiny_input(tmp_path):
    result = _bench(
        "index.py",
        tmp_path / "i.json",
        "--data",
        str(GALLERY.parent),
        "--templates",
        str(tmp_path / "templates.npz"),
        "--sizes",
        "400",
        "--backends",
        "faiss-flat",
        "qdrant-local",
        "--queries",
        "3",
        "--workdir",
        str(tmp_path),
    )
    assert [(r["backend"], r["gallery"]) for r in result["runs"]] == [
        ("faiss-flat", 400),
        ("qdrant-local", 400),
    ]
    # Both are exact at this size: recall against exact search is 1.
    assert all(r["filter_none"]["recall_at_10"] == 1.0 for r in result["runs"])
    assert all(r["filter_narrow"]["recall_at_1"] == 1.0 for r in result["runs"])
    assert (tmp_path / "templates.npz").is_file()


def test_index_encrypted_bench_runs_on_tiny_input(tmp_path):
    result = _bench(
        "index_encrypted.py",
        tmp_path / "e.json",
        "--data",
        str(GALLERY.parent),
        "--templates",
        str(tmp_path / "templates.npz"),
        "--size",
        "400",
        "--queries",
        "3",
        "--erasures",
        "2",
        "--workdir",
        str(tmp_path),
    )
    encrypted, memmap = result["encrypted_in_ram"], result["memmap"]
    assert result["describe"]["storage"].startswith("RAM; AES-256-GCM")
    assert encrypted["files"] >= 2 and encrypted["load_unseal_verify_s"] >= 0
    assert encrypted["filter_none"]["recall_at_10"] == memmap["filter_none"]["recall_at_10"] == 1
    assert result["capacity_10m"]["computed_not_measured"] is True
    assert not list(tmp_path.glob("fw-bench-encrypted-*"))  # its work directory is removed


def test_index_bench_sweeps_pgvector_ef_search(tmp_path, pg_server):
    result = _bench(
        "index.py",
        tmp_path / "p.json",
        "--data",
        str(GALLERY.parent),
        "--templates",
        str(tmp_path / "templates.npz"),
        "--sizes",
        "300",
        "--backends",
        "pgvector",
        "--queries",
        "3",
        "--ef-searches",
        "10",
        "40",
        "--pg-uri",
        pg_database_url(pg_server),
    )
    run = result["runs"][0]
    assert run["backend"] == "pgvector" and run["gallery"] == 300
    assert sorted(run["ef_search_sweep"]) == ["10", "40"]
    assert all(
        0 <= m["recall_at_10"] <= 1 and m["p50_ms"] > 0 for m in run["ef_search_sweep"].values()
    )


def test_storage_bench_runs_on_tiny_input(tmp_path):
    result = _bench(
        "storage.py", tmp_path / "s.json", "--data", str(GALLERY), "--limit", "3", "--workers", "1"
    )
    with_crops, without = result["runs"]
    assert with_crops["faces"] == without["faces"] == 3
    # An encrypted 128-d float32 template is at least its 512 plaintext bytes.
    assert with_crops["mean_template_ciphertext_bytes"] >= 512
    assert with_crops["mean_crop_ciphertext_bytes"] > 0 == without["mean_crop_ciphertext_bytes"]
    assert with_crops["table_bytes"]["face_crops"] > without["table_bytes"]["face_crops"]


def test_service_bench_runs_on_tiny_input(tmp_path):
    result = _bench(
        "service.py",
        tmp_path / "v.json",
        "--data",
        str(GALLERY.parent),
        "--templates",
        str(tmp_path / "t.npz"),
        "--size",
        "50",
        "--queries",
        "3",
    )
    assert result["gallery"] == 50 and result["queries"] == 3
    assert result["raw_index_search"]["p50_ms"] > 0 < result["service_match"]["p50_ms"]
    # The database's re-check keeps the index's nearest face first wherever it is a match.
    assert result["top1_agrees_with_index"] in (None, 1.0)
    assert result["subject_rights"]["queries"] == 1
    assert result["subject_rights"]["exact_candidate_search"]["p50_ms"] > 0


def test_cli_help_bench_runs_on_tiny_input(tmp_path):
    exe = str(Path(sys.executable).with_name("facewarden"))
    result = _bench("cli_help.py", tmp_path / "r.json", "--a", exe, "--b", exe, "--repeat", "1")
    assert len(result["a_help_s"]) == len(result["b_help_s"]) == 1
    assert result["a_help_s_median"] > 0 and result["b_help_s_median"] > 0
