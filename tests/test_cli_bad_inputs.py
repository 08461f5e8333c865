"""Every CLI command fed its bad inputs answers with one line, ``error [code]: message`` (or
the command line's own usage error), exit 1, 2 or 3, and never a Python traceback."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from webserver import facewarden_command

from facewarden.services.app import Facewarden

from conftest import (
    GALLERY,
    PG_ADMIN_URL,
    PROBES,
    _pg_database,
    add_source,
    make_settings,
    open_case,
    run_batch,
)

pytestmark = pytest.mark.slow

BIG = str(2**40)
HUGE = "9" * 30
LONG = "x" * 5000


def bad_inputs(tmp: Path) -> list[list[str]]:
    empty = tmp / "empty.jpg"
    empty.write_bytes(b"")
    junk = tmp / "junk.jpg"
    junk.write_bytes(os.urandom(3000))
    fake_video = tmp / "fake.mp4"
    fake_video.write_bytes(b"not a video at all" * 100)
    anchors = tmp / "anchors.jsonl"
    anchors.write_text("{not json\n")
    folder = tmp / "folder.jpg"
    folder.mkdir()
    missing = str(tmp / "missing.jpg")
    probe = str(PROBES / "obama1.jpg")
    return [
        # search and verify
        ["search", missing, "--case", "CASE-1"],
        ["search", str(folder), "--case", "CASE-1"],
        ["search", str(empty), "--case", "CASE-1"],
        ["search", str(junk), "--case", "CASE-1"],
        ["search", str(fake_video), "--case", "CASE-1"],
        ["search", probe],
        ["search", probe, "--case", "NOPE"],
        ["search", probe, "--case", LONG],
        ["search", probe, "--case", "CASE-1", "--top", "0"],
        ["search", probe, "--case", "CASE-1", "--top", HUGE],
        ["search", probe, "--case", "CASE-1", "--threshold", "nan"],
        ["search", probe, "--case", "CASE-1", "--threshold", "-1"],
        ["search", probe, "--case", "CASE-1", "--threshold", "inf"],
        ["search", str(GALLERY / "missing.mp4"), "--case", "CASE-1"],
        ["search", str(fake_video), "--case", "CASE-1", "--fps", "0"],
        ["search", str(fake_video), "--case", "CASE-1", "--fps", "1e308"],
        ["verify", missing, probe],
        ["verify", str(empty), probe],
        ["verify", probe, str(junk), "--threshold", "nan"],
        ["verify", probe, probe, "--threshold", "nan"],
        # ingest, redact, delete
        ["ingest", probe, "--source", "nope"],
        ["ingest", probe, "--source", "press", "--workers", "0"],
        ["ingest", probe, "--source", "press", "--workers", "100000"],
        ["ingest", probe, "--source", LONG],
        ["redact", missing, "--out", str(tmp / "out.jpg")],
        ["redact", str(junk), "--out", str(tmp / "out.jpg")],
        ["redact", probe, "--out", "/nonexistent/dir/out.jpg"],
        ["delete"],
        ["delete", "--media", "0", "--yes"],
        ["delete", "--media", BIG, "--yes"],
        ["delete", "--media", "-1", "--yes"],
        ["delete", "--source", "nope", "--yes"],
        # sources and cases
        ["source", "add", "", "--lawful-basis", "b", "--purpose", "p", "--jurisdiction", "DE",
         "--retention", "1y"],
        ["source", "add", "s", "--lawful-basis", "b", "--purpose", "p", "--jurisdiction", "XXX",
         "--retention", "1y"],
        ["source", "add", "s", "--lawful-basis", "b", "--purpose", "p", "--jurisdiction", "DE",
         "--retention", "1000000w"],
        ["source", "add", LONG, "--lawful-basis", "b", "--purpose", "p", "--jurisdiction", "DE",
         "--retention", "1y"],
        ["case", "open", "", "--purpose", "p", "--legal-basis", "b", "--authorisation", "a"],
        ["case", "open", LONG, "--purpose", "p", "--legal-basis", "b", "--authorisation", "a"],
        ["case", "open", "C", "--purpose", "p", "--legal-basis", "b", "--authorisation", "a",
         "--quota", BIG],
        ["case", "open", "C", "--purpose", "p", "--legal-basis", "b", "--authorisation", "a",
         "--quota", "0"],
        ["case", "open", "C", "--purpose", "p", "--legal-basis", "b", "--authorisation", "a",
         "--expires", "9999y"],
        ["case", "open", "C", "--purpose", "p", "--legal-basis", "b", "--authorisation", "a",
         "--investigator", "nobody"],
        ["case", "show", "NOPE"],
        ["case", "close", "NOPE"],
        ["case", "assign", "CASE-1", "nobody"],
        ["case", "assign", "NOPE", LONG],
        ["case", "export", "NOPE"],
        ["case", "candidates", "NOPE"],
        ["confirm", "0", "0"],
        ["confirm", BIG, "1"],
        ["reject", "-1", "-1"],
        ["confirm", "abc", "1"],
        ["confirm", "1", "1", "--note", LONG * 3],
        # audit, users, media, purge, subjects, index
        ["audit", "export", "--since", "0001-01-01T00:00:00"],
        ["audit", "export", "--since", "yesterday"],
        ["audit", "export", "--format", "xml"],
        ["audit", "verify", "--anchor", missing],
        ["audit", "verify", "--anchor", str(anchors)],
        ["audit", "anchor", "--out", "/nonexistent/dir/a.jsonl"],
        ["user", "add", "", "--role", "investigator"],
        ["user", "add", "bob", "--role", "superuser"],
        ["user", "add", LONG, "--role", "investigator"],
        ["media", "restrict", "0"],
        ["media", "restrict", BIG],
        ["purge"],
        ["purge", "--jurisdiction", "XXX", "--yes"],
        ["purge", "--source", "nope", "--yes"],
        ["retention", "run", "--bogus"],
        ["subject", "access", missing],
        ["subject", "access", str(junk)],
        ["subject", "access", probe, "--threshold", "0"],
        ["subject", "access", probe, "--reference", LONG],
        ["subject", "erase", str(empty), "--yes"],
        ["subject", "erase", probe, "--face", BIG, "--yes"],
        ["subject", "receipts", "--limit", "0"],
        ["subject", "receipts", "--limit", HUGE],
        ["subject", "receipts", "--before-seq", BIG],
        ["subject", "receipts", "--kind", "bogus"],
        ["subject", "receipts", "--reference", LONG],
        ["index", "migrate", "--to", "nope"],
        ["nosuchcommand"],
    ]  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory, pipeline):
    db = _pg_database() if PG_ADMIN_URL else None
    database_url = next(db) if db else None
    root = tmp_path_factory.mktemp("cli-bad")
    settings = make_settings(root / "data", database_url)
    fw, _ = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    admin = fw.actor(name="admin")
    add_source(fw, admin)
    fw.ingest.run(admin, [GALLERY], "press")
    open_case(fw, admin)
    fw.close()
    environ = os.environ | {"FACEWARDEN_DATA_DIR": str(settings.data_dir)}
    environ.pop("FACEWARDEN_DEBUG", None)
    if database_url:
        environ["FACEWARDEN_DATABASE_URL"] = database_url
    yield environ, root
    if db:
        next(db, None)


REAL_EVERY = 10
"""Every tenth bad input also runs as its own ``facewarden`` process (see below)."""


def problem(shown: str, code: object, stdout: str, stderr: str) -> str | None:
    if "Traceback" in stderr or "Traceback" in stdout:
        return f"{shown}: traceback\n{stderr[-1500:]}"
    if "error [internal]" in stderr:
        return f"{shown}: not recognised as bad input\n{stderr[-600:]}"
    if code not in (1, 2, 3):
        return f"{shown}: exit {code}\n{stdout[-300:]}{stderr[-300:]}"
    if "error [" not in stderr and "Usage:" not in stderr and code != 1:
        return f"{shown}: no error line\n{stderr[-300:]}"
    return None


def test_no_command_prints_a_traceback(env):
    """Each bad input runs through the CLI's entry point (``main``), in two processes that
    run their share one after the other (tests/cli_batch.py: a process per input cost about
    a second each in start-up and model loading); every tenth also runs as a real
    ``facewarden`` process of its own, which must exit as its in-process run did."""
    environ, root = env
    tmp = root / "inputs"
    tmp.mkdir()
    inputs = [["--as", "admin", *args] for args in bad_inputs(tmp)]
    real = inputs[::REAL_EVERY]

    def process(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*facewarden_command(), *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    with ThreadPoolExecutor(2) as pool:
        shares = [pool.submit(run_batch, environ, inputs[n::2]) for n in (0, 1)]
        processes = list(pool.map(process, real))
        ran = [r for share in shares for r in share.result()]
    problems = []
    for r in ran:
        shown = " ".join(a[:40] for a in r.args)
        problems.append(problem(shown, r.returncode, r.stdout, r.stderr))
    codes = {tuple(r.args): r.returncode for r in ran}
    for args, r in zip(real, processes, strict=True):
        shown = "process: " + " ".join(a[:40] for a in args)
        problems.append(problem(shown, r.returncode, r.stdout, r.stderr))
        if r.returncode != codes[tuple(args)]:
            problems.append(f"{shown}: exit {r.returncode}, in process {codes[tuple(args)]}")
    problems = [p for p in problems if p]
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("FACEWARDEN_INGEST_HOG_SCALE", "0", "greater than or equal to 1"),
        ("FACEWARDEN_INGEST_HOG_SCALE", "nan", "finite number"),
        ("FACEWARDEN_INGEST_HOG_SCALE", "abc", "valid number"),
        ("FACEWARDEN_INGEST_DETECTOR", "HOG", "'same', 'hog', 'cnn' or 'hybrid'"),
        ("FACEWARDEN_DETECTOR", "sift", "'hog', 'cnn' or 'hybrid'"),
    ],
)
def test_a_bad_setting_is_named_as_the_operator_sets_it(tmp_path, variable, value, says):
    """Not ``error [internal]: ValidationError ... errors.pydantic.dev``: the variable, its
    value and what is wrong, exit 2 (ingest and serve alike)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEWARDEN_")}
    env |= {"FACEWARDEN_DATA_DIR": str(tmp_path / "data"), variable: value}
    for args in (["ingest", str(tmp_path), "--source", "s"], ["serve", "--port", "1"]):
        out = subprocess.run(
            [*facewarden_command(), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 2, out
        text = " ".join(out.stderr.split())
        assert text.startswith(f"error [configuration]: bad setting: {variable}={value!r}"), text
        assert says in text and "Traceback" not in text and "pydantic.dev" not in text
