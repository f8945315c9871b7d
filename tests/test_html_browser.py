"""The HTML report in a real browser: it renders (not blank) on a phone and a desktop width, and
the rendered page holds every segment's time and text. Needs Debian's ``chromium`` package."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videovlm.decode import Frame
from videovlm.result import Result, Segment
from videovlm.writers import format_time, write

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None,
                       reason="needs a headless Chromium (Debian: apt-get install -y chromium)"),
]


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage",
           # any request leaving the page would fail: the page must not need one
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={cwd / 'profile'}",
           *args]
    env = {**os.environ, "HOME": str(cwd)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd, env=env,
                          check=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("html")
    frames = []
    for i in range(8):
        img = np.zeros((180, 320, 3), dtype=np.uint8)
        img[:, : 40 * (i + 1)] = (30 * i, 120, 255 - 30 * i)
        frames.append(Frame(index=i * 30, time_s=i * 1.2, image=img))
    result = Result(
        video={"path": "clip.mp4", "duration_s": 9.6, "fps": 25.0, "frame_count": 240,
               "width": 320, "height": 180, "rotation": 0, "codec": "h264"},
        sampling={"backend": "av", "requested": 8, "frames": [], "image_size": 384,
                  "fit": "squash"},
        segments=[
            Segment(0.0, 3.6, "A blue gradient <grows> & widens.", frames=[0, 30, 60]),
            Segment(3.6, 7.2, "Still growing, now greener.", frames=[90, 120, 150]),
            Segment(7.2, 9.6, "It fills the frame.", frames=[180, 210]),
        ],
        summary="Colour bars grow from left to right.",
        mode="scenes",
        frames=frames,
    )
    (path,) = write(result, out, "html", "clip")
    return path, result


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 900)])
def test_page_renders_not_blank(page: tuple[Path, Result], width: int, height: int) -> None:
    path, _ = page
    shot = path.parent / f"shot_{width}.png"
    _chromium(f"--window-size={width},{height}", f"--screenshot={shot}", path.as_uri(),
              cwd=path.parent)
    img = Image.open(shot).convert("RGB")
    assert img.size == (width, height)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 20, "the screenshot is blank"
    # the thumbnails' saturated colours are on screen, so the data-URI images were drawn
    px = np.asarray(img).reshape(-1, 3).astype(int)
    assert ((px[:, 2] > 200) & (px[:, 0] < 60)).sum() > 500


def test_rendered_dom_holds_every_segment(page: tuple[Path, Result]) -> None:
    path, result = page
    dom = _chromium("--dump-dom", path.as_uri(), cwd=path.parent).stdout
    import html

    for seg in result.segments:
        assert html.escape(seg.text, quote=False) in dom
        assert f"{format_time(seg.start_s)} – {format_time(seg.end_s)}" in dom
    assert dom.count("<img") == sum(len(s.frames) for s in result.segments)
