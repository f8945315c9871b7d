"""The web page of ``videovlm serve`` in a real headless Chromium (Playwright driving Debian's
``chromium``) against a real server: open bikes.mp4 from the media root, see the frames the
model sees, describe it (the scenes stream in), click a timestamp and check the player moved
there, ask a question (open and multiple choice), on a desktop and a phone-sized screen, with
no request leaving the server. Screenshots are kept in ``out/test-artifacts/serve/``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.helpers import ServeProcess

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
ARTIFACTS = Path(__file__).resolve().parent.parent / "out" / "test-artifacts" / "serve"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]

playwright = pytest.importorskip("playwright.sync_api", reason="needs playwright (dev extra)")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None,
                       reason="needs a headless Chromium (Debian: apt-get install -y chromium)"),
]


@pytest.fixture(scope="module")
def server(tiny_smolvlm: Path):
    proc = ServeProcess(["--model", str(tiny_smolvlm), "--media-root", str(SAMPLES)])
    yield proc
    assert proc.stop() == 0, proc.stderr


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _open(browser, server: ServeProcess, **context):
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector("#media option", state="attached")
    page.select_option("#media", label="bikes.mp4")
    page.fill("#frames", "8")
    page.click("#open")
    page.wait_for_function("() => document.querySelectorAll('#sheet img').length === 8")
    page.wait_for_function("() => document.getElementById('player').readyState >= 1")
    return ctx, page, requests, errors


def _wait_seeked(page, t: float) -> None:
    page.wait_for_function(
        f"() => Math.abs(document.getElementById('player').currentTime - {t}) < 0.05")


def _player_time(page) -> float:
    return page.evaluate("document.getElementById('player').currentTime")


def test_describe_seek_and_ask_on_a_desktop(browser, server: ServeProcess) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx, page, requests, errors = _open(browser, server, viewport={"width": 1280, "height": 900})
    # every change the stream makes to the scene list is counted: streamed text arrives in
    # many pieces, a whole result would be one change per scene
    page.evaluate("""window.changes = 0;
        new MutationObserver((m) => { window.changes += m.length; })
          .observe(document.getElementById('segments'),
                   {childList: true, subtree: true, characterData: true});""")
    page.click("#describe")
    page.wait_for_selector("#downloads:not([hidden])", timeout=180_000)
    segments = page.locator("#segments .segment")
    count = segments.count()
    assert count >= 2  # bikes.mp4 has several shots
    assert page.evaluate("window.changes") > 3 * count
    assert page.locator("#summary").inner_text().strip()

    link = segments.nth(1).locator("a.t").first
    target = float(link.get_attribute("data-t"))
    assert target > 0
    link.click()
    _wait_seeked(page, target)
    assert _player_time(page) == pytest.approx(target, abs=0.05)
    # the contact sheet's timestamps seek too
    sheet_link = page.locator("#sheet a.t").nth(5)
    sheet_t = float(sheet_link.get_attribute("data-t"))
    sheet_link.click()
    _wait_seeked(page, sheet_t)

    page.fill("#question", "What vehicles appear?")
    page.click("#ask")
    page.wait_for_function("""() => { const t = document.querySelector('.answer .text');
        return t && t.textContent.length > 0 && !document.getElementById('ask').disabled; }""",
                           timeout=120_000)
    page.fill("#question", "Where is this?")
    page.fill("#choices", "a street\na beach")
    page.click("#ask")
    page.wait_for_selector(".answer .choice", timeout=120_000)
    assert page.locator(".answer .choice").first.inner_text().startswith(("Choice A", "Choice B"))
    assert page.locator(".answer").count() == 2

    href = page.locator("#downloads a", has_text="SRT").get_attribute("href")
    assert page.evaluate(f"fetch('{href}').then((r) => r.status)") == 200
    page.screenshot(path=str(ARTIFACTS / "desktop.png"), full_page=True)
    assert not errors, errors
    assert all(u.startswith((server.url, "data:")) for u in requests), requests
    ctx.close()


def test_the_page_fits_a_phone(browser, server: ServeProcess) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ctx, page, requests, errors = _open(browser, server, viewport={"width": 390, "height": 844},
                                        is_mobile=True, has_touch=True,
                                        device_scale_factor=2)
    page.fill("#question", "Is it day or night?")
    page.click("#ask")
    page.wait_for_function("""() => { const t = document.querySelector('.answer .text');
        return t && t.textContent.length > 0 && !document.getElementById('ask').disabled; }""",
                           timeout=120_000)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    player = page.locator("#player").bounding_box()
    assert player["width"] <= 390 and player["width"] > 300
    page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    assert not errors, errors
    assert all(u.startswith((server.url, "data:")) for u in requests), requests
    ctx.close()
