"""A CLI ingest of several files starts its worker processes before it opens the app, so
their start-up overlaps its own. The pool is the one the ingest then uses; when the ingest is
refused, or has too few images for it, the pool is shut down and no worker outlives the
command, nor a command killed while they start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest
from test_worker_lifecycle import EXIT_GRACE_S, kill_and_check, varied_images, wait_for_workers
from webserver import facewarden_command

from facewarden.services.workers import pipeline_pool, pool_started_early

from conftest import add_source

pytestmark = pytest.mark.slow  # starts worker pools and CLI ingests


def pool_workers(parent: psutil.Process, count: int) -> list[psutil.Process]:
    """``count`` worker processes of ``parent`` (not its resource tracker), once started."""
    end = time.monotonic() + 120
    while time.monotonic() < end:
        kids = [p for p in parent.children() if "resource_tracker" not in " ".join(p.cmdline())]
        if len(kids) >= count:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"no {count} worker processes appeared")


def is_worker(process: psutil.Process) -> bool:
    """A pool worker, once it runs Python (not yet: a fork of the parent, which is not to
    be stopped or signalled before it runs the worker or the resource tracker)."""
    try:
        return "spawn_main" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def test_the_ingest_takes_the_early_pool_and_one_not_taken_is_shut_down(settings):
    me = psutil.Process()
    with pool_started_early(2, settings, ingest=True):
        early = {p.pid for p in pool_workers(me, 2)}
        pool = pipeline_pool(2, settings, ingest=True)  # what the ingest asks for
        with pool:
            assert {pool.submit(os.getpid).result(timeout=120) for _ in range(8)} <= early
    with pool_started_early(2, settings, ingest=True):
        workers = pool_workers(me, 2)
        with pipeline_pool(2, settings) as other:  # other arguments (not ingest): its own
            assert other.submit(os.getpid).result(timeout=120) not in {p.pid for p in workers}
    _, alive = psutil.wait_procs(workers, timeout=60)  # they finish loading, then exit
    assert not alive


def test_an_ingest_of_fewer_images_than_early_workers_takes_them(settings):
    """``--workers 3`` and two images: the ingest asks for two workers. It takes the three
    started early rather than start two more beside them (five processes loading models,
    three of them idle to the end)."""
    me = psutil.Process()
    with pool_started_early(3, settings, ingest=True):
        early = {p.pid for p in pool_workers(me, 3)}
        more = pipeline_pool(4, settings, ingest=True)  # more than started: a pool of its own
        more.shutdown()  # (never given work: none of its processes started)
        with pipeline_pool(2, settings, ingest=True) as pool:  # the early pool, still there
            assert pool is not more
            assert {pool.submit(os.getpid).result(timeout=120) for _ in range(6)} <= early


def cli_env(fw, admin, settings) -> dict[str, str]:
    env = os.environ | {
        "FACEWARDEN_DATA_DIR": str(settings.data_dir),
        "FACEWARDEN_TOKEN": fw.users.rotate(admin),
    }
    if settings.database_url:
        env["FACEWARDEN_DATABASE_URL"] = settings.database_url
    return env


def ingest(env, folder, source: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*facewarden_command(), "ingest", str(folder), "--source", source, "--workers", "2",
         "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_a_refused_ingest_leaves_no_worker_and_an_accepted_one_uses_them(
    fw, admin, settings, tmp_path
):
    add_source(fw, admin)
    folder = tmp_path / "batch"
    varied_images(folder, 3)
    env = cli_env(fw, admin, settings)
    refused = ingest(env, folder, "no-such-source")
    parent, workers = psutil.Process(refused.pid), {}
    while refused.poll() is None:  # every descendant seen while the command runs
        try:
            workers |= {p.pid: p for p in parent.children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    out, err = refused.communicate(timeout=120)
    assert len(workers) >= 2  # the pool had started (and its resource tracker)
    assert refused.returncode == 2 and "error [" in err and "Traceback" not in err
    _, alive = psutil.wait_procs(list(workers.values()), timeout=EXIT_GRACE_S)
    assert not [p for p in alive if p.is_running()]
    accepted = ingest(env, folder, "press")
    out, err = accepted.communicate(timeout=300)
    assert accepted.returncode == 0, err
    summary = json.loads(out)
    assert summary["images"] == 3 and summary["faces"] >= 3


def test_a_command_killed_while_its_workers_start_leaves_none(fw, admin, settings, tmp_path):
    add_source(fw, admin)
    folder = tmp_path / "batch"
    varied_images(folder, 3)
    proc = ingest(cli_env(fw, admin, settings), folder, "press")
    try:
        parent = psutil.Process(proc.pid)
        kill_and_check(parent, wait_for_workers(parent, 2))  # before anything is stored
    finally:
        proc.kill()
        proc.communicate()


def test_ctrl_c_while_the_early_workers_start_does_not_kill_them(fw, admin, settings, tmp_path):
    """The terminal's Ctrl-C reaches the whole foreground group, the workers still starting
    (spawned first thing) included: they must not die of it, with a traceback, before they
    ignore it. Here each worker gets SIGINT the moment it appears; the ingest goes on."""
    add_source(fw, admin)
    folder = tmp_path / "batch"
    varied_images(folder, 3)
    proc = ingest(cli_env(fw, admin, settings), folder, "press")
    parent, signalled = psutil.Process(proc.pid), set()
    end = time.monotonic() + 120
    while len(signalled) < 2 and proc.poll() is None and time.monotonic() < end:
        for kid in parent.children():
            if kid.pid not in signalled and is_worker(kid):
                kid.send_signal(signal.SIGINT)
                signalled.add(kid.pid)
        time.sleep(0.001)
    out, err = proc.communicate(timeout=300)
    assert len(signalled) == 2
    assert "Traceback" not in err and proc.returncode == 0, err
    assert json.loads(out)["images"] == 3


def test_a_refused_ingest_does_not_wait_for_its_workers_to_start(fw, admin, settings, tmp_path):
    """A refused ingest's early workers have done no work: the command kills them rather
    than wait, at its exit, for them to finish loading the models. Here they never would
    (stopped as they appear, as on a machine too busy to run them): the command still ends
    with its error, and leaves none of them."""
    add_source(fw, admin)
    folder = tmp_path / "batch"
    varied_images(folder, 3)
    proc = ingest(cli_env(fw, admin, settings), folder, "no-such-source")
    parent, stopped = psutil.Process(proc.pid), {}
    end = time.monotonic() + 120
    while len(stopped) < 2 and proc.poll() is None and time.monotonic() < end:
        for kid in parent.children():
            if kid.pid not in stopped and is_worker(kid):
                kid.suspend()
                stopped[kid.pid] = kid
        time.sleep(0.001)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it waits for them for ever
        for kid in stopped.values():
            kid.kill()
        proc.kill()
        proc.communicate()
        raise
    assert len(stopped) == 2
    assert proc.returncode == 2 and "error [not_found]" in err and "Traceback" not in err
    _, alive = psutil.wait_procs(list(stopped.values()), timeout=EXIT_GRACE_S)
    assert not [p for p in alive if p.is_running()]


def test_early_workers_respect_the_ingest_bounds(settings, tmp_path, monkeypatch):
    """The CLI starts the workers before the ingest service checks the request: it must not
    start more than the service would run, nor any for a worker count it refuses (a typo,
    --workers 5000, would otherwise spawn 5000 processes before the refusal). Only
    ``early_workers``' decision is asked here: a context manager is not entered."""
    from contextlib import nullcontext

    from facewarden.cli.commands.sources import early_workers
    from facewarden.cli.context import state
    from facewarden.core.limits import MAX_WORKERS

    monkeypatch.setattr(state, "data_dir", settings.data_dir)
    monkeypatch.setattr(state, "server", None)
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(MAX_WORKERS + 2):
        (folder / f"{n}.jpg").write_bytes(b"")
    for refused in (MAX_WORKERS + 1, 10**6, 0, -3):
        assert isinstance(early_workers([folder], refused, None), nullcontext), refused


def test_no_more_early_workers_than_files(fw, admin, settings, tmp_path):
    """--workers 3 and two images: the service runs two workers; the CLI starts no third."""
    add_source(fw, admin)
    folder = tmp_path / "batch"
    varied_images(folder, 2)
    proc = subprocess.Popen(
        [*facewarden_command(), "ingest", str(folder), "--source", "no-such-source",
         "--workers", "3", "--json"],
        env=cli_env(fw, admin, settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    parent, seen = psutil.Process(proc.pid), set()
    while proc.poll() is None:
        try:
            seen |= {kid.pid for kid in parent.children() if is_worker(kid)}
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "error [not_found]" in err
    assert len(seen) == 2


def test_ctrl_c_to_the_whole_command_as_its_workers_start(fw, admin, settings, tmp_path):
    """The terminal's Ctrl-C, to the command and its workers, just as they start: the
    command ends as interrupted (130) with no traceback, and leaves no process."""
    add_source(fw, admin)
    folder = tmp_path / "batch"
    varied_images(folder, 3)
    proc = subprocess.Popen(
        [*facewarden_command(), "ingest", str(folder), "--source", "press", "--workers", "2",
         "--json"],
        env=cli_env(fw, admin, settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    parent = psutil.Process(proc.pid)
    end = time.monotonic() + 120
    while not any(is_worker(kid) for kid in parent.children()) and time.monotonic() < end:
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal signals its whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    end = time.monotonic() + EXIT_GRACE_S
    while session_of(proc.pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not session_of(proc.pid)


def session_of(sid: int) -> list[int]:
    """The processes still in session ``sid`` (the command's, with every process it started)."""
    left = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p.pid)
        except (OSError, psutil.Error):
            continue
    return left
