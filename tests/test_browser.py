"""The web view in a real browser: Debian's Chromium, headless, driven by Playwright
(``executable_path`` to the system's Chromium: Playwright's own download cannot work
here). Skipped with a reason where either is missing; ``.ci/run`` installs both."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from streamer.fleet import Fleet
from streamer.web import ControlServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian)")


@pytest.fixture
def cameras(web: tuple[Fleet, ControlServer]) -> tuple[Fleet, ControlServer]:
    fleet, _ = web
    fleet.add("door", "synthetic:?size=320x240&fps=25")
    fleet.add("aisle", "synthetic:?size=320x240&fps=25&seed=4")
    return web


@pytest.fixture
def page(cameras: tuple[Fleet, ControlServer]) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


def _state_is(name: str, prefix: str) -> str:
    return f"document.querySelector('#cam-{name} .state').textContent.startsWith('{prefix}')"


def test_the_page_shows_every_camera_live_and_its_state(
    cameras: tuple[Fleet, ControlServer], page: Any
) -> None:
    fleet, control = cameras
    page.goto(f"{control.url}/")
    for name in ("door", "aisle"):
        page.wait_for_function(_state_is(name, "streaming"), timeout=20_000)
    # the previews move: the pixels of each image differ 3 s apart
    before = {name: page.locator(f"#cam-{name} img").screenshot() for name in ("door", "aisle")}
    figures = page.locator("#cam-door .figures").text_content()
    page.wait_for_timeout(3000)  # the span the issue names: 3 s of live video
    for name in ("door", "aisle"):
        assert page.locator(f"#cam-{name} img").screenshot() != before[name], name
    assert "fps" in (page.locator("#cam-door .figures").text_content() or "")
    assert page.locator("#cam-door .figures").text_content() != figures  # refreshed
    budget = page.locator("#budgets").text_content() or ""
    for shown in ("50.0 req/s", "free", "waiting"):
        assert shown in budget, budget
    # a camera paused shows it within 2 s
    fleet.pause("aisle")
    page.wait_for_function(_state_is("aisle", "paused"), timeout=2_000)
    # one camera large
    page.goto(f"{control.url}/camera/door")
    page.wait_for_function(_state_is("door", "streaming"), timeout=10_000)
    assert page.locator("img").count() == 1
