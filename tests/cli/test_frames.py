"""``videovlm frames`` as users and scripts call it: JSON, saved PNGs, sheets, refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import CLIPS
from tests.media import read_index
from videovlm.cli import main


def run(capfd, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process through its real entry point; (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def test_json_has_the_video_and_sampling_objects(clip_path, capfd):
    path = clip_path("vfr_gap")
    code, out, err = run(capfd, "frames", str(path), "-n", "8", "--json")
    assert code == 0 and err == ""  # no progress bar when stderr is not a terminal
    doc = json.loads(out)
    assert set(doc) == {"video", "sampling"}
    video = doc["video"]
    assert video["path"] == str(path) and video["frame_count"] == 40
    assert video["duration_s"] == pytest.approx(19 / 30 + 10 + 20 / 30, abs=1e-6)
    sampling = doc["sampling"]
    assert sampling["backend"] == "av" and sampling["requested"] == 8
    assert sampling["seek"] == "exact"
    clip = CLIPS["vfr_gap"]
    for f in sampling["frames"]:
        assert set(f) == {"index", "time_s"}
        assert f["time_s"] == pytest.approx(clip.time_s(f["index"]), abs=1e-6)
    assert len(sampling["frames"]) < 8  # the frozen frame is taken once


def test_keyframe_seek_and_backend_are_echoed(clip_path, capfd):
    code, out, _ = run(capfd, "frames", str(clip_path("long_gop_bframes")), "-n", "4",
                       "--seek", "keyframe", "--backend", "av", "--json")
    assert code == 0
    sampling = json.loads(out)["sampling"]
    assert sampling["seek"] == "keyframe" and sampling["backend"] == "av"
    assert [f["index"] for f in sampling["frames"]] == [0, 250]


def test_save_writes_upright_pngs_named_by_index(clip_path, tmp_path, capfd):
    out_dir = tmp_path / "frames out"
    code, out, _ = run(capfd, "frames", str(clip_path("rot90")), "-n", "5", "--save",
                       str(out_dir), "--json")
    assert code == 0
    indices = [f["index"] for f in json.loads(out)["sampling"]["frames"]]
    assert sorted(p.name for p in out_dir.iterdir()) == [f"frame_{i:06d}.png" for i in indices]
    for i in indices:
        with Image.open(out_dir / f"frame_{i:06d}.png") as im:
            assert im.size == (64, 48)  # display size: upright
            assert read_index(np.asarray(im.convert("RGB"))) == i


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_sheet_is_a_picture_of_the_frames(clip_path, tmp_path, capfd, suffix):
    sheet = tmp_path / "sub dir" / f"sheet{suffix}"
    code, out, _ = run(capfd, "frames", str(clip_path("long_gop_bframes")), "-n", "12",
                       "--sheet", str(sheet))
    assert code == 0
    assert len(out.strip().splitlines()) == 1 + 12  # a summary line, then one line per frame
    with Image.open(sheet) as im:
        assert im.format == ("JPEG" if suffix == ".jpg" else "PNG")
        assert im.width > 240 * 3 and im.height > 180 * 2
    assert [p.name for p in sheet.parent.iterdir()] == [sheet.name]  # no temp files left


@pytest.mark.parametrize(
    "kind",
    ["missing", "empty", "directory", "text", "random_bytes", "audio_only",
     "truncated_moov_at_end"],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(bad_inputs, tmp_path, capfd, kind):
    save, sheet = tmp_path / "saved", tmp_path / "sheet.jpg"
    code, out, err = run(capfd, "frames", str(bad_inputs[kind]), "--save", str(save),
                         "--sheet", str(sheet), "--json")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("videovlm: error: ")
    assert "Traceback" not in err
    assert not save.exists() and not sheet.exists()


@pytest.mark.parametrize(
    "args",
    [["-n", "0"], ["--sheet", "sheet.gif"], ["--sheet", "noext"]],
)
def test_bad_options_are_refused_before_any_work(clip_path, tmp_path, capfd, args):
    args = [a if not a.startswith(("sheet", "noext")) else str(tmp_path / a) for a in args]
    code, out, err = run(capfd, "frames", str(clip_path("fewer_than_n")), *args,
                         "--save", str(tmp_path / "saved"))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_unknown_backend_choice_is_a_usage_error(clip_path, capfd):
    code, _, err = run(capfd, "frames", str(clip_path("fewer_than_n")), "--backend", "ffmpeg")
    assert code == 2 and "ffmpeg" in err


def test_frames_path_imports_no_heavy_library(clip_path, tmp_path):
    """The real process: exit code, and torch/transformers never imported on this path."""
    script = (
        "import sys, json\n"
        "from videovlm.cli import main\n"
        "try:\n"
        f"    main(['frames', {str(clip_path('odd_size'))!r}, '-n', '3', '--json',\n"
        f"          '--sheet', {str(tmp_path / 's.jpg')!r}])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'torchcodec', 'decord', 'cv2', 'ray')\n"
        "         if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}
    assert json.loads(proc.stdout)["sampling"]["backend"] == "av"


def test_console_script_exit_code_for_a_missing_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "videovlm", "frames", str(tmp_path / "no.mp4")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"videovlm: error: {tmp_path / 'no.mp4'}: "
                                                "no such file"]


def test_progress_bar_only_on_a_terminal(clip_path):
    """stderr a TTY: a progress bar; with --quiet: none (stdout stays the results either way)."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    path = str(clip_path("long_gop_bframes"))
    for quiet, expect_bar in ((False, True), (True, False)):
        leader, follower = pty.openpty()
        # a terminal 80 columns wide (a new pty has none, and tqdm would draw an empty bar)
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        args = [sys.executable, "-m", "videovlm", "frames", path, "-n", "5", "--json"]
        proc = subprocess.run(args + (["--quiet"] if quiet else []), stdout=subprocess.PIPE,
                              stderr=follower, timeout=120, check=False)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.returncode == 0
        assert len(json.loads(proc.stdout)["sampling"]["frames"]) == 5
        assert (b"decoding" in b"".join(chunks)) is expect_bar
