"""Shared helpers for the benchmark scripts: machine facts and result files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from facewarden.evaluation.provenance import machine as base_machine


def machine() -> dict[str, object]:
    import dlib
    import faiss

    return base_machine() | {
        "python": platform.python_version(),
        "dlib": dlib.__version__,
        "faiss": faiss.__version__,
    }


def priority() -> dict[str, object]:
    """This process's CPU priority: its nice value and, where Linux groups processes by
    session (autogroup), its group's. A bench run at the highest priority on a machine others
    are using gets the cores as on an idle one (``setsid bash -c 'echo -19 >
    /proc/self/autogroup; exec nice -n -19 COMMAND'``, as root)."""
    found: dict[str, object] = {"nice": os.nice(0)}
    with contextlib.suppress(OSError):
        found["autogroup"] = Path("/proc/self/autogroup").read_text().strip()
    return found


def write_result(path: Path, result: dict[str, object]) -> None:
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "priority": priority(),
    } | result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def bench_app(settings, *, purpose: str, jurisdiction: str, retention: str):
    """A new facewarden in ``settings.data_dir``: admin ``bench`` and the source ``bench``.
    Returns (app, actor)."""
    from facewarden.services.app import Facewarden

    fw, _ = Facewarden.init(settings, admin_name="bench")
    actor = fw.actor(name="bench")
    fw.sources.add(
        actor,
        "bench",
        lawful_basis="benchmark",
        purpose=purpose,
        jurisdiction=jurisdiction,
        retention=retention,
    )
    return fw, actor


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
