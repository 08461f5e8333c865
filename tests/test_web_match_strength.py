"""Match-strength estimates, the FPIR threshold policy and subject rights by reference over
the HTTP API of a real server process."""

from __future__ import annotations

import pytest
from webserver import running_server

from conftest import PROBES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(tmp_path_factory.mktemp("api-fpir"), pipeline) as s:
        yield s


CASE = {"purpose": "robbery", "legal_basis": "StPO s.98c", "authorisation": "court 1/26"}


def test_case_with_target_fpir_and_search_estimates(server):
    inv = server.client("ines")
    for bad in ({"target_fpir": 0}, {"target_fpir": 1.5}, {"threshold_policy": "loose"}):
        r = inv.post("/api/v1/cases", json={"ref": "BAD"} | CASE | bad)
        assert r.status_code in (400, 422), r.text
    r = inv.post("/api/v1/cases", json={"ref": "FPIR-1", "target_fpir": 0.00001} | CASE)
    assert r.status_code == 201, r.text
    assert r.json()["threshold_policy"] == "fpir" and r.json()["target_fpir"] == 0.00001
    probe = PROBES / "obama1.jpg"
    r = inv.post(
        "/api/v1/search",
        files={"image": (probe.name, probe.read_bytes(), "image/jpeg")},
        data={"case": "FPIR-1"},
    )
    assert r.status_code == 200, r.text
    result = r.json()
    policy = result["threshold_policy"]
    assert policy["policy"] == "fpir" and policy["set_by"] == "case"
    assert result["threshold"] < 0.6 and result["calibration"]["pairs"] > 1_000_000
    face = result["faces"][0]
    assert face["expected_false_candidates"] is not None
    for c in face["candidates"]:
        assert c["distance"] <= result["threshold"]
        assert c["expected_strangers"] == pytest.approx(result["gallery_size"] * c["fmr"], rel=0.02)


def test_subject_rights_by_reference_answer_clearly(server):
    dpo, inv = server.client("dora"), server.client("ines")
    r = dpo.post("/api/v1/subjects/by-reference/access", json={"subject": "R-404"})
    assert r.status_code == 404 and r.json()["error"]["code"]
    r = inv.post("/api/v1/subjects/by-reference/access", json={"subject": "R-404"})
    assert r.status_code == 403
    r = dpo.post("/api/v1/subjects/by-reference/erase", json={"subject": "R-404", "confirm": False})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = dpo.post("/api/v1/subjects/by-reference/restrict", json={"subject": ""})
    assert r.status_code in (400, 422)
