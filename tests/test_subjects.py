"""Subjects of the source system (ingest manifests) and near-duplicate media, on real photos
with the real models: candidates are people, not photos; rights work per subject."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select
from test_cli import cli_runner

from facewarden.adapters.storage.tables import Case, Face, Source, Subject, SubjectRequest
from facewarden.core.errors import InvalidInput, NotFound, PermissionDenied
from facewarden.core.pipeline import FacePipeline
from facewarden.services.app import Facewarden

from conftest import (
    GALLERY,
    PROBES,
    REFERENCE,
    Seed,
    add_source,
    add_user,
    build_seed,
    last_event,
    make_settings,
    open_case,
)

OBAMAS = ["obama.jpg", "obama2.jpg", "obama3.jpg"]


def resized(src: Path, dst: Path, scale: float) -> Path:
    """The same photo at another resolution (and JPEG re-encoding)."""
    im = Image.open(src)
    im.resize((round(im.width * scale), round(im.height * scale))).save(dst, "JPEG", quality=90)
    return dst


def records_folder(tmp_path: Path, manifest_rows: list[dict], kind: str = "csv") -> Path:
    """A custody-records export: the reference photos and a sidecar manifest."""
    folder = tmp_path / "records"
    folder.mkdir()
    for name in [*OBAMAS, "biden.jpg"]:
        shutil.copy(REFERENCE / name, folder / name)
    shutil.copy(PROBES / "obama_and_biden.jpg", folder / "group.jpg")
    path = tmp_path / f"manifest.{kind}"
    if kind == "json":
        path.write_text(json.dumps(manifest_rows))
    else:
        keys = [
            "file",
            "subject",
            *sorted({k for r in manifest_rows for k in r} - {"file", "subject"}),
        ]
        lines = [",".join(keys)] + [
            ",".join(str(r.get(k, "")) for k in keys) for r in manifest_rows
        ]
        path.write_text("\n".join(lines) + "\n")
    return path


ROWS = [
    {"file": "records/obama.jpg", "subject": "R-100", "name": "B. Obama"},
    {"file": "records/obama2.jpg", "subject": "R-100"},
    {"file": "records/obama3.jpg", "subject": "R-100"},
    {"file": "records/biden.jpg", "subject": "R-200", "name": "J. Biden"},
    {"file": "records/group.jpg", "subject": "R-300"},
]


def _build_records(data_dir: Path, database_url: str | None, pipeline: FacePipeline) -> None:
    """Source 'custody' ingested with a manifest; source 'press' (the five gallery photos)
    without one; an open case."""
    fw, _ = Facewarden.init(make_settings(data_dir, database_url), "admin", pipeline=pipeline)
    try:
        admin = fw.actor(name="admin")
        fw.sources.add(
            admin,
            "custody",
            lawful_basis="police act s.12",
            purpose="custody records",
            jurisdiction="DE",
            retention="365d",
            subject_fields=["name"],
        )
        manifest = records_folder(data_dir.parent, ROWS)
        summary = fw.ingest.run(admin, [data_dir.parent / "records"], "custody", manifest=manifest)
        assert summary.images == 5
        assert summary.subjects["linked_faces"] == 4 and summary.subjects["subjects"] == 2
        # the group photo has two faces: not linked to R-300, and reported
        assert [n["subject"] for n in summary.subjects["not_linked"]] == ["R-300"]
        add_source(fw, admin)
        fw.ingest.run(admin, [GALLERY], "press")
        open_case(fw, admin)
    finally:
        fw.close()


@pytest.fixture(scope="session")
def records_seed(tmp_path_factory, pipeline) -> Iterator[Seed]:
    data_dir = tmp_path_factory.mktemp("seed-records") / "data"
    with build_seed(data_dir, lambda d, url: _build_records(d, url, pipeline)) as seed:
        yield seed


@pytest.fixture
def records_fw(fw):
    """Source 'custody' ingested with a manifest (the photos in the seed's folder, which
    every copy shares); source 'press' (the five gallery photos) without one; an open case.
    Built once per session (``records_seed``, see SEEDED_FIXTURES); each test gets a copy."""
    return fw


def test_search_returns_one_candidate_per_subject(records_fw, admin):
    result = records_fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")
    cands = result.faces[0].candidates
    r100 = [c for c in cands if c.subject == "R-100"]
    assert len(r100) == 1, [(c.subject, c.media_path) for c in cands]
    c = r100[0]
    # the three custody photos of R-100, plus the press photo that duplicates one of them
    with records_fw.sessions() as s:
        linked = set(s.scalars(select(Face.id).where(Face.subject_id == c.subject_id)))
    assert len(linked) == 3
    assert linked <= {c.face_id, *c.grouped_face_ids}
    assert c.faces_matched == 1 + len(c.grouped_face_ids) >= 3
    # no other candidate is a photo of R-100
    others = {f for x in cands if x is not c for f in (x.face_id, *x.grouped_face_ids)}
    assert not others & linked
    out = result.as_dict()["faces"][0]["candidates"]
    assert out[c.rank - 1]["subject"] == "R-100" and out[c.rank - 1]["faces_matched"] >= 3
    ev = last_event(records_fw, "search")
    assert str(c.grouped_face_ids[0]) in ev.details  # the folded faces are in the audit record


def test_the_same_photo_at_several_resolutions_is_one_candidate_without_a_manifest(
    fw, admin, tmp_path
):
    folder = tmp_path / "press"
    shutil.copytree(GALLERY, folder)
    resized(GALLERY / "obama.jpg", folder / "obama_small.jpg", 0.5)
    resized(GALLERY / "obama.jpg", folder / "obama_medium.jpg", 0.75)
    shutil.copy(REFERENCE / "obama.jpg", folder / "obama_large.jpg")  # 1.6x, from upstream
    add_source(fw, admin)
    assert fw.ingest.run(admin, [folder], "press").faces == 8
    open_case(fw, admin)
    result = fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")
    face = result.faces[0]
    obama = [c for c in face.candidates if Path(c.media_path).stem.startswith("obama")]
    assert len(obama) == 1, [c.media_path for c in face.candidates]
    assert obama[0].faces_matched == 4 and obama[0].duplicates_collapsed == 3
    assert face.duplicates_collapsed == 3 and obama[0].subject is None
    assert result.as_dict()["faces"][0]["duplicates_collapsed"] == 3
    # a different photo of the same person is not a duplicate: with it, two candidates
    shutil.copy(REFERENCE / "obama2.jpg", tmp_path / "obama2.jpg")
    fw.ingest.run(admin, [tmp_path / "obama2.jpg"], "press")
    again = fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")
    paths = [Path(c.media_path).name for c in again.faces[0].candidates]
    assert "obama2.jpg" in paths and sum(p.startswith("obama") for p in paths) == 2


def test_without_a_manifest_candidates_are_as_before(gallery_fw, admin):
    result = gallery_fw.search.search(
        admin, (PROBES / "obama_and_biden.jpg").read_bytes(), case="CASE-1"
    )
    for face in result.faces:
        for c in face.candidates:
            assert c.subject is None and c.faces_matched == 1 and not c.grouped_face_ids
    with gallery_fw.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Subject)) == 0


def test_json_manifest_and_subject_access_by_reference(fw, admin, tmp_path):
    fw.sources.add(
        admin,
        "custody",
        lawful_basis="b",
        purpose="p",
        jurisdiction="DE",
        retention="30d",
        subject_fields=["name", "dob"],
    )
    manifest = records_folder(
        tmp_path, [{"file": "records/obama2.jpg", "subject": "R-1", "dob": "1961-08-04"}], "json"
    )
    summary = fw.ingest.run(admin, [tmp_path / "records"], "custody", manifest=manifest)
    assert summary.subjects["linked_faces"] == 1 and summary.images == 5
    report = fw.subject_records.access(admin, "R-1")
    assert report["fields"] == {"dob": "1961-08-04"} and report["source"] == "custody"
    assert [Path(m["media_path"]).name for m in report["matches"]] == ["obama2.jpg"]
    ev = last_event(fw, "subject.access")
    assert ev.seq == report["audit_seq"] and "R-1" in ev.details
    with pytest.raises(NotFound):
        fw.subject_records.access(admin, "R-404")


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([{"file": "records/obama.jpg", "subject": "R-1", "address": "x"}], "not allowed"),
        ([{"file": "records/missing.jpg", "subject": "R-1"}], "not among the inputs"),
        (
            [
                {"file": "records/obama.jpg", "subject": "R-1"},
                {"file": "records/obama.jpg", "subject": "R-2"},
            ],
            "listed twice",
        ),
        ([{"file": "records/obama.jpg", "subject": "R" * 201}], "longer than"),
        ([{"file": "records/obama.jpg", "subject": "R-1\u0007"}], "control characters"),
        ([{"file": "records/obama.jpg", "subject": ""}], "required"),
        (
            [
                {"file": "records/obama.jpg", "subject": "R-1", "name": "A"},
                {"file": "records/obama2.jpg", "subject": "R-1", "name": "B"},
            ],
            "different metadata",
        ),
    ],
)
def test_bad_manifest_is_refused_before_anything_is_stored(fw, admin, tmp_path, rows, problem):
    add_source(fw, admin, "custody")
    with fw.sessions.begin() as s:  # this source may hold a name, nothing else
        from facewarden.adapters.storage.tables import Source

        s.query(Source).filter_by(name="custody").update({"subject_fields": ["name"]})
    manifest = records_folder(tmp_path, rows, "json")
    with pytest.raises(InvalidInput, match=problem):
        fw.ingest.run(admin, [tmp_path / "records"], "custody", manifest=manifest)
    with fw.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Face)) == 0


def test_erasure_by_subject_deletes_its_faces_and_suppresses_reingest(records_fw, admin, tmp_path):
    receipt = records_fw.subject_records.erase(admin, "R-100", source="custody")
    assert receipt["faces"] == 3 and receipt["subject_record_deleted"] and receipt["suppressed"]
    with records_fw.sessions() as s:
        assert s.scalar(select(Subject).where(Subject.reference == "R-100")) is None
        assert s.get(SubjectRequest, receipt["request_id"]).suppression_template is not None
    result = records_fw.search.search(admin, (PROBES / "obama1.jpg").read_bytes(), case="CASE-1")
    assert all(c.subject != "R-100" for c in result.faces[0].candidates)
    assert last_event(records_fw, "subject.erase").seq == receipt["audit_seq"]
    # a copy of one of the erased photos, ingested again, is suppressed
    copy = tmp_path / "again.jpg"
    resized(REFERENCE / "obama2.jpg", copy, 0.9)
    summary = records_fw.ingest.run(admin, [copy], "custody")
    assert summary.faces == 0 and summary.faces_suppressed == 1
    # R-200 is untouched
    assert records_fw.subject_records.access(admin, "R-200")["matches"]


def test_restrict_by_subject_hides_it_from_search_until_lifted(records_fw, admin):
    done = records_fw.subject_records.restrict(admin, "R-200")
    assert len(done["media"]) == 1
    probe = (REFERENCE / "biden.jpg").read_bytes()
    hits = records_fw.search.search(admin, probe, case="CASE-1").faces[0].candidates
    assert all(c.subject != "R-200" for c in hits)
    records_fw.subject_records.restrict(admin, "R-200", restricted=False)
    hits = records_fw.search.search(admin, probe, case="CASE-1").faces[0].candidates
    assert any(c.subject == "R-200" for c in hits)


def test_subject_rights_are_for_the_dpo_and_a_shared_reference_needs_its_source(
    records_fw, admin, tmp_path
):
    investigator = add_user(records_fw, admin, "ivan", "investigator")
    for call in (
        lambda: records_fw.subject_records.access(investigator, "R-100"),
        lambda: records_fw.subject_records.erase(investigator, "R-100"),
        lambda: records_fw.subject_records.restrict(investigator, "R-100"),
    ):
        with pytest.raises(PermissionDenied):
            call()
    # the same record number in a second source system
    other = tmp_path / "other"
    other.mkdir()
    resized(GALLERY / "kit_harington.jpg", other / "kit.jpg", 0.8)  # not stored before
    (tmp_path / "m2.csv").write_text("file,subject\nother/kit.jpg,R-100\n")
    add_source(records_fw, admin, "border")
    records_fw.ingest.run(admin, [other], "border", manifest=tmp_path / "m2.csv")
    with pytest.raises(InvalidInput, match="several sources"):
        records_fw.subject_records.erase(admin, "R-100")
    receipt = records_fw.subject_records.erase(admin, "R-100", source="border")
    assert receipt["faces"] == 1
    assert len(records_fw.subject_records.access(admin, "R-100")["matches"]) == 3


@pytest.mark.slow  # 14 CLI runs in subprocesses (about 10 s on two cores)
def test_cli_ingest_manifest_and_subject_commands(tmp_path, database_url):

    run = cli_runner(tmp_path / "data", database_url)  # the CLI in a subprocess, by token

    def cli(*args):
        return run(*args, ok=False)

    assert cli("init").returncode == 0
    src = ["--lawful-basis", "x", "--purpose", "y", "--jurisdiction", "de", "--retention", "9d"]
    bad_field = cli("source", "add", "custody", *src, "--subject-field", "File")
    assert bad_field.returncode == 2 and "error [" in bad_field.stderr
    assert cli("source", "add", "custody", *src, "--subject-field", "name").returncode == 0
    manifest = records_folder(tmp_path, ROWS)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,subject,ssn\nrecords/obama.jpg,R-1,123\n")
    refused = cli("ingest", tmp_path / "records", "--source", "custody", "--manifest", bad)
    assert refused.returncode == 2 and "not allowed" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = cli(
        "ingest", tmp_path / "records", "--source", "custody", "--manifest", manifest, "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["subjects"]["linked_faces"] == 4
    out = tmp_path / "export.json"
    access = cli("subject", "access", "--subject", "R-100", "--out", out, "--json")
    assert access.returncode == 0, access.stderr
    assert len(json.loads(out.read_text())["matches"]) == 3
    both = cli("subject", "access", REFERENCE / "obama.jpg", "--subject", "R-100")
    assert both.returncode == 2
    assert cli("media", "restrict", "--subject", "R-200").returncode == 0
    erased = cli("subject", "erase", "--subject", "R-100", "--yes", "--json")
    assert erased.returncode == 0, erased.stderr
    assert json.loads(erased.stdout)["faces"] == 3
    gone = cli("subject", "access", "--subject", "R-100")
    assert gone.returncode == 2 and "no subject" in gone.stderr


def test_migration_0006_keeps_existing_faces_and_downgrades(gallery_fw):
    from alembic import command

    from facewarden.adapters.storage.db import alembic_config, upgrade

    engine = gallery_fw.engine
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with gallery_fw.sessions() as s:
        before = sorted(s.scalars(select(Face.id)))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    with engine.connect() as conn:
        from sqlalchemy import inspect

        insp = inspect(conn)
        assert "subjects" not in insp.get_table_names()
        assert "subject_id" not in {c["name"] for c in insp.get_columns("faces")}
    upgrade(engine)
    with gallery_fw.sessions() as s:
        # nothing cascaded away: faces, the source and the case are all still there
        assert sorted(s.scalars(select(Face.id))) == before
        assert s.scalar(select(Case.ref)) == "CASE-1" and s.scalar(select(Source.name)) == "press"
        assert s.scalar(select(func.count()).where(Face.subject_id.is_not(None))) == 0
