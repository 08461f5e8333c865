"""The benchmark scripts run on a tiny input (speed itself is never asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import GALLERY

ROOT = Path(__file__).parent.parent


def test_ingest_search_bench_runs_on_tiny_input(tmp_path, database_url):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ingest_search.py"),
            "--data",
            str(GALLERY),
            "--limit",
            "3",
            "--workers",
            "1",
            "2",
            "--probes",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["machine"]["cores"] >= 1 and "command" in result
    assert [r["images"] for r in result["runs"]] == [3, 3]
    assert result["runs"][-1]["search"]["probes"] == 2


def test_video_bench_runs_on_tiny_input(tmp_path):
    out = tmp_path / "v.json"
    clip = ROOT / "tests" / "fixtures" / "video" / "short_hamilton_clip.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "video.py"),
            "--video",
            str(clip),
            "--gallery",
            str(ROOT / "tests" / "fixtures" / "video" / "lin_manuel_miranda.jpg"),
            "--workers",
            "1",
            "--fps",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    run = result["runs"][0]
    assert run["frames_sampled"] == 10 and run["video"]["width"] == 640
    assert run["search"]["timeline_entries"] >= 1 and run["ingest"]["faces_stored"] >= 1
