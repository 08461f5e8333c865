"""The probe quality gate: quality shown for every probe face, faces below the bar refused
with a reason or searched only by a logged override; probes without a usable face use no
quota."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from sqlalchemy import func, select

from facewarden.adapters.storage.tables import CaseSearch
from facewarden.core.errors import NoFaceFound, Refused
from facewarden.services.app import Facewarden

from conftest import FIXTURES, GALLERY, add_source, last_event, make_settings, open_case, probe

BLURRED = (FIXTURES / "lfw_subjects" / "Ricardo_Lagos_0001.jpg").read_bytes()
# Lin-Manuel Miranda turned about 45 degrees (short_hamilton_clip.mp4 at 4.66 s, cropped): a
# head turn well beyond the bar under either detector's box (yaw about 0.45 against 0.34), in
# focus and large enough, so "profile" is its only problem.
PROFILE = (FIXTURES.parent / "video" / "miranda_turned_4.66s.jpg").read_bytes()


def searches(fw, ref="CASE-1") -> int:
    with fw.sessions() as s:
        return s.scalar(select(func.count()).select_from(CaseSearch))


def details(event) -> dict:
    return json.loads(event.details) if isinstance(event.details, str) else event.details


def blank_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (120, 130, 140)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(("image", "problem"), [(BLURRED, "blurred"), (PROFILE, "profile")])
def test_low_quality_probe_is_refused_with_its_reason_and_no_quota(
    gallery_fw, admin, image, problem
):
    with pytest.raises(Refused, match=problem) as err:
        gallery_fw.search.search(admin, image, case="CASE-1")
    assert err.value.code == "low_quality_probe"
    ev = last_event(gallery_fw)
    assert (ev.action, ev.outcome, ev.case_ref) == ("search", "refused", "CASE-1")
    assert problem in ev.error and details(ev)["quality_problems"] == [[problem]]
    assert searches(gallery_fw) == 0  # no quota used


def test_override_searches_and_is_logged(gallery_fw, admin):
    result = gallery_fw.search.search(admin, BLURRED, case="CASE-1", allow_low_quality=True)
    face = result.faces[0]
    assert face.searched and face.quality_problems == ["blurred"]
    assert face.quality["blur"] < gallery_fw.settings.probe_min_blur
    ev = last_event(gallery_fw, "search")
    assert ev.outcome == "ok" and ev.seq == result.audit_seq
    assert details(ev)["allow_low_quality"] is True
    assert details(ev)["quality_problems"] == [["blurred"]]
    assert searches(gallery_fw) == 1
    as_json = result.as_dict()["faces"][0]
    assert as_json["quality_problems"] == ["blurred"] and as_json["searched"] is True


def test_only_the_good_faces_of_a_group_photo_are_searched(gallery_fw, admin):
    result = gallery_fw.search.search(admin, probe("obama_and_biden.jpg"), case="CASE-1")
    gated = [f for f in result.faces if not f.searched]
    good = [f for f in result.faces if f.searched]
    # The third face is out of focus (its head turn is at the yaw limit: it may be flagged too).
    assert len(gated) == 1 and "blurred" in gated[0].quality_problems
    assert not gated[0].candidates and len(good) == 2 and all(f.candidates for f in good)
    assert details(last_event(gallery_fw, "search"))["allow_low_quality"] is False


def test_no_face_is_logged_and_uses_no_quota(fw, admin):
    add_source(fw, admin)
    fw.ingest.run(admin, [GALLERY], "press")
    open_case(fw, admin, "ONE", quota=1)
    for _ in range(3):
        with pytest.raises(NoFaceFound):
            fw.search.search(admin, blank_jpeg(), case="ONE")
        ev = last_event(fw)
        assert (ev.action, ev.outcome, ev.case_ref) == ("search", "error", "ONE")
    with pytest.raises(Refused):
        fw.search.search(admin, BLURRED, case="ONE")
    # The one search the case allows is still there.
    assert fw.search.search(admin, probe("obama1.jpg"), case="ONE").faces[0].candidates
    with pytest.raises(Refused, match="quota"):
        fw.search.search(admin, probe("obama1.jpg"), case="ONE")


def test_quality_bar_is_configurable(tmp_path, database_url, pipeline):
    settings = make_settings(tmp_path / "d", database_url, probe_min_face_px=1000)
    fw, _ = Facewarden.init(settings, admin_name="admin", pipeline=pipeline)
    admin = fw.actor(name="admin")
    add_source(fw, admin)
    open_case(fw, admin)
    with pytest.raises(Refused, match="too_small"):
        fw.search.search(admin, probe("obama1.jpg"), case="CASE-1")
    fw.engine.dispose()
    fw2, _ = Facewarden.init(
        make_settings(tmp_path / "d2", None, probe_min_blur=0, probe_max_yaw=10),
        admin_name="admin",
        pipeline=pipeline,
    )
    admin2 = fw2.actor(name="admin")
    open_case(fw2, admin2)
    assert fw2.search.search(admin2, BLURRED, case="CASE-1").faces[0].quality_problems == []
    fw2.engine.dispose()


@pytest.mark.slow  # the CLI in subprocesses
def test_cli_shows_quality_refuses_with_exit_3_and_overrides(gallery_cli, tmp_path):
    """On a copy of the session's CLI-built gallery (case C-1)."""

    def cli(*args):
        return gallery_cli(*args, ok=False)

    blurred = tmp_path / "blurred.jpg"
    blurred.write_bytes(BLURRED)
    refused = cli("search", blurred, "--case", "C-1")
    assert refused.returncode == 3, refused.stderr
    assert "error [low_quality_probe]" in refused.stderr and "blurred" in refused.stderr
    assert "Traceback" not in refused.stderr
    forced = cli("search", blurred, "--case", "C-1", "--allow-low-quality")
    assert forced.returncode == 0, forced.stderr
    assert "quality: size" in forced.stdout and "searched by override" in forced.stdout
    group = cli("search", FIXTURES / "probes" / "obama_and_biden.jpg", "--case", "C-1")
    assert group.returncode == 0 and group.stdout.count("quality: size") == 3
    assert "Below the quality bar (blurred" in group.stdout and "not searched" in group.stdout
