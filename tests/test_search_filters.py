"""Search filters (sources, jurisdictions) are built in the core (``core/filters.py``): the
CLI (local and ``--server``) and the HTTP API take the same ones, give the same candidates,
and refuse a bad one with ``invalid_filter`` (CLI exit 2, HTTP 422) before any search."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_cli import cli_runner
from webserver import serving

from facewarden.core.errors import InvalidInput
from facewarden.core.filters import MAX_FILTER_VALUES, SearchFilter
from facewarden.services.app import Facewarden

from conftest import PROBES, REFERENCE, add_source, add_user, last_event, probe

VIDEO = Path(__file__).parent / "fixtures" / "video"


def _two_jurisdictions(fw: Facewarden, admin) -> None:
    """A second source, ``fr-press`` (FR), holding a second photo of Obama."""
    add_source(fw, admin, "fr-press", jurisdiction="FR")
    assert fw.ingest.run(admin, [REFERENCE / "obama2.jpg"], "fr-press").faces == 1


def _sources(faces: list[dict]) -> set[str]:
    return {c["source"] for f in faces for c in f["candidates"]}


def _ids(faces: list[dict]) -> list[list[int]]:
    return [[c["face_id"] for c in f["candidates"]] for f in faces]


# -- the core type ------------------------------------------------------------------------
def test_a_filter_is_normalised_from_what_a_user_typed() -> None:
    where = SearchFilter.of([" press ", "press", "fr-press"], ["fr", " De", "FR"])
    assert where is not None
    assert where.sources == {"press", "fr-press"} and where.jurisdictions == {"FR", "DE"}
    assert where.as_dict() == {"sources": ["fr-press", "press"], "jurisdictions": ["DE", "FR"]}
    assert SearchFilter.of(None, []) is None and SearchFilter.of([], None) is None
    only = SearchFilter.of(jurisdictions=["lu"])
    assert only is not None and only.sources is None and only.as_dict()["sources"] is None


@pytest.mark.parametrize(
    ("sources", "jurisdictions"),
    [
        ([""], None),
        (["   "], None),
        (["x" * 101], None),
        (["pre\x00ss"], None),
        (None, ["FRA"]),
        (None, ["F"]),
        (None, ["1A"]),
        (None, [""]),
        (None, ["fr\x00"]),
        ([f"s{n}" for n in range(MAX_FILTER_VALUES + 1)], None),
        (None, ["DE"] * (MAX_FILTER_VALUES + 1)),
    ],
)
def test_bad_filter_values_are_refused_as_invalid_filter(sources, jurisdictions) -> None:
    with pytest.raises(InvalidInput) as err:
        SearchFilter.of(sources, jurisdictions)
    assert err.value.code == "invalid_filter" and err.value.exit_code == 2


def test_the_constructor_checks_too() -> None:
    """Code that builds the type directly (past ``of``) cannot hand a service an unchecked
    filter: lower-case or malformed codes, padded names and empty sets are refused."""
    for kwargs in (
        {"jurisdictions": frozenset({"fr"})},
        {"jurisdictions": frozenset({"FRA"})},
        {"sources": frozenset({" press"})},
        {"sources": frozenset()},
        {"jurisdictions": frozenset()},
    ):
        with pytest.raises(InvalidInput) as err:
            SearchFilter(**kwargs)
        assert err.value.code == "invalid_filter"
    assert SearchFilter(sources=frozenset({"press"})).jurisdictions is None


# -- in the search service ----------------------------------------------------------------
def test_unknown_source_is_refused_logged_and_uses_no_quota(gallery_fw, admin) -> None:
    """A typo in a source name must not read as "no candidate": refused, logged as an error
    of the search, and the case's quota is not used."""
    before = gallery_fw.cases.show(admin, "CASE-1").searches
    with pytest.raises(InvalidInput) as err:
        gallery_fw.search.search(
            admin,
            probe("obama1.jpg"),
            case="CASE-1",
            where=SearchFilter.of(["press", "prees"]),
        )
    assert err.value.code == "invalid_filter" and "'prees'" in err.value.message
    event = last_event(gallery_fw, "search")
    assert event.outcome == "error" and "prees" in (event.error or "")
    assert gallery_fw.cases.show(admin, "CASE-1").searches == before


def test_a_jurisdiction_without_holdings_gives_no_candidate(gallery_fw, admin) -> None:
    result = gallery_fw.search.search(
        admin, probe("obama1.jpg"), case="CASE-1", where=SearchFilter.of(jurisdictions=["nl"])
    )
    assert all(f.no_candidate for f in result.faces)
    details = json.loads(last_event(gallery_fw, "search").details)
    assert details["filter"] == {"sources": None, "jurisdictions": ["NL"]}


@pytest.mark.slow  # a video search (frames detected and embedded) on two cores
def test_video_search_takes_the_same_filter(gallery_fw, admin, tmp_path) -> None:
    """Lin-Manuel Miranda, held only by the FR source, is found in the clip unfiltered
    (tests/test_video.py) and excluded by a DE-only filter, which is logged."""
    add_source(gallery_fw, admin, "fr-press", jurisdiction="FR")
    (tmp_path / "ref").mkdir()
    shutil.copy(VIDEO / "lin_manuel_miranda.jpg", tmp_path / "ref")
    assert gallery_fw.ingest.run(admin, [tmp_path / "ref"], "fr-press").faces == 1
    ines = add_user(gallery_fw, admin, "ines", "investigator")
    gallery_fw.cases.assign(admin, "CASE-1", "ines")
    clip = VIDEO / "short_hamilton_clip.mp4"
    kept = gallery_fw.video.search(
        ines, clip, case="CASE-1", fps=2, where=SearchFilter.of(["fr-press"])
    )
    assert {c.source for t in kept.tracks for c in t.candidates} == {"fr-press"}
    details = json.loads(last_event(gallery_fw, "search").details)
    assert details["filter"] == {"sources": ["fr-press"], "jurisdictions": None}
    left_out = gallery_fw.video.search(
        ines, clip, case="CASE-1", fps=2, where=SearchFilter.of(jurisdictions=["de"])
    )
    assert not {c.source for t in left_out.tracks for c in t.candidates} & {"fr-press"}
    with pytest.raises(InvalidInput) as err:
        gallery_fw.video.search(ines, clip, case="CASE-1", where=SearchFilter.of(["nope"]))
    assert err.value.code == "invalid_filter"


# -- the CLI and the HTTP API alike -------------------------------------------------------
@pytest.mark.slow  # the CLI in subprocesses and a real server
def test_the_cli_and_the_http_api_take_the_same_filters(gallery_fw, admin, tmp_path) -> None:
    _two_jurisdictions(gallery_fw, admin)
    token = gallery_fw.users.add(admin, "ines", ["investigator"])
    gallery_fw.cases.assign(admin, "CASE-1", "ines")
    settings = gallery_fw.settings
    gallery_fw.close()
    data_dir, database_url = settings.data_dir, settings.database_url
    cli = cli_runner(data_dir, database_url)
    probe_path = PROBES / "obama1.jpg"

    filters = {
        "none": ((), {}),
        "FR": (("--jurisdiction", "fr"), {"jurisdiction": ["fr"]}),
        "press": (("--source", "press"), {"source": ["press"]}),
        "both": (
            ("--source", "press", "--source", "fr-press", "--jurisdiction", "FR"),
            {"source": ["press", "fr-press"], "jurisdiction": ["FR"]},
        ),
    }
    bad = [("--jurisdiction", "FRA"), ("--source", ""), ("--source", "nope")]
    # The local searches one after the other in one CLI process (conftest.run_batch).
    search = ("search", probe_path, "--case", "CASE-1")
    runs = [(*search, *args, "--json") for args, _ in filters.values()]
    answers = cli.batch(*runs, *[(*search, *args) for args in bad], token=token)
    good, refused = answers[: len(filters)], answers[len(filters) :]
    assert all(proc.returncode == 0 for proc in good), [p.stderr for p in good]
    by_cli = {
        name: json.loads(proc.stdout)["faces"] for name, proc in zip(filters, good, strict=True)
    }
    assert _sources(by_cli["none"]) == {"press", "fr-press"}
    assert _sources(by_cli["FR"]) == {"fr-press"} == _sources(by_cli["both"])
    assert _sources(by_cli["press"]) == {"press"}
    for proc in refused:
        assert proc.returncode == 2 and "error [invalid_filter]" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr

    with serving(
        data_dir, {"ines": token}, tmp_path / "server.log", database_url, seconds=60
    ) as server:
        api = server.client("ines")

        def post(form: dict, route: str = "/api/v1/search", name: str = "image"):
            content = probe_path.read_bytes()
            files = {name: (probe_path.name, content)}
            return api.post(route, files=files, data={"case": "CASE-1", **form})

        for name, (_, form) in filters.items():
            response = post(form)
            assert response.status_code == 200, response.text
            assert _ids(response.json()["faces"]) == _ids(by_cli[name]), name
        remote = cli_runner(data_dir, None, FACEWARDEN_URL=server.url)
        for name, proc in zip(filters, remote.batch(*runs, token=token), strict=True):
            assert proc.returncode == 0, proc.stderr
            assert _ids(json.loads(proc.stdout)["faces"]) == _ids(by_cli[name]), name
        for form in (
            {"jurisdiction": ["FRA"]},
            {"jurisdiction": [""]},
            {"source": [""]},
            {"source": ["nope"]},
            {"source": ["x" * 101]},
        ):
            for route, field in (("/api/v1/search", "image"), ("/api/v1/search/video", "video")):
                response = post(form, route, field)
                assert response.status_code == 422, (route, form, response.text)
                assert response.json()["error"]["code"] == "invalid_filter", response.text
        # The OpenAPI lists the filter fields of both search routes.
        spec = api.get("/openapi.json").json()
        forms = [
            name
            for name, schema in spec["components"]["schemas"].items()
            if {"case", "threshold", "allow_low_quality"} <= set(schema.get("properties", {}))
        ]
        assert len(forms) == 2, forms
        for name in forms:
            assert {"source", "jurisdiction"} <= set(
                spec["components"]["schemas"][name]["properties"]
            )
