"""Load on a real server over loopback: search throughput and latency (p50, p99) at 1, 4, 16
and 32 concurrent clients, the same with a concurrent upload ingest, and the same with huge and
truncated probes kept in flight.

    .venv/bin/python bench/load.py --label "idle 2-core machine" --out bench/results/load.json

A fresh data directory gets the gallery (default: the test fixtures' five faces), a case with
a large quota and one investigator; then ``facewarden serve`` runs on 127.0.0.1 with a rate
limit high enough not to interfere. Each level sends at most ``--requests`` searches from N
client threads and starts none after ``--level-seconds``; a client answered 503 waits for the
Retry-After the server gave and tries again (counted, and in the latency). Each ingest level
starts its own upload of ``--ingest-images`` photos; each hostile level keeps ``--hostile``
probes (a 7000x7000 JPEG and the same truncated to a third) in flight. The load average is
recorded per level: on a shared machine compare within a run. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import percentile, write_result

from facewarden.config import Settings
from facewarden.services.app import Facewarden

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(data_dir: Path, gallery: Path) -> tuple[str, str]:
    """Gallery, case LOAD-1 and investigator 'ines'; returns her token and the admin's."""
    fw, admin_token = Facewarden.init(Settings(data_dir=data_dir, workers=1), admin_name="admin")
    admin = fw.actor(name="admin")
    fw.sources.add(
        admin, "press", lawful_basis="bench", purpose="bench", jurisdiction="DE", retention="1y"
    )
    fw.ingest.run(admin, [gallery], "press")
    token = fw.users.add(admin, "ines", ["investigator"])
    fw.cases.open(
        admin,
        "LOAD-1",
        purpose="load test",
        legal_basis="bench",
        authorisation="bench",
        investigators=["ines"],
        quota=1_000_000,
    )
    fw.close()
    return token, admin_token


def jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def hostile_probes(probe: Path) -> list[bytes]:
    """The issue's probes: a 7000x7000 JPEG and the same truncated to a third."""
    with Image.open(probe) as img:
        huge = jpeg(img.convert("RGB").resize((7000, 7000)), 60)
    return [huge, huge[: len(huge) // 3]]


class Runner:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.local = threading.local()

    def client(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=600
            )
        return self.local.client

    def search(self, data: bytes) -> tuple[float, int, int]:
        """(seconds until answered 200 or failed, final status, 503 retries)."""
        started, retries = time.perf_counter(), 0
        while True:
            r = self.client().post(
                "/api/v1/search",
                data={"case": "LOAD-1"},
                files={"image": ("probe.jpg", data, "image/jpeg")},
            )
            if r.status_code != 503 or retries >= 50:
                return time.perf_counter() - started, r.status_code, retries
            retries += 1
            time.sleep(float(r.headers.get("Retry-After", "1")))


def level(
    runner: Runner, probe: bytes, clients: int, requests: int, seconds: float
) -> dict[str, object]:
    """``requests`` searches from ``clients`` threads; none is started after ``seconds``."""
    started = time.perf_counter()
    deadline = started + seconds
    load_before = os.getloadavg()[0]

    def one(_: int) -> tuple[float, int, int] | None:
        return runner.search(probe) if time.perf_counter() < deadline else None

    with ThreadPoolExecutor(clients) as pool:
        done = [r for r in pool.map(one, range(requests)) if r is not None]
    wall = time.perf_counter() - started
    ok = [s for s, code, _ in done if code == 200]
    return {
        "clients": clients,
        "requests": requests,
        "sent": len(done),
        "stopped_by_time": len(done) < requests,
        "ok": len(ok),
        "errors": sorted({code for _, code, _ in done if code != 200}),
        "retries_503": sum(r for _, _, r in done),
        "seconds": round(wall, 2),
        "searches_per_s": round(len(ok) / wall, 2),
        "p50_ms": round(percentile(ok, 50) * 1000),
        "p99_ms": round(percentile(ok, 99) * 1000),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def with_hostile(
    runner: Runner,
    probe: bytes,
    hostile: list[bytes],
    count: int,
    clients: int,
    requests: int,
    seconds: float,
) -> dict[str, object]:
    """``count`` hostile probes kept in flight (each attacker sends its next one as soon as
    the last is answered, after the Retry-After of a 503) while ``clients`` threads send
    ``requests`` small searches (503s retried, as in :func:`level`)."""
    stop = threading.Event()
    hostile_times: list[tuple[float, int]] = []

    def attacker(n: int) -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r = runner.client().post(
                    "/api/v1/search",
                    data={"case": "LOAD-1"},
                    files={"image": ("huge.jpg", hostile[n % len(hostile)], "image/jpeg")},
                )
            except httpx.TransportError:
                continue
            hostile_times.append((time.perf_counter() - t0, r.status_code))
            if r.status_code == 503:
                stop.wait(float(r.headers.get("Retry-After", "1")))

    threads = [threading.Thread(target=attacker, args=(n,), daemon=True) for n in range(count)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # let them get in flight
    small = level(runner, probe, clients, requests, seconds)
    stop.set()
    for t in threads:
        t.join(600)
    statuses = [c for _, c in hostile_times]
    return {
        "hostile_in_flight": count,
        **{f"small_{k}": v for k, v in small.items()},
        "hostile_requests": len(hostile_times),
        "hostile_status": {str(c): statuses.count(c) for c in sorted(set(statuses))},
        "hostile_p50_ms": round(percentile([s for s, _ in hostile_times], 50) * 1000),
    }


def start_ingest(url: str, token: str, probe: Path, images: int, offset: int) -> str:
    """An upload of ``images`` distinct photos (``offset`` makes each upload new) as a
    background ingest job; returns its id."""
    with Image.open(probe) as img:
        rgb = img.convert("RGB")
    files = []
    for n in range(offset, offset + images):
        rgb.paste((n * 37 % 256, n * 91 % 256, n // 256 % 256), (0, 0, 8, 8))
        files.append(("files", (f"ingest{n}.jpg", jpeg(rgb), "image/jpeg")))
    r = httpx.post(
        url + "/api/v1/ingest",
        headers={"Authorization": f"Bearer {token}"},
        data={"source": "press"},
        files=files,
        timeout=600,
    )
    r.raise_for_status()
    return r.json()["job_id"]


def job_state(url: str, token: str, job: str) -> dict[str, object]:
    r = httpx.get(
        f"{url}/api/v1/jobs/{job}", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    state = r.json()
    return {"state": state["state"], "done": state["done"], "total": state["total"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gallery", type=Path, default=FIXTURES / "gallery")
    parser.add_argument("--probe", type=Path, default=FIXTURES / "probes" / "obama1.jpg")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument(
        "--ingest-clients", type=int, nargs="+", default=None, help="default: --clients"
    )
    parser.add_argument(
        "--hostile-clients", type=int, nargs="+", default=None, help="default: --clients"
    )
    parser.add_argument("--requests", type=int, default=64, help="searches per level")
    parser.add_argument(
        "--level-seconds", type=float, default=120.0, help="no search starts after this"
    )
    parser.add_argument("--hostile", type=int, default=4, help="huge probes in flight")
    parser.add_argument("--ingest-images", type=int, default=60, help="per ingest level")
    parser.add_argument("--search-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--label", default="", help="how the machine was, e.g. 'shared, busy' (recorded)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="facewarden-load-") as tmp:
        data_dir = Path(tmp) / "data"
        token, admin_token = prepare(data_dir, args.gallery)
        port = free_port()
        env = os.environ | {
            "FACEWARDEN_DATA_DIR": str(data_dir),
            "FACEWARDEN_SEARCH_RATE_LIMIT": "1000000/minute",
            "FACEWARDEN_SEARCH_WORKERS": str(args.search_workers),
            "FACEWARDEN_RETENTION_INTERVAL_MINUTES": "0",
        }
        exe = Path(sys.executable).with_name("facewarden")
        log = (Path(tmp) / "server.log").open("w")
        server = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            runner = Runner(url, token)
            probe = args.probe.read_bytes()
            for _ in range(2 * args.search_workers):  # warm every worker's models
                runner.search(probe)
            n = args.requests
            t = args.level_seconds
            levels = [level(runner, probe, c, n, t) for c in args.clients]
            during_ingest = []
            for i, c in enumerate(args.ingest_clients or args.clients):
                job = start_ingest(
                    url, admin_token, args.probe, args.ingest_images, i * args.ingest_images
                )
                result = level(runner, probe, c, n, t)
                result["ingest_at_end"] = job_state(url, admin_token, job)
                during_ingest.append(result)
                while job_state(url, admin_token, job)["state"] in ("queued", "running"):
                    time.sleep(0.5)  # the next level starts with a fresh ingest
            hostile = hostile_probes(args.probe)
            with_hostile_levels = [
                with_hostile(runner, probe, hostile, args.hostile, c, n, t)
                for c in (args.hostile_clients or args.clients)
            ]
        finally:
            server.terminate()
            server.wait(60)

    def rate(rows: list[dict[str, object]], clients: int, key: str = "searches_per_s"):
        return next((float(x[key]) for x in rows if x.get("clients") == clients), None)

    one, sixteen = rate(levels, 1), rate(levels, 16)
    small_p99 = [int(x["small_p99_ms"]) for x in with_hostile_levels]
    write_result(
        args.out,
        {
            "label": args.label,
            "search_workers": args.search_workers,
            "probe": str(
                args.probe.relative_to(ROOT) if args.probe.is_relative_to(ROOT) else args.probe
            ),
            "levels": levels,
            "during_ingest": during_ingest,
            "with_hostile_probes": with_hostile_levels,
            "speedup_16_vs_1": round(sixteen / one, 2) if one and sixteen else None,
            "goals": {
                "speedup_16_vs_1_at_least_1.7": (sixteen / one >= 1.7) if one and sixteen else None,
                "small_p99_under_1s_with_hostile_in_flight": {
                    str(x["small_clients"]): int(x["small_p99_ms"]) < 1000
                    for x in with_hostile_levels
                },
            },
            "small_p99_ms_with_hostile": small_p99,
        },
    )


if __name__ == "__main__":
    main()
