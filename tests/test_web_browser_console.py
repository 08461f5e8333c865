"""The console's search controls, data-protection receipts and audit table in a real headless
Chromium against a real server (the fixtures of ``test_web_browser``). The gallery adds the
LFW fixture crops: Jennifer Lopez's eight photos linked to one subject by a manifest, Ricardo
Lagos's eight photos without one. Screenshots (1280x900) go to ``test-artefacts/console-*``."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import test_web_browser as console_browser
from sqlalchemy import select
from test_web_browser import ARTEFACTS, ready, until
from webserver import running_server

from facewarden.adapters.storage.tables import Media

from conftest import FIXTURES, add_source, open_case

pytestmark = pytest.mark.slow
# The browser and the logged-in page of test_web_browser, over this module's server.
browser = console_browser.browser
login = console_browser.login
LFW = FIXTURES / "lfw_subjects"
VIDEO = FIXTURES.parent / "video"
SUBJECTS = {
    "Jennifer_Lopez": "CR-2024-0117",
    "Hans_Blix": "CR-2023-0042",
    "John_Bolton": "CR-2022-0007",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    root = tmp_path_factory.mktemp("console")

    def prepare(fw, admin):
        add_source(fw, admin, "custody", jurisdiction="FR")
        files = sorted(LFW.glob("*.jpg"))
        manifest = root / "manifest.csv"
        with manifest.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["file", "subject"])
            for f in files:
                person = f.stem.rsplit("_", 1)[0]
                if person in SUBJECTS:
                    writer.writerow([str(f), SUBJECTS[person]])
        summary = fw.ingest.run(admin, files, "custody", manifest=manifest)
        assert summary.faces == len(files) and summary.subjects["subjects"] == 3, summary
        add_source(fw, admin, "cctv")
        clip = fw.ingest.run(admin, [VIDEO / "short_hamilton_clip.mp4"], "cctv")
        assert clip.faces > 0, clip
        open_case(
            fw, admin, "CASE-2", investigators=["ines"], threshold_policy="fpir", target_fpir=0.01
        )
        # A deleted photo and the physical purge of its bytes (``facewarden index purge``):
        # the purge is a receipt on the DPO page.
        with fw.sessions() as session:
            wolfowitz = session.scalar(
                select(Media.id).where(Media.path.like("%Paul_Wolfowitz_0002%"))
            )
        fw.gallery.delete_media(admin, [wolfowitz])
        fw.gallery.purge_index(admin)

    with running_server(root, pipeline, prepare) as s:
        yield s


def shot(page, name: str) -> None:
    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTEFACTS / f"console-{name}.png")


def search(page, probe: Path, *, case="CASE-1", top_k=10, threshold: float | None = None):
    page.select_option("#case", case)
    page.set_input_files("#probe", str(probe))
    page.fill("#top-k", str(top_k))
    page.select_option("#threshold-mode", "case" if threshold is None else "fixed")
    if threshold is not None:
        page.fill("#threshold", str(threshold))
    before = page.inner_text("#search-meta") if page.locator("#search-meta").count() else ""
    page.click("#search-btn")
    until(lambda: page.inner_text("#search-meta") not in ("", before) or flashed_error(page))


def images_loaded(page, selector: str) -> None:
    until(
        lambda: page.evaluate(
            f"[...document.querySelectorAll({selector!r})].every(i => i.complete && i.naturalWidth)"
        )
    )


def flashed_error(page) -> bool:
    return page.locator("#flash .error").count() > 0


def total_candidates(page) -> int:
    text = page.inner_text("#cand-page")  # "page 1 of 2 · candidates 1–6 of 8"
    return int(text.rsplit(" of ", 1)[1])


def shown(page) -> list[tuple[int, float]]:
    cards = page.locator("#candidates .candidate")
    return [
        (int(c.get_attribute("data-face-id")), float(c.get_attribute("data-distance")))
        for c in (cards.nth(i) for i in range(cards.count()))
    ]


def test_search_controls_reach_the_api_and_the_result_follows_them(login, server):
    page = login("ines")
    ready(page, "/search")
    assert "fixed distance 0.6" in page.inner_text("#case-policy")
    probe = LFW / "Ricardo_Lagos_0002.jpg"
    search(page, probe, top_k=20, threshold=0.6)
    assert "threshold 0.6 (fixed for this search)" in page.inner_text("#search-meta")
    wide = total_candidates(page)
    assert wide >= 7  # Ricardo Lagos's other photos
    # Paging: six per page, the second page holds the rest, no candidate twice.
    page.select_option("#cand-per-page", "6")
    first = shown(page)
    assert len(first) == 6 and "page 1 of 2" in page.inner_text("#cand-page")
    assert [d for _, d in first] == sorted(d for _, d in first)
    card = page.locator("#candidates .candidate").nth(1)
    text = card.inner_text()
    assert "FMR ≈" in text and "strangers this close" in text and "custody (FR)" in text
    assert "Ricardo_Lagos_" in text
    images_loaded(page, "#candidates img")
    shot(page, "search-1-controls-candidates-paged")
    page.click("#cand-next")
    page.wait_for_selector("#cand-page:has-text('page 2 of 2')")
    second = shown(page)
    assert len(second) == wide - 6
    assert not {f for f, _ in first} & {f for f, _ in second}
    assert all(d <= 0.6 for _, d in first + second)

    # A stricter distance: fewer candidates, all within it.
    search(page, probe, top_k=20, threshold=0.4)
    assert "threshold 0.4 (fixed for this search)" in page.inner_text("#search-meta")
    strict = total_candidates(page)
    assert 0 < strict < wide
    assert all(d <= 0.4 for _, d in shown(page))

    # Top-k 1: one candidate per probe face, the nearest.
    search(page, probe, top_k=1, threshold=0.6)
    assert total_candidates(page) == 1 and len(shown(page)) == 1
    assert shown(page)[0][1] == first[0][1]
    # What reached the server: the search's audit record holds the values sent.
    record = (
        server.client("only-auditor")
        .get("/api/v1/audit/events", params={"action": "search", "user": "ines", "limit": 3})
        .json()
    )
    assert [r["details"]["top_k"] for r in record] == [1, 20, 20]
    assert [r["threshold"] for r in record] == [0.6, 0.4, 0.6]


def test_search_groups_a_subject_and_applies_the_case_fpir_policy(login):
    page = login("ines")
    ready(page, "/search")
    search(page, LFW / "Jennifer_Lopez_0004.jpg", top_k=10)
    top = page.locator("#candidates .candidate").first
    assert "subject CR-2024-0117 · 8 face(s) matched" in top.inner_text()
    # One candidate for the person, not eight photos.
    texts = [
        page.locator("#candidates .candidate").nth(i).inner_text() for i in range(len(shown(page)))
    ]
    assert sum("Jennifer_Lopez" in t for t in texts) == 1
    assert "strangers expected within distance 0.6 in a gallery of" in page.inner_text(
        "#face-estimate"
    )
    images_loaded(page, "#candidates img, #face-crop")
    shot(page, "search-2-subject-grouped")

    # CASE-2 searches by target FPIR: the page says so, the result too, and a looser fixed
    # distance is refused by the server.
    page.select_option("#case", "CASE-2")
    assert "target FPIR 0.01" in page.inner_text("#case-policy")
    search(page, LFW / "Ricardo_Lagos_0002.jpg", case="CASE-2", top_k=10)
    meta = page.inner_text("#search-meta")
    assert "by target FPIR 0.01" in meta, meta
    fpir_threshold = float(meta.split("threshold ")[1].split(" ")[0])
    assert all(d <= fpir_threshold for _, d in shown(page))
    search(page, LFW / "Ricardo_Lagos_0002.jpg", case="CASE-2", top_k=10, threshold=1.2)
    page.wait_for_selector("#flash .error:has-text('looser threshold')")


def test_candidates_from_a_gallery_video_show_their_time_in_it(login):
    page = login("ines")
    ready(page, "/search")
    search(page, VIDEO / "lin_manuel_miranda.jpg", top_k=10)
    cards = page.locator("#candidates .candidate", has_text="short_hamilton_clip.mp4")
    assert cards.count() >= 1
    for i in range(cards.count()):
        time_line = cards.nth(i).locator(".time").inner_text()  # "at 0:06.1 in its video (track 2)"
        assert time_line.startswith("at 0:") and "in its video (track " in time_line
        assert 0 <= float(time_line.split(":")[1].split(" ")[0]) <= 11  # a 10 s clip
    images_loaded(page, "#candidates img, #face-crop")
    shot(page, "search-3-video-candidates-with-time")


def test_dpo_page_lists_real_receipts_with_their_counts(login, server):
    dora = server.client("dora")
    selfie = {"selfie": ("s.jpg", (LFW / "Donald_Rumsfeld_0022.jpg").read_bytes(), "image/jpeg")}
    erased = dora.post(
        "/api/v1/subjects/erase", files=selfie, data={"confirm": "true", "reference": "DSR-41"}
    )
    assert erased.status_code == 200, erased.text
    erased = erased.json()
    by_ref = dora.post(
        "/api/v1/subjects/by-reference/erase",
        json={"subject": SUBJECTS["John_Bolton"], "confirm": True},
    ).json()
    restricted = dora.post(
        "/api/v1/subjects/by-reference/restrict", json={"subject": SUBJECTS["Hans_Blix"]}
    )
    assert restricted.status_code == 200, restricted.text
    selfie = {"selfie": ("a.jpg", (LFW / "Angelina_Jolie_0003.jpg").read_bytes(), "image/jpeg")}
    access = dora.post("/api/v1/subjects/access", files=selfie, data={"reference": "DSR-42"}).json()
    listed = dora.get("/api/v1/subjects/receipts").json()["receipts"]
    assert {"erasure", "access", "restriction", "purge"} <= {r["kind"] for r in listed}
    # Only the people who handle or audit rights requests read receipts.
    assert server.client("ines").get("/api/v1/subjects/receipts").status_code == 403

    page = login("dora")
    ready(page, "/dpo")
    table = page.locator("#receipts-table tbody tr")
    until(lambda: table.count() == len(listed))
    row = page.locator(f"#receipts-table tr[data-receipt='request-{erased['request_id']}']")
    c = erased["collateral"]
    assert row.locator(".faces").inner_text() == f"{erased['faces']} erased"
    assert row.locator(".collateral").inner_text() == (
        f"{c['erased_beyond_strict_threshold']} erased beyond strict · "
        f"{c['withheld_pending_review']} withheld for review"
    )
    assert row.locator(".residue").inner_text() == str(len(erased["residue"]["face_ids"]))
    assert "DSR-41" in row.inner_text()
    ref_row = page.locator(f"#receipts-table tr[data-receipt='request-{by_ref['request_id']}']")
    assert (
        ref_row.locator(".faces").inner_text() == f"{by_ref['faces']} erased"
        and by_ref["faces"] == 2
    )
    acc_row = page.locator(f"#receipts-table tr[data-receipt='request-{access['request_id']}']")
    assert acc_row.locator(".faces").inner_text() == f"{len(access['matches'])} found"
    page.locator("#receipts").scroll_into_view_if_needed()
    page.evaluate("document.querySelector('#receipts').scrollIntoView()")
    shot(page, "dpo-1-receipts")

    # View: the stored receipt, with its hash; download: the same JSON.
    row.locator("button.view").click()
    page.wait_for_selector("#receipt-dialog[open]")
    assert erased["receipt_sha256"] in page.inner_text("#receipt-summary")
    assert (
        json.loads(page.inner_text("#receipt-json"))["receipt_sha256"] == erased["receipt_sha256"]
    )
    shot(page, "dpo-2-receipt-view")
    with page.expect_download() as got:
        page.click("#receipt-download")
    saved = json.loads(Path(got.value.path()).read_text())
    assert {k: saved[k] for k in erased} == erased
    page.click("#receipt-close")

    # Filter by kind: restrictions only.
    page.select_option("#receipts-filter select[name=kind]", "restriction")
    until(lambda: table.count() == 1)
    assert (
        SUBJECTS["Hans_Blix"] in table.first.inner_text() and "2 media" in table.first.inner_text()
    )


def test_dpo_receipts_page_server_side_and_list_the_physical_purge(login, server):
    dora = server.client("dora")
    blix = SUBJECTS["Hans_Blix"]
    for restricted in (True, False) * 6:  # twelve cheap receipts: more than a page of ten
        done = dora.post(
            "/api/v1/subjects/by-reference/restrict",
            json={"subject": blix, "restricted": restricted},
        )
        assert done.status_code == 200, done.text
    everything = dora.get("/api/v1/subjects/receipts", params={"limit": 500}).json()
    assert everything["next"] is None and len(everything["receipts"]) > 12
    ids = [r["id"] for r in everything["receipts"]]
    # The API pages by before_seq; no page repeats or skips a receipt.
    first = dora.get("/api/v1/subjects/receipts", params={"limit": 10}).json()
    assert [r["id"] for r in first["receipts"]] == ids[:10]
    assert first["next"] == first["receipts"][-1]["audit_seq"]
    # Bad paging parameters: a clear 422, never a 500; others are refused whatever they ask.
    for params in (
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"before_seq": 0},
        {"before_seq": 2**40},
        {"kind": "bogus"},
        {"reference": "x" * 201},
    ):
        bad = dora.get("/api/v1/subjects/receipts", params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["error"]["code"] == "invalid_request"
    refused = server.client("ines").get("/api/v1/subjects/receipts", params={"limit": 1})
    assert refused.status_code == 403

    page = login("dora")
    ready(page, "/dpo")
    body = page.locator("#receipts-table tbody tr")

    def loads() -> int:
        return int(page.get_attribute("#receipts-table", "data-loads") or 0)

    def shown() -> list[str]:
        return [body.nth(i).get_attribute("data-receipt") for i in range(body.count())]

    def after(action) -> None:
        before = loads()
        action()
        until(lambda: loads() > before)

    after(lambda: page.select_option("#receipts-per-page", "10"))
    assert shown() == ids[:10] and page.is_disabled("#receipts-newer")
    assert "page 1" in page.inner_text("#receipts-page")
    page.evaluate("document.querySelector('#receipts').scrollIntoView()")
    shot(page, "dpo-3-receipts-paged")
    # A receipt written while page 1 is shown does not shift page 2.
    assert dora.post("/api/v1/subjects/by-reference/restrict", json={"subject": blix}).is_success
    after(lambda: page.click("#receipts-older"))
    assert "page 2" in page.inner_text("#receipts-page")
    second = shown()
    assert second == ids[10:20] and not set(second) & set(ids[:10])
    pages = [ids[:10], second]
    while not page.is_disabled("#receipts-older"):
        after(lambda: page.click("#receipts-older"))
        pages.append(shown())
    assert [i for p in pages for i in p] == ids  # every receipt once, in order
    while not page.is_disabled("#receipts-newer"):
        after(lambda: page.click("#receipts-newer"))
    # Back on page 1, fetched afresh: the receipt written meanwhile heads it.
    again = shown()
    assert again[0] not in ids and again[1:] == ids[:9]

    # The physical purge: filter by its kind; what it covers, who ran it, its hash.
    purge = next(r for r in everything["receipts"] if r["kind"] == "purge")
    after(lambda: page.select_option("#receipts-filter select[name=kind]", "purge"))
    assert shown() == [purge["id"]] and "page 1" in page.inner_text("#receipts-page")
    row = body.first
    assert "physical purge" in row.inner_text() and "admin" in row.inner_text()
    assert row.locator(".faces").inner_text() == "1 deletion(s) purged"
    row.locator("button.view").click()
    page.wait_for_selector("#receipt-dialog[open]")
    summary = page.inner_text("#receipt-summary")
    assert purge["audit_hash"] in summary
    assert f"audit records {purge['receipt']['covers_audit_seqs'][0]}" in summary
    assert (
        json.loads(page.inner_text("#receipt-json"))["covers_audit_seqs"]
        == (purge["receipt"]["covers_audit_seqs"])
    )
    shot(page, "dpo-4-purge-receipt")
    page.click("#receipt-close")
    # Reference filter, on the server: Hans Blix's restrictions and lifts only.
    after(lambda: page.select_option("#receipts-filter select[name=kind]", ""))
    after(lambda: page.fill("#receipts-filter input[name=reference]", blix.lower()))
    texts = body.all_inner_texts()
    assert len(texts) == 10 and all(blix in t for t in texts)


def test_audit_page_is_a_filterable_paged_table(login, server):
    # Refusals to find: neither an investigator nor a reviewer may read the audit log.
    for user in ("ines", "rita"):
        assert server.client(user).get("/api/v1/audit/events").status_code == 403
    page = login("only-auditor")
    ready(page, "/audit")
    assert "Hash chain intact" in page.inner_text("#chain")
    body = page.locator("#audit-table tbody tr")
    page.select_option("#audit-per-page", "15")
    until(lambda: body.count() == 15)
    assert page.locator("#audit-table thead").inner_text().split("\t")[:7] == [
        "#", "Time (UTC)", "User", "Role", "Action", "Case", "Outcome",
    ]  # fmt: skip
    users = {body.nth(i).locator("td").nth(2).inner_text() for i in range(body.count())}
    assert "{" not in page.inner_text("#audit-table tbody")  # summaries, not raw JSON
    shot(page, "audit-1-table")

    # Paging: older records, then back.
    first_seq = int(body.first.get_attribute("data-seq"))
    page.click("#older")
    page.wait_for_selector("#audit-page:has-text('page 2')")
    assert int(body.first.get_attribute("data-seq")) < first_seq - 14
    page.click("#newer")
    page.wait_for_selector("#audit-page:has-text('page 1')")

    def loads() -> int:
        return int(page.get_attribute("#audit-table", "data-loads") or 0)

    def filtered(**fields) -> list[list[str]]:
        before = loads()
        page.click("#audit-clear")  # clears the filters and reloads
        until(lambda: loads() > before)
        for name, value in fields.items():
            if name == "outcome":
                page.select_option(f"#audit-filter [name={name}]", value)
            else:
                page.fill(f"#audit-filter [name={name}]", value)
        before = loads()
        page.click("#audit-filter button[type=submit]")
        until(lambda: loads() > before)
        return [body.nth(i).locator("td").all_inner_texts() for i in range(body.count())]

    rows = filtered(user="ines")
    assert rows and all(r[2] == "ines" for r in rows)
    shot(page, "audit-2-filtered-by-user")
    assert len(users) > 1  # the filter narrowed something
    rows = filtered(outcome="refused")
    assert rows and all(r[6] == "refused" for r in rows)
    assert any(r[2] == "rita" and r[4] == "audit.read" for r in rows), rows
    rows = filtered(action="case", case="CASE-2")  # "case" finds case.open, case.close...
    assert rows and all(r[4].startswith("case.") and r[5] == "CASE-2" for r in rows)
    assert "case.open" in [r[4] for r in rows]
    # Time range: nothing before the server existed; everything of the last hour.
    rows = filtered(since="2020-01-01T00:00", until="2021-01-01T00:00")
    assert rows == [] and page.locator("#audit-none").is_visible()
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    rows = filtered(since=hour_ago, user="ines")
    assert rows and all(r[2] == "ines" and r[1] >= hour_ago.replace("T", " ") for r in rows)
