"""The web console in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) against a real server: log in, search, two-person confirmation, ingest, erasure,
audit. Screenshots go to ``test-artefacts/`` (or ``$FACEWARDEN_TEST_ARTEFACTS``)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from webserver import running_server

from conftest import PROBES, REFERENCE

pytestmark = pytest.mark.slow
VIDEO = Path(__file__).parent / "fixtures" / "video"

CHROMIUM = os.environ.get("FACEWARDEN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTEFACTS = Path(
    os.environ.get("FACEWARDEN_TEST_ARTEFACTS")
    or Path(__file__).resolve().parents[1] / "test-artefacts"
)

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"browser tests need Chromium at {CHROMIUM} (.ci/run installs it)")
    pytest.skip("no Chromium installed (apt install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(tmp_path_factory.mktemp("browser"), pipeline) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def login(server, browser, request):
    """Open a fresh browser context logged in as a user; screenshot it at the end."""
    contexts = []

    def as_user(user: str):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append((user, context))
        page = context.new_page()
        page.goto(server.url + "/login")
        page.fill("#token", server.tokens[user])
        page.click("#login-form button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        return page

    yield as_user
    ARTEFACTS.mkdir(exist_ok=True)
    for user, context in contexts:
        for n, page in enumerate(context.pages):
            page.screenshot(path=ARTEFACTS / f"{request.node.name}-{user}-{n}.png", full_page=True)
        context.close()


def ready(page, path: str) -> None:
    page.goto(page.url.split("/", 3)[0] + "//" + page.url.split("/", 3)[2] + path)
    page.wait_for_selector("body[data-ready]")


def until(check, seconds: float = 20) -> None:
    """Poll ``check`` (the console's CSP forbids Playwright's in-page polling)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def run_search(page, probe: Path):
    ready(page, "/search")
    page.select_option("#case", "CASE-1")
    page.set_input_files("#probe", str(probe))
    page.click("#search-btn")
    page.wait_for_selector("#search-meta:has-text('Search ')")


def test_login_is_required_and_wrong_tokens_are_refused(server, browser):
    page = browser.new_page()
    page.goto(server.url + "/search")
    assert page.url.endswith("/login")
    page.fill("#token", "not-a-token")
    page.click("#login-form button[type=submit]")
    assert "Unknown or revoked" in page.inner_text("#login-error")
    page.close()


def test_search_shows_boxes_and_the_right_candidate_first(login):
    page = login("ines")
    run_search(page, PROBES / "obama_and_biden.jpg")
    boxes = page.locator(".box")
    assert boxes.count() >= 2
    top = set()
    for i in range(boxes.count()):
        boxes.nth(i).click()
        assert "chosen" in boxes.nth(i).get_attribute("class")
        first = page.locator(".candidate").first
        if first.count():
            assert first.locator("strong").inner_text() == "#1"
            top.add(Path(first.locator(".path").inner_text()).stem)
    assert {"obama", "biden"} <= top
    # The crop image really loaded (served with the session cookie).
    boxes.first.click()
    page.wait_for_function("document.querySelector('.candidate img')?.complete")
    width = page.locator(".candidate img").first.evaluate("img => img.naturalWidth")
    assert width == 150


def test_no_candidate_is_said_plainly(login):
    page = login("ines")
    run_search(page, next((PROBES.parent / "unknown").iterdir()))
    assert page.locator("#no-candidate").is_visible()
    assert page.locator(".candidate").count() == 0


def test_video_search_shows_who_appears_when(login, server):
    # Add Lin-Manuel Miranda's reference photo to the gallery through the API.
    op = server.client("only-operator")
    job = op.post(
        "/api/v1/ingest",
        data={"source": "press"},
        files=[("files", ("lin_manuel_miranda.jpg", (VIDEO / "lin_manuel_miranda.jpg").read_bytes(),
                          "image/jpeg"))],
    ).json()  # fmt: skip
    deadline = time.monotonic() + 120
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
        job = op.get(f"/api/v1/jobs/{job['job_id']}").json()
    assert job["summary"]["faces"] == 1, job
    page = login("ines")
    ready(page, "/search")
    page.select_option("#case", "CASE-1")
    page.set_input_files("#probe", str(VIDEO / "short_hamilton_clip.mp4"))
    page.click("#search-btn")
    page.wait_for_selector("#video-meta:has-text('tracks')", timeout=180_000)
    assert page.locator("#result").is_hidden()
    row = page.locator("#timeline-table tbody tr", has_text="lin_manuel_miranda")
    assert row.count() == 1
    assert "0:03" in row.inner_text() or "0:04" in row.inner_text()  # the close shot
    tracks = page.locator("#tracks .track")
    assert tracks.count() >= 2
    page.wait_for_function("[...document.querySelectorAll('#tracks img')].every(i => i.complete)")
    assert page.locator("#tracks .track img").first.evaluate("img => img.naturalWidth") == 150
    assert page.locator("#tracks .candidate").count() >= 1


def test_two_person_confirmation_in_two_browsers(login):
    investigator = login("ines")
    run_search(investigator, PROBES / "obama1.jpg")
    assert "Probe quality: " in investigator.inner_text("#face-quality")
    card = investigator.locator(".candidate").first
    assert Path(card.locator(".path").inner_text()).stem == "obama"
    face_id = card.get_attribute("data-face-id")
    card.locator("button.confirm").click()
    investigator.wait_for_selector("#flash:has-text('state is now pending')")
    search_id = investigator.inner_text("#search-meta").split()[1]

    # The reviewer sees the probe face next to each candidate, and decides.
    reviewer = login("rita")
    ready(reviewer, "/cases")
    reviewer.click("#cases-table a:text('CASE-1')")
    reviewer.wait_for_selector("#searches-table tr[data-search-id]")
    reviewer.click("#case-review-link")
    reviewer.wait_for_selector("body[data-ready] #review-grid .pair")
    pair = reviewer.locator(f".pair[data-search-id='{search_id}'][data-face-id='{face_id}']")
    pair.locator(".probe img").wait_for()
    loaded = "img => img.complete && img.naturalWidth > 0"
    until(
        lambda: reviewer.evaluate(
            "[...document.querySelectorAll('#review-grid img')].every(i => i.complete)"
        )
    )
    for n in range(reviewer.locator("#review-grid .pair").count()):
        other = reviewer.locator("#review-grid .pair").nth(n)
        if other.get_attribute("data-status") != "erased":
            assert other.locator(".probe img").evaluate(loaded)
            assert other.locator(".candidate-face img").evaluate(loaded)
    assert "distance 0." in pair.inner_text() and "blur" in pair.inner_text()
    assert "press (DE)" in pair.inner_text()
    reviewer.screenshot(path=ARTEFACTS / "review-1-reviewer-sees-probe-beside-candidates.png")
    pair.focus()
    reviewer.keyboard.press("c")  # keyboard: confirm the focused candidate
    reviewer.wait_for_selector("#flash:has-text('state is now identified')")
    pair = reviewer.locator(f".pair[data-search-id='{search_id}'][data-face-id='{face_id}']")
    pair.locator(".state-identified").wait_for()
    assert pair.locator("button.confirm").count() == 0
    assert "ines confirmed" in pair.inner_text() and "rita confirmed" in pair.inner_text()
    reviewer.screenshot(path=ARTEFACTS / "review-2-decided-identified.png")
    # The full source photo with the box, on demand.
    pair.focus()
    reviewer.keyboard.press("s")
    until(
        lambda: reviewer.evaluate(
            "document.querySelector('#source-img').complete && "
            "document.querySelector('#source-img').naturalWidth > 0"
        )
    )
    reviewer.screenshot(path=ARTEFACTS / "review-3-source-photo-with-box.png")
    reviewer.click("#source-close")
    ready(reviewer, "/cases")
    reviewer.click("#cases-table a:text('CASE-1')")
    reviewer.wait_for_selector("#decisions-table td.state-identified")


def test_review_page_fits_a_screen_pages_and_marks_erased_faces(login, server):
    investigator = login("ines")
    for name in (
        "johnsnow_test1.jpg",
        "kit_with_rose.jpg",
        "obama_and_biden.jpg",
        "obama1.jpg",
        "alex_lacamoire1.jpg",
    ):
        run_search(investigator, PROBES / name)
        investigator.wait_for_selector("#search-meta:has-text('Search')")
    # A candidate erased since the search: shown as erased, without buttons.
    sheet = server.client("rita").get("/api/v1/cases/CASE-1/review?per_page=100").json()
    kit = next(i for i in sheet["items"] if "kit_harington" in i.get("media_path", ""))
    gone = server.client("dora").delete(f"/api/v1/media/{kit['media_id']}")
    assert gone.status_code == 200, gone.text
    reviewer = login("rita")
    ready(reviewer, "/review?case=CASE-1")
    reviewer.select_option("#review-per-page", "6")
    until(lambda: reviewer.locator("#review-grid .pair").count() == 6)
    assert "page 1 of" in reviewer.inner_text("#review-page")
    # Six candidates fit a 1280x900 screen: the last one ends above the fold, whatever the
    # length of the data directory's path (only the file name is shown; the path is its title).
    bottom = reviewer.evaluate(
        "Math.max(...[...document.querySelectorAll('#review-grid .pair')]"
        ".map((p) => p.getBoundingClientRect().bottom))"
    )
    assert bottom <= 900, bottom
    reviewer.locator("#review-grid .pair").first.focus()
    reviewer.keyboard.press("n")  # next page, by keyboard
    reviewer.wait_for_selector("#review-page:has-text('page 2 of')")
    reviewer.goto(server.url + "/review?case=CASE-1")
    reviewer.wait_for_selector("body[data-ready]")
    reviewer.select_option("#review-per-page", "24")
    erased = reviewer.locator(f".pair[data-face-id='{kit['face_id']}']").first
    erased.wait_for()
    assert erased.get_attribute("data-status") == "erased"
    assert erased.locator("button").count() == 0 and "ERASED" in erased.inner_text()
    reviewer.screenshot(path=ARTEFACTS / "review-4-erased-candidate-no-buttons.png", full_page=True)


def test_ingest_upload_shows_progress_and_skips(login, tmp_path):
    page = login("only-operator")
    ready(page, "/ingest")
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    page.select_option("#source", "press")
    page.set_input_files("#files", [str(REFERENCE / "obama2.jpg"), str(bad)])
    page.click("#ingest-form button[type=submit]")
    page.wait_for_selector("#flash:has-text('Ingest done')", timeout=120_000)
    assert page.inner_text("#job-summary td[data-key=images]") == "1"
    assert "notes.jpg" in page.inner_text("#skipped")


def test_erasure_then_the_face_is_gone_from_search(login):
    dpo = login("dora")
    ready(dpo, "/dpo")
    dpo.set_input_files("#erase-form input[name=selfie]", str(PROBES / "alex_lacamoire1.jpg"))
    dpo.fill("#erase-form input[name=reference]", "REQ-7")
    dpo.click("#erase-form button[type=submit]")
    dpo.wait_for_selector("#erase-candidates .card")
    assert "alex_lacamoire" in dpo.inner_text("#erase-candidates")
    dpo.click("#erase-btn")  # without the review tick: refused in the page
    dpo.wait_for_selector("#flash:has-text('Tick the review box')")
    dpo.check("#erase-reviewed")
    dpo.click("#erase-btn")
    dpo.wait_for_selector("#erase-receipt:visible")
    assert '"faces": 1' in dpo.inner_text("#erase-receipt")

    investigator = login("ines")
    run_search(investigator, PROBES / "alex_lacamoire1.jpg")
    assert investigator.locator("#no-candidate").is_visible()


def test_auditor_sees_the_verified_chain_and_filters(login):
    page = login("only-auditor")
    ready(page, "/audit")
    assert "Hash chain intact" in page.inner_text("#chain")
    page.fill("#audit-filter input[name=action]", "search")
    page.click("#audit-filter button[type=submit]")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#audit-table tbody tr td:nth-child(5)')]"
        ".every(td => td.textContent === 'search') && "
        "document.querySelectorAll('#audit-table tbody tr').length > 0"
    )
    # A page outside the role is shown with a plain refusal, and its API calls are refused.
    ready(page, "/dpo")
    assert "do not include this page" in page.inner_text("main")


def test_dpo_decides_the_erasure_candidates_left_for_review(login, server):
    selfie = {"selfie": ("biden.jpg", (REFERENCE / "biden.jpg").read_bytes(), "image/jpeg")}
    receipt = (
        server.client("dora")
        .post("/api/v1/subjects/erase", files=selfie, data={"confirm": "true", "threshold": "0.2"})
        .json()
    )
    pending = [f["face_id"] for f in receipt["review"]]
    assert pending and receipt["faces"] == 0  # beyond the strict 0.2: left for review
    dpo = login("dora")
    ready(dpo, "/dpo")
    card = dpo.locator(f".pending-review .card[data-face-id='{pending[0]}']")
    card.wait_for()
    dpo.screenshot(path=ARTEFACTS / "review-5-dpo-erasure-candidates-pending.png", full_page=True)
    card.locator("button:text('Not this person')").click()
    dpo.wait_for_selector("#flash:has-text('released to search')")
    # The page re-renders the pending list after the decision: the card leaves it.
    gone = dpo.locator(f".pending-review .card[data-face-id='{pending[0]}']")
    gone.wait_for(state="detached", timeout=15_000)
    assert gone.count() == 0
