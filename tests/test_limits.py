"""Edge cases of timing and metadata: files that are whole but look cut, and headers that lie.

Each file here is made by the test (PyAV, FFmpeg's CLI, byte edits of a generated clip) and
every frame that comes back is identified from its pixels (tests/media.py's barcodes); where a
backend cannot read a file it must refuse in one line, and the refusals each backend is known
to make are listed here (:data:`KNOWN_REFUSALS`), so a new one fails the test. Crafted headers
run the real CLI in a child process under an address-space limit, its peak memory measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests import ffmpeg_oracle as oracle
from tests import media
from videovlm.decode import available_backends, decode
from videovlm.errors import BackendError, InputError
from videovlm.isolation import IN_PROCESS_ENV
from videovlm.plan import FrameRef, plan
from videovlm.probe import probe

BACKENDS = available_backends()
ROOT = Path(__file__).resolve().parent.parent
needs_ffmpeg = pytest.mark.skipif(
    oracle.FFMPEG is None or oracle.FFPROBE is None,
    reason="ffmpeg/ffprobe not on PATH (Debian package 'ffmpeg'; scripts/system-deps.sh)",
)

# (backend, what of the file) -> why it refuses: said in one line, measured, never a wrong frame
KNOWN_REFUSALS = {
    ("decord", ".ts"): "no index: decord's seeks land on other frames",
    ("torchcodec", ".ts"): "torchcodec 0.13 runs out of frames on B-frame MPEG-TS",
    ("decord", "edit list"): "decord counts the frames the edit list hides",
}


def every_frame(info) -> list[FrameRef]:
    """A plan of every frame of the timeline (the selection rule would skip held frames)."""
    tl = info.timeline
    return [FrameRef(i, int(tl.pts[i]), tl.time_s(i)) for i in range(len(tl.pts))]


def drawn_or_refused(info, refs, backend: str, kind: str) -> list[int] | None:
    """The drawn index of each frame ``backend`` returns, or None for a known refusal."""
    try:
        frames = decode(info, refs, backend=backend)
    except BackendError as exc:
        if (backend, kind) in KNOWN_REFUSALS:
            assert "\n" not in str(exc)
            return None
        raise
    assert [f.index for f in frames] == [r.index for r in refs]
    return media.indices_of([f.image for f in frames])


# --- 1. a long pause before the last frame is no cut ------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts", ".mov"])
@pytest.mark.parametrize("bframes", [1, 3])
def test_b_frames_with_a_long_still_before_the_last_frame_keep_every_frame(tmp_path, suffix,
                                                                          bframes):
    """Frame 38 held for 4 s, then frame 39: variable frame rate and B-frames. The old rule took
    the long last gap for frames lost to a cut and dropped the last one or two, with a warning."""
    path = media.make_video(tmp_path / f"pause{suffix}", n_frames=40, gop=12, bframes=bframes,
                            vfr_gap=(38, 4.0))
    info = probe(path)
    assert info.frame_count == 40
    assert info.warnings == ()
    assert info.timeline.time_s(39) - info.timeline.time_s(38) == pytest.approx(4.0, abs=1e-3)
    if oracle.FFPROBE is not None:
        assert info.timeline.pts.tolist() == oracle.decoded_frame_pts(path)
    for backend in BACKENDS:
        drawn = drawn_or_refused(info, every_frame(info), backend, suffix)
        assert drawn in (None, list(range(40))), backend
    # frame 39 is on screen for the last 1/30 s of 5.27 s: the last of 200 slices' centres
    assert [f.index for f in decode(info, plan(info, 200))][-1] == 39


def test_a_real_cut_still_drops_what_it_cannot_name(truncated_playable):
    """The same rule still catches cuts: a .ts that ends in a hole a lost B-frame would fill,
    and a Matroska file whose segment is shorter than its header says (now said, too)."""
    for name in ("ts_61", "mkv_61"):
        path, _ = truncated_playable[name]
        info = probe(path)
        assert any("cut off" in w for w in info.warnings), name
        frames = decode(info, every_frame(info))
        assert media.indices_of([f.image for f in frames]) == list(range(info.frame_count))


# --- 2. an edit list that starts after the first GOP ------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("start_s", [0.9, 1.3, 2.1])
def test_edit_list_starting_after_the_first_gop_keeps_every_shown_frame(tmp_path, start_s):
    """``ffmpeg -ss T -c copy`` keeps the GOP before T and an edit list that hides its head:
    the first frames shown need a keyframe that is in the file but never shown. ffmpeg shows
    every frame from T to the end; so must videovlm, each the frame ffmpeg shows there."""
    full = media.make_video(tmp_path / "full.mp4", n_frames=120, gop=24, bframes=3,
                            size=(96, 64))
    path = tmp_path / "cut.mp4"
    subprocess.run([oracle.FFMPEG, "-v", "error", "-y", "-ss", str(start_s), "-i", str(full),
                    "-c", "copy", str(path)], check=True)
    packets = oracle.packet_timeline(path)
    assert packets.discarded > 0 and not packets.keyframe[0]  # the case at hand
    info = probe(path)
    shown = oracle.decoded_frame_pts(path)
    assert info.timeline.pts.tolist() == shown
    assert info.warnings == ()
    first = media.read_index(oracle.frames_by_number(path, [0], (96, 64))[0])
    assert first == round(start_s * 30) and info.frame_count == 120 - first
    want = list(range(first, 120))
    for backend in BACKENDS:
        drawn = drawn_or_refused(info, every_frame(info), backend, "edit list")
        assert drawn in (None, want), backend
        # and alone: a frame before the first shown keyframe, decoded from the file's start
        refs = every_frame(info)[2:3]
        assert drawn_or_refused(info, refs, backend, "edit list") in (None, [first + 2])


# --- 3. raw elementary streams ----------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("codec,suffix,kind", [("h264", ".h264", "H.264"),
                                               ("hevc", ".hevc", "HEVC")])
def test_raw_elementary_stream_is_refused_with_its_true_cause(tmp_path, codec, suffix, kind):
    """No container, no timestamps: the line says so, names the stream's own frame rate, and
    its command really makes a file whose frames are right."""
    src = media.make_video(tmp_path / "src.mkv", codec=codec, n_frames=30, gop=10, bframes=2,
                           size=(96, 64), fps=25)
    raw = tmp_path / f"clip{suffix}"
    subprocess.run([oracle.FFMPEG, "-v", "error", "-y", "-i", str(src), "-c", "copy", str(raw)],
                   check=True)
    proc = subprocess.run([sys.executable, "-m", "videovlm", "frames", str(raw)],
                          capture_output=True, text=True, cwd=ROOT, env=_env())
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert f"raw {kind} elementary stream stores no timestamps" in line
    assert "its header says 25 fps" in line
    command = line[line.index("ffmpeg -r"):].replace("IN", str(raw)).replace(
        "OUT.mp4", str(tmp_path / "fixed.mp4")).split()
    subprocess.run([oracle.FFMPEG, "-v", "error", "-y", *command[1:]], check=True)
    info = probe(tmp_path / "fixed.mp4")
    frames = decode(info, every_frame(info))
    assert media.indices_of([f.image for f in frames]) == list(range(30))


# --- 4. headers that lie ----------------------------------------------------------------------

_COS45 = 46341  # cos 45 degrees in 16.16 fixed point, a display matrix's a, b, c, d


def _crafted(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what must happen: 'right' frames, or 'refused' in one line)."""
    mp4 = media.make_video(d / "clip.mp4", n_frames=30, gop=10, bframes=2, size=(96, 64))
    mkv = media.make_video(d / "clip.mkv", n_frames=30, gop=10, bframes=2, size=(96, 64))
    # no B-frames where only the last frame moves: its dts must stay the last one
    ipp = media.make_video(d / "ipp.mp4", n_frames=30, gop=10, bframes=0, size=(96, 64))
    tkhd, mdhd, mvhd = "moov/trak/tkhd", "moov/trak/mdia/mdhd", "moov/mvhd"
    stbl = "moov/trak/mdia/minf/stbl"
    files = {
        # mvhd: 136 years at a timescale of 1; mdhd and tkhd at their largest durations
        "duration_years.mp4": (media.patch_mp4(mp4, d / "years.mp4", [
            (mvhd, 12, ">I", 1), (mvhd, 16, ">I", 2**32 - 1), (mdhd, 16, ">I", 2**32 - 1),
            (tkhd, 20, ">I", 2**32 - 1)]), "right"),
        "size_65535.mp4": (media.patch_mp4(mp4, d / "size.mp4", [
            (tkhd, 76, ">I", 65535 << 16), (tkhd, 80, ">I", 65535 << 16)]), "right"),
        "stts_1e9_frames.mp4": (media.patch_mp4(mp4, d / "stts.mp4", [
            (f"{stbl}/stts", 8, ">I", 10**9)]), "right"),
        "stsz_1e9_frames.mp4": (media.patch_mp4(mp4, d / "stsz.mp4", [
            (f"{stbl}/stsz", 8, ">I", 10**9)]), "refused"),
        "rotation_45.mp4": (media.patch_mp4(mp4, d / "rot45.mp4", [
            (tkhd, 40, ">i", _COS45), (tkhd, 44, ">i", _COS45), (tkhd, 52, ">i", -_COS45),
            (tkhd, 56, ">i", _COS45)]), "right"),
        "duration_years.mkv": (media.patch_mkv(mkv, d / "years.mkv", [
            (media.MKV_DURATION, 1e15)]), "right"),
        "size_100000.mkv": (media.remux_mkv(mp4, d / "size.mkv", claim_size=(100000, 100000)),
                            "right"),
        "timestamps_2e60.mkv": (media.remux_mkv(mp4, d / "late.mkv", shift=2**60), "right"),
        "last_frame_years_later.mkv": (media.remux_mkv(ipp, d / "gap.mkv", last_gap=2**50),
                                       "right"),
    }
    assert sorted(files) == sorted(CRAFTED)
    return files


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return _crafted(tmp_path_factory.mktemp("crafted"))


_LIMIT_BYTES = 6 << 30  # address space for the child: an allocation sized from a lie fails
_PEAK_MB = 400  # what a frames run on a 96x64 clip may take (measured: 67-74 MB)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# The child runs the CLI under an address-space limit and reports its own peak resident memory
# (VmHWM of its own address space: ru_maxrss would count the pytest process it was forked from)
_BOUNDED = """
import atexit, os, resource, runpy, sys
limit = int(os.environ["VIDEOVLM_TEST_AS"])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
def report():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["VIDEOVLM_TEST_HWM"], "w") as f:
        f.write(kb)
atexit.register(report)
sys.argv = ["videovlm", *sys.argv[1:]]
runpy.run_module("videovlm", run_name="__main__")
"""


def run_bounded(args: list[str]) -> tuple[int, str, str, float]:
    """Run the CLI in a child under an address-space limit: (exit code, stdout, stderr, peak
    resident memory in MB)."""
    with tempfile.TemporaryDirectory() as d:
        hwm = Path(d) / "hwm"
        env = {**_env(), "VIDEOVLM_TEST_AS": str(_LIMIT_BYTES), "VIDEOVLM_TEST_HWM": str(hwm)}
        proc = subprocess.run([sys.executable, "-c", _BOUNDED, *args], capture_output=True,
                              text=True, cwd=ROOT, env=env)
        return proc.returncode, proc.stdout, proc.stderr, int(hwm.read_text()) / 1024


CRAFTED = ["duration_years.mp4", "size_65535.mp4", "stts_1e9_frames.mp4", "stsz_1e9_frames.mp4",
           "rotation_45.mp4", "duration_years.mkv", "size_100000.mkv", "timestamps_2e60.mkv",
           "last_frame_years_later.mkv"]


@pytest.mark.parametrize("name", CRAFTED)
def test_a_lying_header_gets_right_frames_or_one_line_in_bounded_memory(crafted, tmp_path,
                                                                       name):
    path, outcome = crafted[name]
    rc, out, err, peak_mb = run_bounded(["frames", str(path), "-n", "8", "--save",
                                         str(tmp_path / "frames"), "--json"])
    assert "Traceback" not in err
    assert peak_mb < _PEAK_MB, f"{name}: {peak_mb:.0f} MB"
    lines = err.splitlines()
    assert all(line.startswith("videovlm: ") for line in lines), err
    if outcome == "refused":
        assert rc == 2 and len(lines) == 1 and str(path) in lines[0]
        return
    assert rc == 0, err
    saved = sorted((tmp_path / "frames").glob("frame_*.png"))
    listed = [f["index"] for f in json.loads(out)["sampling"]["frames"]]
    assert listed and [int(p.stem.split("_")[1]) for p in saved] == listed
    from PIL import Image

    for png in saved:
        index = int(png.stem.split("_")[1])
        assert media.read_index(np.asarray(Image.open(png).convert("RGB"))) == index
    if name == "rotation_45.mp4":
        assert lines == ["videovlm: warning: rotation 45 degrees is not a multiple of 90; "
                         "ignored"]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "av"])
def test_every_backend_on_lying_headers_is_right_or_refuses(crafted, backend):
    """The other backends read the same lies through their own FFmpeg: right or one line."""
    for name, (path, outcome) in crafted.items():
        if outcome == "refused":
            continue
        info = probe(path)
        refs = plan(info, 8)
        try:
            frames = decode(info, refs, backend=backend)
        except BackendError as exc:
            assert "\n" not in str(exc), name
            continue
        assert media.indices_of([f.image for f in frames]) == [r.index for r in refs], name


def test_frame_count_claimed_by_stts_is_not_taken_for_a_cut(crafted):
    """An MP4's stts may claim 10^9 frames; its sample table holds 30, all read: not cut."""
    info = probe(crafted["stts_1e9_frames.mp4"][0])
    assert info.frame_count_header == 10**9 and info.frame_count == 30
    assert info.warnings == ()


def test_timestamps_near_2_63_plan_without_wrapping(crafted):
    """``2 * n * pts`` passes int64 at these timestamps: the plan is still the rule's."""
    shifted = probe(crafted["timestamps_2e60.mkv"][0])
    plain = probe(crafted["size_100000.mkv"][0])  # the same frames at their own times
    for n in (1, 7, 50, 1000):
        for seek in ("exact", "keyframe"):
            assert ([r.index for r in plan(shifted, n, seek=seek)]
                    == [r.index for r in plan(plain, n, seek=seek)])
    assert [r.index for r in plan(shifted, 5, start_s=0.2, end_s=0.7)] == [
        r.index for r in plan(plain, 5, start_s=0.2, end_s=0.7)]


def test_a_last_frame_years_later_makes_no_more_windows_than_frames(crafted):
    """Windows of 2 minutes over 35,000 years: boundaries sit on frame starts, so there are
    never more windows than frames, and making them does not loop over the years."""
    from videovlm.windows import window_spans

    info = probe(crafted["last_frame_years_later.mkv"][0])
    assert info.duration_s > 1e12
    spans = window_spans(info, 120.0)
    assert len(spans) <= info.frame_count
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(info.duration_s)


def test_frame_size_bound_is_checked_where_frames_are_decoded(tmp_path, monkeypatch):
    """The bound on decoded pictures (the largest any codec level allows) refuses in one line;
    lowered below a small clip's size here, so the rule runs without a 36 MP encode."""
    import importlib

    probe_module = importlib.import_module("videovlm.probe")
    path = media.make_video(tmp_path / "c.mp4", n_frames=5, size=(96, 64))
    monkeypatch.setattr(probe_module, "MAX_PIXELS", 96 * 64 - 1)
    monkeypatch.setenv(IN_PROCESS_ENV, "1")  # the bound is this process's
    with pytest.raises(InputError, match=r"96x64, 6,144 pixels, more than any codec level"):
        probe(path)


@pytest.mark.slow
def test_a_picture_beyond_every_codec_level_is_refused_in_bounded_memory(tmp_path):
    """A real 8208x4352 frame (one more macroblock column than 8K allows): one line, exit 2,
    and no RGB copy of it (one would be 107 MB; the decoder's own YUV picture is 54 MB)."""
    path = media.make_video(tmp_path / "big.mp4", n_frames=1, size=(8208, 4352))
    rc, out, err, peak_mb = run_bounded(["frames", str(path), "-n", "3"])
    assert rc == 2 and out == ""
    (line,) = err.splitlines()
    assert "8208x4352, 35,721,216 pixels, more than any codec level allows" in line
    assert peak_mb < _PEAK_MB, f"{peak_mb:.0f} MB"


def test_a_contact_sheet_of_needle_thin_frames_stays_small():
    """16x8192 pictures (legal for a decoder, within the pixel bound): the sheet's cells are
    capped at 4:1, so 50 of them make a sheet of a few MB, not one 122,880 pixels tall."""
    import io

    from PIL import Image

    from videovlm.decode import Frame
    from videovlm.sheet import render_sheet

    tall = np.zeros((8192, 16, 3), dtype=np.uint8)
    tall[::2] = 255
    data = render_sheet([Frame(i, i / 30, tall) for i in range(50)], "PNG", thumb_width=240)
    width, height = Image.open(io.BytesIO(data)).size
    assert width * height < 20_000_000
