"""The console's search result shows the calibrated estimates, small and labelled (real
Chromium, real server)."""

from __future__ import annotations

import pytest
from test_web_browser import browser, login, run_search, server  # noqa: F401 (fixtures)

from conftest import PROBES

pytestmark = pytest.mark.slow


def test_search_result_shows_fmr_and_expected_strangers(login):  # noqa: F811
    page = login("ines")
    run_search(page, PROBES / "obama1.jpg")
    first = page.locator(".candidate").first
    estimate = first.locator(".estimate")
    assert estimate.count() == 1
    text = estimate.inner_text()
    assert "FMR ≈" in text and "est. strangers this close" in text
    assert "LFW" in estimate.get_attribute("title")
    summary = page.locator("#face-estimate").inner_text()
    assert "est. false candidates if the person is not in the gallery" in summary
