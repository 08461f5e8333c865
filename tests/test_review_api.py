"""The review, probe-face, quality-gate and erasure-review endpoints over a real server."""

from __future__ import annotations

import pytest
from webserver import running_server

from conftest import FIXTURES, PROBES, REFERENCE

pytestmark = pytest.mark.slow
BLURRED = FIXTURES / "lfw_subjects" / "Ricardo_Lagos_0001.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(tmp_path_factory.mktemp("review"), pipeline) as s:
        yield s


def upload(path, field="image"):
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def test_probe_crop_review_sheet_and_source_over_http(server):
    ines, rita = server.client("ines"), server.client("rita")
    r = ines.post("/api/v1/search", files=upload(PROBES / "obama1.jpg"), data={"case": "CASE-1"})
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert face["searched"] and face["quality_problems"] == []
    crop = rita.get(face["probe_crop_url"])
    assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"
    assert "no-store" in crop.headers["cache-control"]
    # Not assigned to the case: refused, and the server never answers 500.
    made = server.client("admin").post(
        "/api/v1/users", json={"name": "ivo", "roles": ["investigator"]}
    )
    assert made.status_code == 201, made.text
    server.tokens["ivo"] = made.json()["token"]
    outsider = server.client("ivo")
    assert outsider.get(face["probe_crop_url"]).status_code == 403
    assert outsider.get("/api/v1/cases/CASE-1/review").status_code == 403
    assert server.client(None).get(face["probe_crop_url"]).status_code == 401
    sheet = rita.get("/api/v1/cases/CASE-1/review", params={"per_page": 5}).json()
    item = next(i for i in sheet["items"] if i["search_id"] == r.json()["search_id"])
    assert item["probe_crop_url"] == face["probe_crop_url"]
    assert rita.get(item["crop_url"]).status_code == 200
    source = rita.get(item["source_url"])
    assert source.status_code == 200 and source.content[:2] == b"\xff\xd8"
    assert rita.get("/api/v1/cases/CASE-1/review", params={"per_page": 0}).status_code == 422
    missing = rita.get(f"/api/v1/searches/{item['search_id']}/probe-faces/7/crop")
    assert missing.status_code == 404


def test_quality_gate_over_http(server):
    ines = server.client("ines")
    before = len(ines.get("/api/v1/cases/CASE-1/searches").json())
    refused = ines.post("/api/v1/search", files=upload(BLURRED), data={"case": "CASE-1"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "low_quality_probe"
    assert "blurred" in refused.json()["error"]["message"]
    assert len(ines.get("/api/v1/cases/CASE-1/searches").json()) == before  # no quota used
    forced = ines.post(
        "/api/v1/search",
        files=upload(BLURRED),
        data={"case": "CASE-1", "allow_low_quality": "true"},
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["faces"][0]["quality_problems"] == ["blurred"]


def test_erasure_review_over_http(server):
    dpo = server.client("dora")
    selfie = upload(REFERENCE / "obama2.jpg", "selfie")
    receipt = dpo.post(
        "/api/v1/subjects/erase", files=selfie, data={"confirm": "true", "threshold": "0.2"}
    ).json()
    assert receipt["threshold"] == 0.2 and receipt["residue"]["face_ids"] == []
    pending = [f["face_id"] for f in receipt["review"]]
    assert pending  # the obama face is between 0.2 and 0.6: listed, not erased
    url = f"/api/v1/subjects/erasures/{receipt['request_id']}/review"
    assert server.client("ines").post(url, json={"erase": pending}).status_code == 403
    assert dpo.post(url, json={"erase": [999999]}).status_code == 422
    done = dpo.post(url, json={"erase": pending[:1], "release": pending[1:]})
    assert done.status_code == 200, done.text
    assert done.json()["face_ids"] == pending[:1] and done.json()["still_pending"] == []
