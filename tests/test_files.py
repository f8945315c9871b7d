"""Files written whole or not at all, with the permissions any file the user writes gets, and the
one clock people read: ``format_time``'s layout, rounding and carries."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videovlm.files import atomic_write, format_time

ROOT = Path(__file__).resolve().parent.parent


def leftovers(folder: Path) -> list[str]:
    """Temp files of :func:`atomic_write` (``.NAME.<hex>.tmp``) in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- atomic_write -------------------------------------------------------------------------------


def test_text_is_written_as_utf8_and_bytes_as_they_are(tmp_path):
    text, raw = tmp_path / "report.md", tmp_path / "frame.png"
    assert atomic_write(str(text), "vidéo à la plage ✓\n") == text  # a str path: a Path back
    assert text.read_bytes() == "vidéo à la plage ✓\n".encode()
    assert atomic_write(raw, b"\x89PNG\r\n\x1a\n\x00") == raw
    assert raw.read_bytes() == b"\x89PNG\r\n\x1a\n\x00"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.png", "report.md"]


def test_rewrite_replaces_the_whole_file(tmp_path):
    path = tmp_path / "results.jsonl"
    atomic_write(path, "x" * 10_000)
    atomic_write(path, "short\n")
    assert path.read_text() == "short\n"  # nothing of the longer old file after it
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_follow_the_umask(tmp_path, umask, mode):
    path = tmp_path / "out.json"
    path.write_text("old")
    path.chmod(0o400)  # a replaced file's mode is not carried over: the new file is new
    old = os.umask(umask)
    try:
        atomic_write(path, "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("case", ["not_bytes", "target_is_a_folder", "no_such_folder"])
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, case):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "kept.json").write_text("old")
    (folder / "a folder").mkdir()
    target, data, error = {
        "not_bytes": (folder / "kept.json", [1, 2, 3], TypeError),
        "target_is_a_folder": (folder / "a folder", "new", IsADirectoryError),
        "no_such_folder": (folder / "missing" / "x.json", "new", FileNotFoundError),
    }[case]
    with pytest.raises(error):
        atomic_write(target, data)
    assert sorted(p.name for p in folder.iterdir()) == ["a folder", "kept.json"]
    assert (folder / "kept.json").read_text() == "old"
    assert list((folder / "a folder").iterdir()) == []


def test_an_interrupted_write_removes_its_temp_file(tmp_path, monkeypatch):
    """Ctrl-C between the write and the rename (a KeyboardInterrupt cannot be landed there for
    real, so os.fsync raises it): the old file stays, and the temp file goes too."""
    path = tmp_path / "kept.json"
    path.write_text("old")

    def interrupted(fd: int) -> None:
        assert leftovers(tmp_path), "the data goes to a temp file first"
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new")
    assert path.read_text() == "old" and leftovers(tmp_path) == []


_WRITER = """
import sys
sys.path[:0] = [{root!r}]
from videovlm.files import atomic_write

a, b = b"a" * 2_000_000, b"b" * 3_000_000
atomic_write(sys.argv[1], a)
print("ready", flush=True)
i = 0
while True:
    atomic_write(sys.argv[1], b if i % 2 else a)
    i += 1
"""


def test_a_killed_writer_leaves_one_whole_file(tmp_path):
    """SIGKILL at random moments of a loop of rewrites: the file is always one whole version
    (a kill may leave a hidden ``.NAME.<hex>.tmp``, which ``batch`` removes on its next run)."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(root=str(ROOT)))
    target = tmp_path / "out" / "data.bin"
    target.parent.mkdir()
    rng = random.Random(3)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        data = target.read_bytes()
        assert data in (b"a" * 2_000_000, b"b" * 3_000_000)
        assert all(re.fullmatch(r"\.data\.bin\.[0-9a-f]{12}\.tmp", name)
                   for name in leftovers(target.parent))


# -- format_time --------------------------------------------------------------------------------


def test_format_time_is_one_readable_clock() -> None:
    assert format_time(0) == "00:00.0"
    assert format_time(7.25) == "00:07.2" or format_time(7.25) == "00:07.3"
    assert format_time(61.04) == "01:01.0"
    assert format_time(3723.5) == "1:02:03.5"
    assert format_time(59.96) == "01:00.0"


@pytest.mark.parametrize(("seconds", "decimals", "text"), [
    (0.0, 1, "00:00.0"),
    (59.94, 1, "00:59.9"),
    (59.96, 1, "01:00.0"),  # rounding carries into the minutes...
    (3599.96, 1, "1:00:00.0"),  # ...and into the hours, which appear only then
    (36_000.0, 1, "10:00:00.0"),
    (90_061.0, 1, "25:01:01.0"),  # no days: hours go on counting
    (12.3456, 3, "00:12.346"),  # contact sheets: milliseconds
    (0.0004, 3, "00:00.000"),
    (0.0006, 3, "00:00.001"),
    (125.25, 2, "02:05.25"),
    (61.4, 0, "01:01"),  # no decimals: no point either
    (61.6, 0, "01:02"),
    (-0.3, 1, "00:00.0"),  # before the start is the start
])
def test_format_time_layout_and_rounding(seconds, decimals, text):
    assert format_time(seconds, decimals) == text


@pytest.mark.parametrize("seed", range(5))
def test_format_time_is_the_nearest_tick(seed):
    rng = random.Random(seed)
    clock = re.compile(r"(?:(\d+):)?(\d\d):(\d\d)(?:\.(\d+))?")
    for _ in range(200):
        seconds, decimals = rng.uniform(0, 40_000), rng.randint(0, 3)
        text = format_time(seconds, decimals)
        h, m, s, frac = clock.fullmatch(text).groups()
        assert int(m) < 60 and int(s) < 60
        assert len(frac or "") == decimals
        shown = int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac or 0) / 10**decimals
        assert abs(shown - seconds) <= 0.5 / 10**decimals + 1e-9
        assert (h is not None) == (shown >= 3600)
