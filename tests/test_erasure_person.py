"""Erasure erases the person, measured on real LFW people with many photos.

The fixtures are 160x160 crops of LFW images (tests/fixtures/images/lfw_subjects): eight
photos of Jennifer Lopez (whose own photos are up to 0.61 apart with the dlib model), eight
of Ricardo Lagos, and a few of other people, two of them (Angelina Jolie) within the search
threshold of one Lopez photo. The requester sends one photo; afterwards no search with any
of her other photos may return one of her faces (residue 0 at the search threshold), and
the receipt reports what may be collateral.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from facewarden.adapters.storage.tables import Face, Media
from facewarden.core.errors import InvalidInput, PermissionDenied

from conftest import FIXTURES, add_source, add_user, last_event, open_case

LFW = FIXTURES / "lfw_subjects"
SELFIE = LFW / "Jennifer_Lopez_0004.jpg"
ERASED = "Jennifer_Lopez"


def person(path: str | Path) -> str:
    return Path(path).stem.rsplit("_", 1)[0]


def face_people(fw) -> dict[int, str]:
    """Face id -> the LFW person of its photo (the test's ground truth)."""
    with fw.sessions() as s:
        rows = s.execute(select(Face.id, Media.path).join(Media, Media.id == Face.media_id))
        return {face_id: person(path) for face_id, path in rows}


@pytest.fixture
def lfw_fw(fw, admin, tmp_path):
    """Every fixture photo but the selfie ingested; an open case for searches."""
    gallery = tmp_path / "lfw"
    gallery.mkdir()
    for f in sorted(LFW.iterdir()):
        if f != SELFIE:
            shutil.copy(f, gallery / f.name)
    add_source(fw, admin)
    summary = fw.ingest.run(admin, [gallery], "press")
    assert summary.faces == 26, summary
    open_case(fw, admin)
    return fw


def residue(fw, admin, who: str) -> dict[str, list[str]]:
    """For each photo of ``who``: the candidates of that person a search returns."""
    out = {}
    for f in sorted(LFW.glob(f"{who}_*.jpg")):
        # Every photo, even the blurred ones the quality gate would refuse: residue is
        # measured with all of them.
        result = fw.search.search(admin, f.read_bytes(), case="CASE-1", allow_low_quality=True)
        out[f.name] = [
            Path(c.media_path).name
            for m in result.faces
            for c in m.candidates
            if person(c.media_path) == who
        ]
    return out


def test_erasure_with_one_photo_leaves_no_face_of_the_person_findable(lfw_fw, admin):
    fw = lfw_fw
    people = face_people(fw)
    before = residue(fw, admin, ERASED)
    assert all(len(v) >= 5 for v in before.values()), before  # she is findable before

    receipt = fw.subjects.erase(admin, SELFIE.read_bytes(), reference="REQ-LFW")
    erased = receipt["face_ids"]
    review = {r["face_id"]: people[r["face_id"]] for r in receipt["review"]}
    strict, radius = receipt["threshold"], receipt["review_threshold"]
    assert (strict, radius) == (fw.settings.subject_threshold, fw.settings.threshold)
    # Erased within the strict threshold: all hers (no collateral erased).
    assert erased and all(people[f] == ERASED for f in erased)
    assert all(receipt["distances"][str(f)] <= strict for f in erased)
    # Between strict and search threshold: more of hers and two faces of someone else,
    # listed for the DPO and reported as possible collateral.
    assert sorted(set(review.values())) == ["Angelina_Jolie", ERASED]
    assert all(strict < r["distance"] <= radius for r in receipt["review"])
    assert receipt["collateral"]["withheld_pending_review"] == len(review)
    assert receipt["collateral"]["erased_beyond_strict_threshold"] == 0
    assert receipt["residue"] == {"search_threshold": radius, "face_ids": []}
    details = last_event(fw, "subject.erase").details
    details = json.loads(details) if isinstance(details, str) else details
    assert details["review_face_ids"] == list(review)

    # Residue 0: no search with any of her other photos returns one of her faces.
    assert residue(fw, admin, ERASED) == {name: [] for name in before}
    # Other people are still found (Ricardo Lagos, far from her).
    assert all(len(v) >= 6 for v in residue(fw, admin, "Ricardo_Lagos").values())

    # The DPO reviews: erases the ones that are her, releases the ones that are not.
    hers = sorted(f for f, who in review.items() if who == ERASED)
    others = sorted(f for f, who in review.items() if who != ERASED)
    jolie_before = residue(fw, admin, "Angelina_Jolie")
    decision = fw.subjects.review(admin, receipt["request_id"], erase=hers, release=others)
    assert decision["face_ids"] == hers and decision["released"] == others
    assert decision["still_pending"] == [] and decision["faces"] == len(hers)
    assert last_event(fw).action == "subject.erase.review"
    with fw.sessions() as s:
        left = set(s.scalars(select(Face.id)))
    assert not left & (set(erased) | set(hers))
    assert all(people[f] != ERASED for f in left)  # every face of hers is gone
    # Released faces are searchable again; she still is not.
    jolie_after = residue(fw, admin, "Angelina_Jolie")
    assert sum(map(len, jolie_after.values())) > sum(map(len, jolie_before.values()))
    assert residue(fw, admin, ERASED) == {name: [] for name in before}
    # A decision is made once.
    with pytest.raises(InvalidInput, match="not pending review"):
        fw.subjects.review(admin, receipt["request_id"], erase=others)


def test_her_photos_ingested_again_are_not_findable(lfw_fw, admin, tmp_path):
    fw = lfw_fw
    fw.subjects.erase(admin, SELFIE.read_bytes())
    again = tmp_path / "again"
    again.mkdir()
    for f in LFW.glob(f"{ERASED}_*.jpg"):
        # A new copy (another encoding): not a duplicate of the erased media.
        from PIL import Image

        Image.open(f).save(again / f.name, quality=70)
    add_source(fw, admin, "press-2")
    summary = fw.ingest.run(admin, [again], "press-2")
    assert summary.faces + summary.faces_suppressed == 8
    assert all(not v for v in residue(fw, admin, ERASED).values())


def test_review_is_the_dpos_and_only_of_listed_candidates(lfw_fw, admin):
    fw = lfw_fw
    receipt = fw.subjects.erase(admin, SELFIE.read_bytes())
    pending = [r["face_id"] for r in receipt["review"]]
    inv = add_user(fw, admin, "ines", "investigator")
    with pytest.raises(PermissionDenied):
        fw.subjects.review(inv, receipt["request_id"], release=pending)
    assert last_event(fw).outcome == "refused"
    # An insider cannot use the review step to erase faces that were never candidates,
    # nor release and erase the same face.
    others = sorted(set(face_people(fw)) - set(pending))
    with pytest.raises(InvalidInput, match="not pending review"):
        fw.subjects.review(admin, receipt["request_id"], erase=others[:1])
    with pytest.raises(InvalidInput, match="both"):
        fw.subjects.review(admin, receipt["request_id"], erase=pending[:1], release=pending[:1])
    with pytest.raises(InvalidInput, match="name the review"):
        fw.subjects.review(admin, receipt["request_id"])


def test_erasure_with_several_selfies(lfw_fw, admin):
    fw = lfw_fw
    people = face_people(fw)
    selfies = [SELFIE.read_bytes(), (LFW / "Jennifer_Lopez_0021.jpg").read_bytes()]
    receipt = fw.subjects.erase(admin, selfies)
    assert len(receipt["selfies_sha256"]) == 2
    assert all(people[f] == ERASED for f in receipt["face_ids"])
    assert receipt["suppression_templates"] == 2 + len(receipt["face_ids"])


def test_an_erased_persons_photo_in_a_batch_leaves_the_others_stored(lfw_fw, admin, tmp_path):
    """Ingest stores images in batches (one transaction each, a savepoint per image): an
    image holding only erased people is dropped without a trace, the others of its batch are
    stored, and the counts say so."""
    fw = lfw_fw
    fw.subjects.erase(admin, SELFIE.read_bytes())
    from PIL import Image

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    theirs = sorted(LFW.glob(f"{ERASED}_*.jpg"))[:2]
    others = [f for f in sorted(LFW.glob("Ricardo_Lagos_*.jpg"))[:3]]
    for f in [theirs[0], *others, theirs[1]]:  # the erased person first and last
        Image.open(f).save(mixed / f"new_{f.name}", quality=70)  # new content, not duplicates
    add_source(fw, admin, "press-2")
    summary = fw.ingest.run(admin, [mixed], "press-2")
    assert (summary.images, summary.faces, summary.faces_suppressed) == (3, 3, 2)
    with fw.sessions() as s:
        paths = {
            Path(p).name for p in s.scalars(select(Media.path).where(Media.path.like("%new_%")))
        }
    assert paths == {f"new_{f.name}" for f in others}
    assert len(fw.index) == len(face_people(fw))  # the index holds what was stored
