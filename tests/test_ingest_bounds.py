"""Bounded work per ingested image: detection on a reduced copy of a large image (faces still
found, boxes in the image's own pixels), a cap on faces per image with a note, bounded
archives, and a live server whose memory stays bounded while the worst inputs are posted."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from test_fuzz import hostile_corpus
from webserver import running_server

from facewarden.adapters.inputs import InputLimits, iter_inputs
from facewarden.adapters.models.registry import build_pipeline
from facewarden.core.limits import DETECT_MAX_PIXELS
from facewarden.core.pipeline import FacePipeline, detection_size, max_upsampling

from conftest import GALLERY, PROBES

MiB = 1024**2


def upscaled(path: Path, width: int, fmt: str = "JPEG") -> bytes:
    """A large real photo: ``path`` enlarged to ``width`` pixels wide."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        big = img.resize((width, round(img.height * width / img.width)), Image.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, fmt, quality=85)
    return buf.getvalue()


def rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


# -- the detection budget ------------------------------------------------------------------
def test_detection_size_counts_the_detectors_upsampling_and_its_retry(tmp_path):
    assert detection_size(1600, 1200, DETECT_MAX_PIXELS, 1) == (1600, 1200)
    w, h = detection_size(7000, 4000, DETECT_MAX_PIXELS, 1)
    assert w * h * 4 <= DETECT_MAX_PIXELS and abs(w / h - 7000 / 4000) < 0.01
    assert detection_size(7000, 4000, None, 1) == (7000, 4000)
    # A retry at one more upsampling quadruples the work: the budget counts it.
    from facewarden.config import Settings

    retrying = build_pipeline(
        Settings(data_dir=tmp_path, detector="hog", upsample=0, detector_retry=True)
    )
    assert max_upsampling(retrying.detector) == 1
    hog2 = Settings(data_dir=tmp_path, detector="hog", upsample=2, detector_retry=False)
    assert max_upsampling(build_pipeline(hog2).detector) == 2
    default = Settings(data_dir=tmp_path)
    expected = default.upsample + int(default.detector_retry)
    assert max_upsampling(build_pipeline(default).detector) == expected


def test_large_photo_faces_found_on_a_reduced_copy_in_the_photos_own_pixels(pipeline):
    small_data = (PROBES / "obama_and_biden.jpg").read_bytes()
    small = rgb(small_data)
    big = rgb(upscaled(PROBES / "obama_and_biden.jpg", 6000))
    bounded = FacePipeline(
        pipeline.detector,
        pipeline.aligner,
        pipeline.embedder,
        detect_max_pixels=DETECT_MAX_PIXELS,
    )
    reference = pipeline.process(small)
    out = bounded.process(big)
    assert out.detected_at is not None
    assert out.detected_at[0] * out.detected_at[1] * 4 <= DETECT_MAX_PIXELS
    assert len(out.faces) == len(reference.faces) >= 2
    factor = big.shape[1] / small.shape[1]
    for ref in reference.faces:
        # The same face, its box in the big photo's pixels (within 30%: the CNN's boxes snap to
        # its stride-8 grid at each size), and the same person's template.
        face = min(
            out.faces, key=lambda f: abs(f.detection.box.left - ref.detection.box.left * factor)
        )
        assert (
            abs(face.detection.box.left - ref.detection.box.left * factor)
            < 0.3 * face.detection.box.width
        )
        assert (
            abs(face.detection.box.width - ref.detection.box.width * factor)
            < 0.3 * face.detection.box.width
        )
        assert float(np.linalg.norm(face.descriptor - ref.descriptor)) < 0.4  # match: 0.6
    # Boxes returned for redaction are in the photo's pixels too.
    boxes = bounded.detect(big)
    assert sorted(b.box.left for b in boxes) == sorted(f.detection.box.left for f in out.faces)


def test_faces_per_image_are_capped_with_a_note(gallery_fw, admin, tmp_path):
    fw = gallery_fw
    shared = fw.pipeline  # the session's: this test's cap goes on a pipeline of its own
    fw.models._pipeline = FacePipeline(
        shared.detector, shared.aligner, shared.embedder, max_faces=1
    )
    fw.settings.max_image_faces = 1
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "pair.jpg").write_bytes((PROBES / "obama_and_biden.jpg").read_bytes())
    summary = fw.ingest.run(admin, [folder], "press", workers=1)
    assert summary.images == 1 and summary.faces == 1 and summary.faces_capped >= 1
    detected = summary.faces_capped + 1
    note = f"{detected} faces detected, the largest 1 kept, {detected - 1} not stored"
    assert any(note in n for n in summary.notes), summary.notes
    assert summary.as_dict()["faces_capped"] == detected - 1


# -- archives ------------------------------------------------------------------------------
def write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_archive_with_too_many_entries_is_refused_before_its_directory_is_read(tmp_path):
    archive = write_zip(tmp_path / "many.zip", [(f"{n}.jpg", b"x") for n in range(30)])
    items = list(iter_inputs([archive], InputLimits(1 << 20, 200, max_archive_members=10)))
    assert len(items) == 1 and items[0].error is not None
    assert items[0].error.code == "too_many_members"
    assert "30 entries" in items[0].error.message
    # At the limit it is read member by member.
    items = list(iter_inputs([archive], InputLimits(1 << 20, 200, max_archive_members=30)))
    assert len(items) == 30 and all(i.error is None for i in items)


def test_archive_members_beyond_the_expanded_bytes_are_skipped(tmp_path):
    good = (GALLERY / "obama.jpg").read_bytes()
    archive = write_zip(tmp_path / "big.zip", [(f"{n}.jpg", good) for n in range(3)])
    limits = InputLimits(1 << 20, 200, max_archive_bytes=2 * len(good) + 10)
    items = list(iter_inputs([archive], limits))
    assert [i.error.code if i.error else None for i in items] == [None, None, "archive_too_large"]
    assert [len(i.read()) for i in items[:2] if i.read] == [len(good)] * 2


# -- the live server's memory ----------------------------------------------------------------
BOUNDS = {
    # detector settings: (server process, all processes). Before the bounds one item took the
    # server to 2.5 to 3 GB with HOG, and the whole set passed 6 GB on a shared machine; the
    # CNN with its retry needs about 16 times HOG's memory per pixel (about 20 GB for the
    # 49 MP image without a face). Measured with the bounds: HOG 1.1 and 2.2 GiB, the CNN
    # default 2.5 and 3.3 GiB.
    "hog-up1": ({"FACEWARDEN_DETECTOR": "hog", "FACEWARDEN_UPSAMPLE": "1",
                 "FACEWARDEN_DETECTOR_RETRY": "false", "FACEWARDEN_INGEST_DETECTOR": "same"},
                1536 * MiB, 4096 * MiB),
    "default": ({}, 3584 * MiB, 6144 * MiB),
}  # fmt: skip
"""Peak resident memory of the server process itself (it ingests single uploads and runs
video searches in process) and of the server and all its workers at once (three probe
workers, two ingest workers)."""
WATCHDOG = 8192 * MiB
"""The test kills the server beyond this, to protect the machine it runs on."""


class TreeMemory:
    """Samples the summed RSS of a process and its descendants every 20 ms."""

    def __init__(self, root: psutil.Process) -> None:
        self.root, self.peak, self.peak_at = root, 0, {}
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total, per = 0, {}
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for p in procs:
                try:
                    per[p.pid] = p.memory_info().rss
                except psutil.Error:
                    continue
            total = sum(per.values())
            if total > self.peak:
                self.peak, self.peak_at = total, per
            if total > WATCHDOG and not self.killed:
                self.killed = True
                os.kill(self.root.pid, signal.SIGKILL)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def vm_hwm(pid: int) -> int:
    """The process's peak resident set size (bytes), as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def server_process(server) -> psutil.Process:
    port = server.url.rsplit(":", 1)[1]
    for p in psutil.Process().children(recursive=True):
        if "serve" in p.cmdline() and port in p.cmdline():
            return p
    raise AssertionError("server process not found")


def wait_for_jobs(client, timeout_s: float = 600) -> list[dict]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        jobs = client.get("/api/v1/jobs").json()
        if jobs and all(j["state"] not in ("queued", "running") for j in jobs):
            return jobs
        time.sleep(0.3)
    raise AssertionError("ingest jobs did not finish")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("detector", BOUNDS)
def test_server_memory_stays_bounded_on_the_worst_inputs_and_faces_are_still_found(
    tmp_path, pipeline, detector
):
    env, server_bound, tree_bound = BOUNDS[detector]
    corpus = hostile_corpus()
    pair = upscaled(PROBES / "obama_and_biden.jpg", 7000)  # 35 MP: Obama, Biden and more
    alex = upscaled(PROBES / "alex_lacamoire1.jpg", 6000)
    stored = io.BytesIO()
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("big-pair.jpg", pair)
        zf.writestr("big-alex.jpg", alex)
        zf.writestr("claims-7000.jpg", corpus["jpeg-claims-7000.jpg"])
        zf.writestr("big-member.jpg", zipfile.ZipFile(
            io.BytesIO(corpus["zip-stored-big-member.zip"])).read("big.jpg"))  # fmt: skip
    with running_server(
        tmp_path,
        pipeline,
        FACEWARDEN_WORKERS="2",
        FACEWARDEN_SEARCH_WORKERS="2",
        FACEWARDEN_SEARCH_RATE_LIMIT="100000/minute",
        **env,
    ) as server:
        proc = server_process(server)
        memory = TreeMemory(proc)
        admin, ines = server.client(), server.client("ines")
        try:
            # A stored archive of four 24 to 49 MP members, ingested by two workers at once.
            r = admin.post(
                "/api/v1/ingest",
                data={"source": "press"},
                files={"files": ("stored.zip", stored.getvalue(), "application/zip")},
            )
            assert r.status_code == 202, r.text
            # Single uploads are ingested in the server process itself.
            for name in ("jpeg-claims-7000.jpg", "zip-stored-big-member.zip"):
                r = admin.post(
                    "/api/v1/ingest",
                    data={"source": "press"},
                    files={"files": (name, corpus[name], "application/octet-stream")},
                )
                assert r.status_code == 202, r.text
            # Meanwhile: video searches (in the server process) and large probes.
            for name in ("zip-stored-big-member.zip", "jpeg-claims-7000.jpg"):
                r = ines.post(
                    "/api/v1/search/video",
                    data={"case": "CASE-1"},
                    files={"video": (name, corpus[name], "application/octet-stream")},
                )
                assert r.status_code < 500, r.text
            r = ines.post(
                "/api/v1/search",
                data={"case": "CASE-1"},
                files={"image": ("pair.jpg", pair, "image/jpeg")},
            )
            assert r.status_code == 200, r.text
            assert len(r.json()["faces"]) >= 2
            jobs = wait_for_jobs(admin)
            server_peak = vm_hwm(proc.pid)
        finally:
            memory.stop()
        assert not memory.killed, f"server killed above {WATCHDOG >> 20} MiB"
        per = {pid: rss >> 20 for pid, rss in memory.peak_at.items()}
        print(f"server peak {server_peak >> 20} MiB, all processes {memory.peak >> 20} MiB", per)
        assert server_peak < server_bound, (server_peak >> 20, per)
        assert memory.peak < tree_bound, (memory.peak >> 20, per)

        # The results are still right: faces found in the large real photos, where they are.
        assert all(j["state"] == "done" for j in jobs), jobs
        archive = next(j for j in jobs if j["files"] == ["stored.zip"])["summary"]
        assert archive["images"] == 4 and archive["images_reduced"] == 4, archive
        assert archive["faces"] >= 4, archive  # two in the pair, one each in alex and big
        assert any(
            re.search(r"big-pair\.jpg: 7000x\d+ detected at \d+x\d+", n) for n in archive["notes"]
        ), archive["notes"]
        found = ines.post(
            "/api/v1/search",
            data={"case": "CASE-1"},
            files={"image": ("obama1.jpg", (PROBES / "obama1.jpg").read_bytes(), "image/jpeg")},
        )
        assert found.status_code == 200, found.text
        paths = [c["media_path"] for c in found.json()["faces"][0]["candidates"]]
        assert any(p.endswith("big-pair.jpg") for p in paths), paths
        assert "Traceback" not in server.log.read_text()
