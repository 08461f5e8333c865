"""Detection strategies, the template recipe (flip averaging) and what a run records of them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_cli import cli_runner

from facewarden.adapters.models.registry import build_detector
from facewarden.adapters.models.strategy import HybridDetector
from facewarden.adapters.storage.tables import AuditEvent
from facewarden.config import Settings
from facewarden.core.errors import TemplateSpaceMismatch
from facewarden.core.pipeline import FacePipeline
from facewarden.core.quality import assess
from facewarden.services.app import Facewarden

from conftest import (
    GALLERY,
    MODEL_CACHE,
    add_source,
    last_event,
    make_settings,
    open_case,
    probe,
)


class Counting:
    """A real detector that counts its calls (to see which one a strategy ran)."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0
        self.model_id = inner.model_id

    def detect(self, image: np.ndarray):
        self.calls += 1
        return self.inner.detect(image)


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_hybrid_runs_the_cnn_only_where_hog_finds_nothing():
    hog = Counting(build_detector("hog", 0))
    cnn = Counting(build_detector("cnn", 1, "auto", MODEL_CACHE))
    hybrid = HybridDetector(hog, cnn)
    assert hybrid.model_id == "dlib-hog-up0>dlib-mmod-up1"
    portrait = rgb(GALLERY / "biden.jpg")
    assert len(hybrid.detect(portrait)) == 1 and (hog.calls, cnn.calls) == (1, 0)
    # The same face at a sixth of its size (about 50 pixels): under HOG's floor at upsampling 0,
    # within the CNN's reach at upsampling 1.
    h, w = portrait.shape[:2]
    small = np.asarray(Image.fromarray(portrait).resize((w // 6, h // 6)))
    assert hog.inner.detect(small) == []  # (not counted)
    found = hybrid.detect(small)
    assert len(found) == 1 and (hog.calls, cnn.calls) == (2, 1)
    box = found[0].box
    assert 0 <= box.left < box.right <= w // 6 and 0 <= box.top < box.bottom <= h // 6


def test_registry_builds_each_detector_setting():
    hybrid = build_detector("hybrid", 0, "auto", MODEL_CACHE)
    assert hybrid.model_id == "dlib-hog-up0>dlib-mmod-up0"
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("sift", 0)
    cnn = Settings(detector="cnn", upsample=0, detector_retry=True)
    assert cnn.detector_setting == "cnn-up0+retry-up1"
    assert Settings(detector="hog", upsample=1, detector_retry=False).detector_setting == "hog-up1"
    retry = build_detector("cnn", 0, "auto", MODEL_CACHE, retry=True)
    assert retry.model_id == "dlib-mmod-up0>dlib-mmod-up1"


@pytest.mark.parametrize("name", ["obama.jpg", "rose_leslie.jpg", "kit_harington.jpg"])
def test_either_detectors_box_aligns_to_the_same_chip_and_template(
    pipeline: FacePipeline, name: str
):
    """The detector changes the box, not the template space: the 5-point model, given the
    CNN's box (sized and placed differently from HOG's), finds the same landmarks, so the
    landmark-aligned chip, its quality measures and its template are those of HOG's box."""
    image = rgb(GALLERY / name)
    (hog,) = build_detector("hog", 1).detect(image)
    (cnn,) = build_detector("cnn", 0, "auto", MODEL_CACHE).detect(image)
    assert hog.box != cnn.box
    chip_h, points_h = pipeline.aligner.align(image, hog.box)
    chip_c, points_c = pipeline.aligner.align(image, cnn.box)
    eyes = float(np.linalg.norm(points_h[0:2].mean(0) - points_h[2:4].mean(0)))
    assert np.linalg.norm(points_h - points_c, axis=1).max() < 0.1 * eyes
    t_h, t_c = pipeline.embedder.embed([chip_h, chip_c])
    assert np.linalg.norm(t_h - t_c) < 0.1  # the match threshold is 0.6
    q_h = assess(hog, chip_h, points_h, 20)
    q_c = assess(cnn, chip_c, points_c, 20)
    assert abs(q_h.yaw - q_c.yaw) < 0.05 and q_h.flags == q_c.flags


def test_flip_averaging_is_its_own_template_space(pipeline: FacePipeline):
    flipped = FacePipeline(pipeline.detector, pipeline.aligner, pipeline.embedder, flip=True)
    assert flipped.model_id == pipeline.model_id + "+flip"
    image = rgb(GALLERY / "biden.jpg")
    plain = pipeline.process(image).faces[0].descriptor
    averaged = flipped.process(image).faces[0].descriptor
    chip = pipeline.aligner.align(image, pipeline.detector.detect(image)[0].box)[0]
    mirror = pipeline.embedder.embed([np.ascontiguousarray(chip[:, ::-1])])[0]
    assert np.allclose(averaged, (plain + mirror) / 2, atol=1e-5)
    assert 0 < np.linalg.norm(averaged - plain) < 0.2  # the same face, another template


def test_a_gallery_of_another_recipe_is_refused_not_silently_missed(
    tmp_path, database_url, pipeline
):
    settings = make_settings(tmp_path / "data", database_url)
    fw, _ = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    admin = fw.actor(name="admin")
    add_source(fw, admin)
    assert fw.ingest.run(admin, [GALLERY / "biden.jpg"], "press").faces == 1
    open_case(fw, admin)
    fw.engine.dispose()

    flip = make_settings(tmp_path / "data", database_url, descriptor_flip=True)
    flipped = FacePipeline(pipeline.detector, pipeline.aligner, pipeline.embedder, flip=True)
    other = Facewarden(flip, pipeline=flipped)
    admin = other.actor(name="admin")
    with pytest.raises(TemplateSpaceMismatch, match="FACEWARDEN_DESCRIPTOR_FLIP=false") as exc:
        other.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    assert exc.value.exit_code == 3 and "1 templates" in exc.value.message
    with pytest.raises(TemplateSpaceMismatch):
        other.ingest.run(admin, [GALLERY / "kit_harington.jpg"], "press")
    from sqlalchemy import func, select

    from facewarden.adapters.storage.tables import Face

    with other.sessions() as session:  # nothing of the new recipe was mixed in
        assert session.scalar(select(func.count()).select_from(Face)) == 1
    other.engine.dispose()


def test_a_gallery_ingested_with_hog_is_searched_with_the_default_without_migration(
    tmp_path, database_url, pipeline
):
    """The detector is not part of the template recipe: templates made from HOG's boxes and
    from the CNN's are comparable, so a gallery of the old default is neither refused nor
    silently missed by the new one, and each ingest run records which detector it used."""
    from facewarden.adapters.models.registry import build_pipeline

    hog_settings = make_settings(
        tmp_path / "data",
        database_url,
        detector="hog",
        upsample=1,
        detector_retry=False,
        ingest_detector="same",  # the old default: one detector for everything
    )
    old, _ = Facewarden.init(
        hog_settings, admin_name="admin", pipeline=build_pipeline(hog_settings)
    )
    admin = old.actor(name="admin")
    add_source(old, admin)
    assert old.ingest.run(admin, [GALLERY / "obama.jpg", GALLERY / "biden.jpg"], "press").faces == 2
    open_case(old, admin)
    old.engine.dispose()

    settings = make_settings(tmp_path / "data", database_url)  # the defaults: the CNN
    assert settings.detector_setting == "cnn-up0+retry-up1"
    new = Facewarden(settings, pipeline=pipeline)
    admin = new.actor(name="admin")
    assert new.model_id == old.model_id
    result = new.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    (face,) = result.faces
    assert face.candidates and "obama" in face.candidates[0].media_path
    assert face.candidates[0].distance < 0.5
    assert new.ingest.run(admin, [GALLERY / "kit_harington.jpg"], "press").faces == 1
    with new.sessions() as s:
        q = s.query(AuditEvent).filter(AuditEvent.action == "ingest.start")
        details = [e.details for e in q.order_by(AuditEvent.seq)]
    used = [(d if isinstance(d, dict) else json.loads(d))["detector"] for d in details]
    assert used == ["hog-up1", "hog-x1.5>cnn-up0+retry-up1"]  # the ingest default now
    assert new.stats()["detector"] == "cnn-up0+retry-up1"  # the setting now in use
    new.engine.dispose()


def test_search_and_ingest_record_the_detector_setting(tmp_path, database_url, pipeline):
    settings = make_settings(
        tmp_path / "data",
        database_url,
        detector="hybrid",
        upsample=0,
        detector_retry=False,
        ingest_detector="same",
    )
    fw, _ = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    admin = fw.actor(name="admin")
    add_source(fw, admin)
    empty = tmp_path / "empty.jpg"
    Image.new("RGB", (120, 90), (90, 90, 90)).save(empty)
    summary = fw.ingest.run(admin, [GALLERY / "biden.jpg", empty], "press")
    assert (summary.images, summary.faces, summary.images_without_face) == (2, 1, 1)
    out = summary.as_dict()
    assert out["detector"] == "hybrid-up0" and out["elapsed_s"] > 0
    assert out["images_per_s"] == pytest.approx(2 / summary.elapsed_s, rel=0.01)
    assert out["faces_per_s"] == pytest.approx(1 / summary.elapsed_s, rel=0.01)
    start = last_event(fw, "ingest.start")
    assert json.loads(start.details)["detector"] == "hybrid-up0"
    open_case(fw, admin)
    result = fw.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    assert result.as_dict()["detector"] == "hybrid-up0"
    assert json.loads(last_event(fw, "search").details)["detector"] == "hybrid-up0"
    fw.engine.dispose()


def test_ingest_summary_in_the_cli(tmp_path, database_url):
    run = cli_runner(
        tmp_path / "data",
        database_url,
        FACEWARDEN_INGEST_DETECTOR="hog",
        FACEWARDEN_INGEST_HOG_SCALE="2",
        FACEWARDEN_UPSAMPLE="0",
        FACEWARDEN_DETECTOR_RETRY="true",
    )

    def cli(*args: object) -> str:
        return run(*args).stdout

    cli("init")
    cli(
        "source",
        "add",
        "press",
        "--lawful-basis",
        "Art. 6(1)(e) GDPR",
        "--purpose",
        "test",
        "--jurisdiction",
        "fr",
        "--retention",
        "30d",
    )
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (120, 90), (90, 90, 90)).save(folder / "empty.jpg")
    (folder / "biden.jpg").write_bytes((GALLERY / "biden.jpg").read_bytes())
    out = json.loads(cli("ingest", folder, "--source", "press", "--json"))
    assert (out["images"], out["faces"], out["images_without_face"]) == (2, 1, 1)
    assert out["detector"] == "hog-x2+retry-up1" and out["elapsed_s"] > 0
    assert out["images_per_s"] > 0 and out["faces_per_s"] > 0
    (folder / "kit.jpg").write_bytes((GALLERY / "kit_harington.jpg").read_bytes())
    text = cli("ingest", folder, "--source", "press")
    assert "images stored without any face 0" in text and "faces/s" in text
    assert "images/s" in text and "detector hog-x2+retry-up1" in text


def test_the_api_answers_a_recipe_conflict_with_409_not_500():
    from facewarden.web.errors import status_of

    assert status_of(TemplateSpaceMismatch("the gallery holds another recipe")) == 409


def test_the_cli_loads_no_database_model_or_video_code_for_help():
    import subprocess
    import sys

    heavy = ("numpy", "sqlalchemy", "alembic", "dlib", "av", "faiss", "onnxruntime", "pydantic")
    code = f"import sys, facewarden.cli.app\nprint([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    help_run = subprocess.run(
        [sys.executable, "-m", "facewarden", "--help"], capture_output=True, text=True
    )
    assert help_run.returncode == 0 and "ingest" in help_run.stdout


def test_hog_on_an_enlarged_image_finds_smaller_faces_in_the_images_pixels():
    """HOG's smallest face is about 80 pixels: enlarged 1.5 times first, it finds a face of
    about 55 pixels that it misses at upsampling 0, boxed in the image's own pixels."""
    from facewarden.adapters.models.dlib_models import HogDetector

    portrait = Image.open(GALLERY / "biden.jpg").convert("RGB")
    w, h = portrait.size
    small = np.asarray(portrait.resize((w // 5, h // 5)))
    assert HogDetector(0).detect(small) == []
    (found,) = HogDetector(0, 1.5).detect(small)
    (reference,) = HogDetector(1).detect(small)  # twice the size: the old default
    for a, b in zip(found.box.as_list(), reference.box.as_list(), strict=True):
        assert abs(a - b) <= 8
    assert 0 <= found.box.left < found.box.right <= w // 5
    with pytest.raises(ValueError, match="between 1 and 4"):
        HogDetector(0, 0.5)


def test_ingest_has_its_own_detector_and_probes_keep_theirs(tmp_path, database_url, pipeline):
    """Photo ingest uses ``ingest_detector`` (default: HOG on the image enlarged 1.5 times,
    the CNN where it finds nothing, and the retry), searches keep ``detector``; the ingest
    pipeline shares the probe pipeline's networks and its lock, and each run records the
    detector it used."""
    settings = make_settings(tmp_path / "data", database_url)
    assert settings.ingest_detector_setting == "hog-x1.5>cnn-up0+retry-up1"
    assert Settings(ingest_detector="same").ingest_detector_setting == "cnn-up0+retry-up1"
    assert Settings(ingest_detector="cnn", detector_retry=False).ingest_detector_setting == (
        "cnn-up0"
    )
    fw, _ = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    ingest = fw.models.ingest_pipeline
    assert ingest.detector.model_id == "dlib-hog-up0-x1.5>dlib-mmod-up0>dlib-mmod-up1"
    assert fw.models.pipeline.detector is pipeline.detector
    assert ingest.embedder is pipeline.embedder and ingest._lock is pipeline._lock
    admin = fw.actor(name="admin")
    add_source(fw, admin)
    summary = fw.ingest.run(admin, [GALLERY / "biden.jpg"], "press")
    assert (summary.faces, summary.detector) == (1, "hog-x1.5>cnn-up0+retry-up1")
    assert json.loads(last_event(fw, "ingest.start").details)["detector"] == (
        "hog-x1.5>cnn-up0+retry-up1"
    )
    open_case(fw, admin)
    result = fw.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    assert result.as_dict()["detector"] == settings.detector_setting == "cnn-up0+retry-up1"
    fw.engine.dispose()


def test_hog_detector_cached_in_the_model_directory_detects_the_same(tmp_path, caplog):
    """HOG's detector is saved once in the model directory (a worker then loads it in about
    a millisecond instead of rebuilding it); what is loaded detects exactly as dlib's own,
    and a damaged cache file is rebuilt, not trusted half-read."""
    import dlib

    from facewarden.adapters.models.dlib_models import HogDetector

    image = np.asarray(Image.open(GALLERY / "obama.jpg").convert("RGB"))
    reference = HogDetector(0).detect(image)
    assert reference
    cache = tmp_path / "models"
    HogDetector(0, cache_dir=cache)
    (cached,) = cache.glob("dlib-hog-frontal-*.svm")
    assert cached.name == f"dlib-hog-frontal-{dlib.__version__}.svm"
    assert HogDetector(0, cache_dir=cache).detect(image) == reference
    cached.write_bytes(cached.read_bytes()[:1000])  # a torn or tampered-with copy
    with caplog.at_level("WARNING"):
        assert HogDetector(0, cache_dir=cache).detect(image) == reference
    assert "rebuilding the unreadable HOG cache" in caplog.text
    assert cached.stat().st_size > 100_000  # rewritten whole
    assert [p.name for p in cache.iterdir()] == [cached.name]  # no temporary file left
    unwritable = tmp_path / "file"
    unwritable.write_text("not a directory")
    assert HogDetector(0, cache_dir=unwritable / "models").detect(image) == reference
