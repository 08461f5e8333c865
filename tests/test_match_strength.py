"""Calibrated false-match estimates and the threshold policy by target FPIR, on a real
gallery with the real models and the committed calibration table."""

import hashlib
import json
from pathlib import Path

import pytest

from facewarden.calibration import for_model
from facewarden.core.errors import InvalidInput, Refused

from conftest import PROBES, REFERENCE, last_event, open_case

LFW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lfw"


def calibration(fw):
    cal = for_model(fw.model_id)
    assert cal is not None, f"no committed calibration for {fw.model_id}"
    return cal


def test_calibration_table_is_monotone_and_documents_its_data(fw):
    cal = calibration(fw)
    assert list(cal.distances) == sorted(cal.distances)
    assert all(a <= b for a, b in zip(cal.fmrs, cal.fmrs[1:], strict=False))
    assert all(f >= cal.fmr_floor for f in cal.fmrs)
    data = cal.source["data"]
    assert len(data["files_sha256"]) == 64 and data["people"] > 3000
    assert cal.pairs > 1_000_000 and cal.source["recipe"]["template_space"] == fw.model_id
    # The model's 1:1 operating point is far from a 1:N one: FMR at 0.6 is orders of
    # magnitude above FMR at 0.4.
    assert cal.fmr(0.6) > 100 * cal.fmr(0.4)
    # Between tabulated points the next one up is used (never an underestimate).
    assert cal.fmr(0.5) <= cal.fmr(0.5001) <= cal.fmr(0.505)


@pytest.mark.skipif(not LFW.is_dir(), reason="needs ../shared/data/lfw")
def test_calibration_fingerprint_matches_the_shared_lfw_listing(fw):
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    listing = "".join(
        f"{sorted(p.glob('*.jpg'))[0].relative_to(LFW)}\n" for p in people if any(p.glob("*.jpg"))
    )
    assert (
        hashlib.sha256(listing.encode()).hexdigest()
        == calibration(fw).source["data"]["files_sha256"]
    )


def test_fpir_threshold_shrinks_as_the_gallery_grows(fw):
    cal = calibration(fw)
    sizes = [10, 1_000, 10_000, 100_000, 1_000_000]
    thresholds = [cal.threshold_for_fpir(0.01, n) for n in sizes]
    assert thresholds == sorted(thresholds, reverse=True) and thresholds[0] > thresholds[-1]
    for n, t in zip(sizes, thresholds, strict=True):
        # the largest tabulated distance within the target: the next one is over it
        assert n * cal.fmr(t) <= 0.01 or t == cal.distances[0]
        nxt = [d for d in cal.distances if d > t]
        assert not nxt or n * cal.fmr(nxt[0]) > 0.01
    for bad in (0, 1, -0.1, 2):
        with pytest.raises(InvalidInput):
            cal.threshold_for_fpir(bad, 100)


def test_each_candidate_carries_fmr_and_expected_strangers(gallery_fw, admin):
    cal = calibration(gallery_fw)
    result = gallery_fw.search.search(
        admin, (PROBES / "obama_and_biden.jpg").read_bytes(), case="CASE-1"
    )
    out = json.loads(json.dumps(result.as_dict()))
    assert out["gallery_size"] == 5 and out["threshold_policy"]["policy"] == "fixed"
    assert out["calibration"]["data_fingerprint"] == cal.source["data"]["files_sha256"]
    seen = 0
    for face in out["faces"]:
        assert face["expected_false_candidates"] == pytest.approx(5 * cal.fmr(0.6), rel=1e-2)
        for c in face["candidates"]:
            seen += 1
            assert c["fmr"] == pytest.approx(cal.fmr(c["distance"]), rel=1e-2)
            assert c["expected_strangers"] == pytest.approx(5 * c["fmr"], rel=1e-2)
    assert seen >= 2


def test_case_with_target_fpir_searches_at_the_calibrated_threshold(gallery_fw, admin):
    cal = calibration(gallery_fw)
    info = open_case(gallery_fw, admin, "STRICT", target_fpir=1e-5)
    assert info.threshold_policy == "fpir" and info.target_fpir == 1e-5
    expected = cal.threshold_for_fpir(1e-5, 5)
    assert expected < 0.6
    result = gallery_fw.search.search(admin, (REFERENCE / "obama2.jpg").read_bytes(), case="STRICT")
    assert result.threshold == expected
    assert all(c.distance <= expected for f in result.faces for c in f.candidates)
    assert result.threshold_policy["policy"] == "fpir"
    assert result.threshold_policy["gallery_size"] == 5
    assert result.threshold_policy["within_target"] is True
    ev = last_event(gallery_fw, "search")
    assert ev.threshold == expected
    details = json.loads(ev.details) if isinstance(ev.details, str) else ev.details
    assert details["threshold_policy"]["target_fpir"] == 1e-5
    assert details["threshold_policy"]["set_by"] == "case"
    # A stricter explicit threshold is allowed and recorded with the case's own.
    strict = gallery_fw.search.search(
        admin, (REFERENCE / "obama2.jpg").read_bytes(), case="STRICT", threshold=0.3
    )
    assert strict.threshold == 0.3 and strict.threshold_policy["set_by"] == "request"
    assert strict.threshold_policy["case_threshold"] == expected


def test_an_investigator_cannot_loosen_a_cases_fpir_threshold(gallery_fw, admin):
    open_case(gallery_fw, admin, "STRICT", target_fpir=1e-5)
    before = gallery_fw.cases.show(admin, "STRICT").searches
    with pytest.raises(Refused, match="looser threshold"):
        gallery_fw.search.search(
            admin, (REFERENCE / "obama2.jpg").read_bytes(), case="STRICT", threshold=0.6
        )
    ev = last_event(gallery_fw, "search")
    assert ev.outcome == "refused" and "looser" in ev.error and ev.case_ref == "STRICT"
    assert gallery_fw.cases.show(admin, "STRICT").searches == before  # no quota used
    # a case without a policy of its own keeps today's behaviour
    loose = gallery_fw.search.search(
        admin, (REFERENCE / "obama2.jpg").read_bytes(), case="CASE-1", threshold=0.7
    )
    assert loose.threshold == 0.7 and loose.threshold_policy == {
        "policy": "fixed",
        "set_by": "request",
    }


def test_fpir_policy_is_never_looser_than_the_fixed_threshold(gallery_fw, admin):
    # a gallery of 5 and a lax target would allow far more than 0.6
    open_case(gallery_fw, admin, "LAX", target_fpir=0.5)
    result = gallery_fw.search.search(admin, (REFERENCE / "obama2.jpg").read_bytes(), case="LAX")
    assert result.threshold == 0.6


@pytest.mark.parametrize(
    "kw",
    [
        {"target_fpir": 0},
        {"target_fpir": 1.0},
        {"target_fpir": -0.01},
        {"threshold_policy": "lenient"},
        {"threshold_policy": "fixed", "target_fpir": 0.01},
    ],
)
def test_bad_threshold_policy_is_refused_at_case_open(gallery_fw, admin, kw):
    with pytest.raises(InvalidInput):
        open_case(gallery_fw, admin, "BAD", **kw)


@pytest.mark.slow  # the CLI in subprocesses
def test_cli_case_open_target_fpir_and_search_text_output(gallery_cli):
    """On a copy of the session's CLI-built gallery (its case C-1 has the fixed policy)."""

    def cli(*args):
        return gallery_cli(*args, ok=False)

    case = ["--purpose", "p", "--legal-basis", "b", "--authorisation", "a"]
    bad = cli("case", "open", "C-0", *case, "--target-fpir", "2")
    assert bad.returncode == 2 and "error [" in bad.stderr and "Traceback" not in bad.stderr
    opened = cli("case", "open", "C-2", *case, "--target-fpir", "0.00001")
    assert opened.returncode == 0 and "target FPIR 1e-05" in opened.stdout
    text = cli("search", REFERENCE / "obama2.jpg", "--case", "C-2")
    assert text.returncode == 0, text.stderr
    assert "FMR" in text.stdout and "exp. strangers" in text.stdout
    assert "by target FPIR 1e-05" in text.stdout
    assert "Expected false candidates if this person is not in the gallery" in text.stdout
    out = json.loads(cli("search", REFERENCE / "obama2.jpg", "--case", "C-2", "--json").stdout)
    assert out["threshold_policy"]["policy"] == "fpir"
    assert all("fmr" in c for f in out["faces"] for c in f["candidates"])


def test_fpir_policy_without_a_calibration_is_a_clear_logged_error(gallery_fw, admin, monkeypatch):
    """A template space no calibration covers (a future model): the fpir policy cannot be
    applied; the search fails with a clear message and is logged, and fixed searches still
    work without estimates."""
    from facewarden import calibration

    monkeypatch.delitem(calibration.TABLES, gallery_fw.model_id)
    calibration.for_model.cache_clear()
    try:
        open_case(gallery_fw, admin, "FPIR", target_fpir=0.01)
        with pytest.raises(InvalidInput, match="no calibration"):
            gallery_fw.search.search(admin, (REFERENCE / "obama2.jpg").read_bytes(), case="FPIR")
        ev = last_event(gallery_fw, "search")
        assert ev.outcome == "error" and "no calibration" in ev.error
        plain = gallery_fw.search.search(
            admin, (REFERENCE / "obama2.jpg").read_bytes(), case="CASE-1"
        )
        assert plain.calibration is None
        assert plain.faces[0].candidates and plain.faces[0].candidates[0].fmr is None
    finally:
        calibration.for_model.cache_clear()
