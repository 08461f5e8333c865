"""Zero 5xx: Schemathesis drives the live OpenAPI (every operation, many generated requests,
stateful links), and a corpus of hostile images and archives, generated here, is posted to
every endpoint that takes media. Every answer must be below 500 and the server log must hold
no traceback."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from webserver import running_server

from conftest import GALLERY, PROBES

pytestmark = pytest.mark.slow

CLIP = Path(__file__).parent / "fixtures" / "video" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(
        tmp_path_factory.mktemp("fuzz"),
        pipeline,
        FACEWARDEN_SEARCH_RATE_LIMIT="1000000/minute",
        FACEWARDEN_SEARCH_WORKERS="2",
        # every hostile file is queued as an ingest job of its own (not refused as too many)
        FACEWARDEN_MAX_JOBS_PER_USER="1000",
    ) as s:
        yield s


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + data))
    return struct.pack(">I", len(data)) + kind + data + crc


def png_declaring(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (64, 64), (200, 150, 100)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def zipped(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def hostile_corpus() -> dict[str, bytes]:
    face = Image.open(PROBES / "obama1.jpg").convert("RGB")
    good = (GALLERY / "obama.jpg").read_bytes()
    big = encode(face.resize((7000, 4000)), "JPEG", quality=60)
    grey16 = Image.fromarray(np.asarray(face.convert("L")).astype(np.uint16) * 257)
    corpus = {
        "png-bomb.png": png_declaring(100_000, 100_000),
        "png-16bit-bomb.png": png_declaring(60_000, 60_000, depth=16, colour=0),
        "jpeg-claims-65535.jpg": jpeg_declaring(65_535, 65_535),
        "jpeg-claims-7000.jpg": jpeg_declaring(7000, 7000),
        "jpeg-huge-truncated.jpg": big[: len(big) // 3],
        "jpeg-truncated-header.jpg": good[:200],
        "jpeg-soi-only.jpg": b"\xff\xd8",
        "png-16bit.png": encode(grey16, "PNG"),
        "jpeg-cmyk.jpg": encode(face.convert("CMYK"), "JPEG"),
        "png-la.png": encode(face.convert("LA"), "PNG"),
        "png-palette-transparent.png": encode(face.convert("P"), "PNG", transparency=0),
        "gif-animated.gif": encode(face.convert("P"), "GIF", save_all=True,
                                   append_images=[face.convert("P")] * 3),
        "tiff-float.tiff": encode(Image.fromarray(np.asarray(face.convert("L"), np.float32)),
                                  "TIFF"),
        "webp.webp": encode(face, "WEBP"),
        "bmp-claims-huge.bmp": b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 50_000, 50_000, 1, 24, 0, 0, 0, 0, 0, 0),
        "random.jpg": np.random.default_rng(7).bytes(50_000),
        "empty.jpg": b"",
        "text.png": b"hello, this is text\n" * 100,
        "video-as-photo.jpg": CLIP.read_bytes()[:500_000],
        "x" * 300 + ".jpg": good,
        "unicode-名前-\u202e.jpg": good,
        "zip-bomb.zip": zipped([("bomb.jpg", b"\x00" * 20_000_000)]),
        "zip-traversal.zip": zipped([("../../etc/evil.jpg", good), ("/abs.jpg", good),
                                     ("C:\\win.jpg", good)]),
        "zip-dupes.zip": zipped([(f"same{n}.jpg", b"not an image") for n in range(300)]),
        "zip-nested.zip": zipped([("inner.zip", zipped([("a.jpg", good)]))]),
        "zip-broken.zip": b"PK\x03\x04" + b"\x00" * 100,
        "zip-long-names.zip": zipped([("d/" * 200 + "face.jpg", good)]),
        "zip-stored-big-member.zip": zipped([("big.jpg", big)], zipfile.ZIP_STORED),
    }  # fmt: skip
    return corpus


def test_hostile_corpus_gets_no_5xx(server):
    client = server.client()
    corpus = hostile_corpus()
    answers: list[tuple[str, str, int]] = []

    def post(path: str, name: str, files: dict, data: dict | None = None) -> None:
        r = client.post(path, files=files, data=data or {})
        answers.append((path, name, r.status_code))

    for name, body in corpus.items():
        media = "application/zip" if name.endswith(".zip") else "image/jpeg"
        upload = (name, body, media)
        post("/api/v1/search", name, {"image": upload}, {"case": "CASE-1"})
        post("/api/v1/search/video", name, {"video": upload}, {"case": "CASE-1"})
        post("/api/v1/verify", name, {"a": upload, "b": (name, body, media)})
        post("/api/v1/subjects/access", name, {"selfie": upload})
        post("/api/v1/subjects/erase/preview", name, {"selfie": upload})
        post("/api/v1/ingest", name, {"files": upload}, {"source": "press"})
    # Every ingest job ends with a state and no internal error.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        jobs = client.get("/api/v1/jobs").json()
        if all(j["state"] not in ("queued", "running") for j in jobs):
            break
        time.sleep(0.5)
    errors = [(path, name[:60], code) for path, name, code in answers if code >= 500]
    assert not errors, errors
    jobs = client.get("/api/v1/jobs").json()
    assert all(j["state"] in ("done", "failed", "cancelled") for j in jobs), jobs
    assert not [j for j in jobs if (j.get("error") or {}).get("code") == "internal"], jobs
    assert "Traceback" not in server.log.read_text()


def test_schemathesis_finds_no_server_error(server, tmp_path):
    st = Path(sys.executable).with_name("st")
    junit = tmp_path / "schemathesis.xml"
    run = subprocess.run(
        [
            str(st), "run", f"{server.url}/openapi.json",
            "--checks", "not_a_server_error",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", "60",
            "--seed", "20261129",
            "--request-timeout", "120",
            "--header", f"Authorization: Bearer {server.tokens['admin']}",
            "--report", "junit", "--report-junit-path", str(junit),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    report = junit.read_text()
    assert "/api/v1/search" in report and "/api/v1/audit/events" in report
    assert report.count("<testcase") >= 40, report[:2000]  # every operation was driven
    assert "Traceback" not in server.log.read_text()
