"""bench/load.py runs on a tiny input (speed itself is never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent


def test_load_bench_runs_on_tiny_input(tmp_path, settings):
    if settings.database_url:
        pytest.skip("the load bench runs on its own SQLite data directory")
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--clients", "1", "2",
         "--requests", "2", "--hostile", "1", "--ingest-images", "2",
         "--search-workers", "1", "--label", "test", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for rows in ("levels", "during_ingest"):
        assert [lvl["clients"] for lvl in result[rows]] == [1, 2]
        assert all(lvl["ok"] == 2 and not lvl["errors"] for lvl in result[rows])
    hostile = result["with_hostile_probes"]
    assert [h["small_clients"] for h in hostile] == [1, 2]
    assert all(h["small_ok"] == 2 and h["hostile_requests"] >= 1 for h in hostile)
    assert result["label"] == "test" and "goals" in result
    assert result["machine"]["cores"] >= 1 and "command" in result
