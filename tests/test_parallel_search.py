"""The server analyses probes in a pool of worker processes with bounded admission: beyond
the workers and the queue a search is answered 503 with Retry-After at once (no quota used,
no 500); a worker that dies is replaced."""

from __future__ import annotations

import io
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from PIL import Image
from webserver import running_server

from conftest import PROBES

pytestmark = pytest.mark.slow  # a real server with its search worker processes


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(
        tmp_path_factory.mktemp("parallel"),
        pipeline,
        FACEWARDEN_SEARCH_WORKERS="2",
        FACEWARDEN_SEARCH_QUEUE="1",
        FACEWARDEN_SEARCH_RATE_LIMIT="100000/minute",
    ) as s:
        yield s


def crowd_photo() -> bytes:
    """A 1600x1200 photo of several faces: a second or so of detection per probe."""
    canvas = Image.new("RGB", (1600, 1200), (90, 100, 110))
    for n, name in enumerate(["obama1.jpg", "alex_lacamoire1.jpg", "obama_and_biden.jpg"]):
        with Image.open(PROBES / name) as img:
            img = img.convert("RGB")
            img.thumbnail((800, 600))
            canvas.paste(img, ((n % 2) * 800, (n // 2) * 600))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def search(server, data: bytes, case: str = "CASE-1"):
    return server.client("ines").post(
        "/api/v1/search", data={"case": case}, files={"image": ("p.jpg", data, "image/jpeg")}
    )


def server_process(server) -> psutil.Process:
    port = server.url.rsplit(":", 1)[1]
    for p in psutil.Process().children(recursive=True):
        if "serve" in p.cmdline() and port in p.cmdline():
            return p
    raise AssertionError("server process not found")


def probe_workers(server) -> list[psutil.Process]:
    return [
        p
        for p in server_process(server).children()
        if "resource_tracker" not in " ".join(p.cmdline())
    ]


def test_searches_run_in_worker_processes_and_match(server):
    r = search(server, (PROBES / "obama1.jpg").read_bytes())
    assert r.status_code == 200, r.text
    assert "obama" in r.json()["faces"][0]["candidates"][0]["media_path"]
    assert len(probe_workers(server)) == 3  # two for searches, one for large probes


def huge_photo() -> bytes:
    """A 4000x3000 photo (12 MP): analysed by the large-probe lane."""
    with Image.open(PROBES / "obama1.jpg") as img:
        big = img.convert("RGB").resize((4000, 3000))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def test_large_probes_have_their_own_lane(server):
    """With the large-probe lane full (one worker, two waiting), small searches are still
    answered: huge photos cannot hold up every search behind them."""
    huge, small = huge_photo(), (PROBES / "obama1.jpg").read_bytes()
    with ThreadPoolExecutor(8) as pool:
        heavy = [pool.submit(search, server, huge) for _ in range(6)]
        time.sleep(0.5)
        light = [search(server, small) for _ in range(3)]
        heavy_codes = [f.result().status_code for f in heavy]
    assert [r.status_code for r in light] == [200, 200, 200], [r.text for r in light]
    assert set(heavy_codes) <= {200, 503} and 200 in heavy_codes, heavy_codes
    if 503 in heavy_codes:
        refused = next(f.result() for f in heavy if f.result().status_code == 503)
        assert "large-probe" in refused.json()["error"]["message"]


def test_a_full_queue_answers_503_with_retry_after_and_uses_no_quota(server):
    before = server.client().get("/api/v1/cases/CASE-1").json()["searches"]
    data = crowd_photo()
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: search(server, data), range(12)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    for a in answers:
        if a.status_code == 503:
            assert a.json()["error"]["code"] == "busy"
            assert int(a.headers["Retry-After"]) >= 1
    after = server.client().get("/api/v1/cases/CASE-1").json()["searches"]
    assert after - before == codes.count(200)


def test_a_killed_worker_is_replaced(server):
    victim = probe_workers(server)[0]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    codes = [search(server, (PROBES / "obama1.jpg").read_bytes()).status_code for _ in range(3)]
    assert set(codes) <= {200, 503} and codes[-1] == 200, codes
    assert "Traceback" not in server.log.read_text()
