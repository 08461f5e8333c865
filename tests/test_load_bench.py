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
         "--requests", "2", "--hostile", "1", "--small", "1", "--ingest-images", "2",
         "--search-workers", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [lvl["clients"] for lvl in result["levels"]] == [1, 2]
    assert all(lvl["ok"] == 2 and not lvl["errors"] for lvl in result["levels"])
    assert result["with_hostile_probes"]["small_status"] == {"200": 1}
    assert result["machine"]["cores"] >= 1 and "command" in result
