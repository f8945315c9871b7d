"""The probe, frames and times checked against FFmpeg's own tools, an oracle we did not write.

The other tests check videovlm against the numbers its test-media generator wrote. Here the
reference is the ``ffprobe`` and ``ffmpeg`` programs (tests/ffmpeg_oracle.py): their packet
table, their display-matrix reading, their decoded frame ``n`` (the ``select`` filter's count, in
presentation order) and its timestamp. That covers the real sample clips too, which carry no
drawn index and had no generator to compare with.

Pixel threshold, as measured (FFmpeg 5.1 CLI from Debian against PyAV 18's bundled FFmpeg,
decord, OpenCV and torchcodec): every backend's frames equal ffmpeg's byte for byte on the three
samples (mean absolute difference 0.000). Different FFmpeg builds may round YUV->RGB differently,
so the bound is looser (:data:`MAX_MAD`), but a bound alone cannot tell frames apart here:
neighbouring frames of the samples differ by as little as 0.12 on average (bigbuckbunny 81 vs 82:
a few dozen pixels move); decoding frame n + 1 in place of every planned n stays under 2.0 on
all 12 frames of world.mp4 and 4 of 12 of bigbuckbunny.mp4. So each frame must also be at least
:data:`NEIGHBOUR_RATIO` times closer to ffmpeg's frame ``n`` than to its frames ``n - 1`` and
``n + 1``: that catches the off-by-one on all 36 sample frames.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import videovlm
from tests import ffmpeg_oracle as oracle
from tests.conftest import CLIPS, SAMPLES
from tests.media import read_index
from videovlm.decode import available_backends
from videovlm.errors import BackendError

pytestmark = pytest.mark.skipif(
    oracle.FFPROBE is None or oracle.FFMPEG is None,
    reason="ffprobe/ffmpeg not on PATH (Debian package 'ffmpeg'; scripts/system-deps.sh)",
)

SAMPLE_NAMES = sorted(p.name for p in SAMPLES.glob("*.mp4"))
# Synthetic clips covering what a timeline can get wrong: a 10 s frozen gap (VFR), a start
# offset (MP4 and MPEG-TS), rotation, the video not being stream 0, a long GOP with B-frames,
# and Matroska/WebM's millisecond time base.
ORACLE_CLIPS = ("vfr_gap", "start_offset", "start_offset_ts", "rot90", "rot270",
                "video_not_stream_0", "long_gop_bframes", "vp9_webm", "av1")
VIDEOS = [*SAMPLE_NAMES, *ORACLE_CLIPS]
N = 12
BACKENDS = available_backends()

MAX_MAD = 2.0  # mean |difference| on 0-255 allowed for one frame decoded by two FFmpeg builds
NEIGHBOUR_RATIO = 4.0  # a neighbouring frame must be at least this much further away
TIME_TOL = 1e-6  # seconds: times come from the same integer pts, so only float rounding differs


@pytest.fixture
def video(request: pytest.FixtureRequest, clip_path) -> Path:
    name = request.param
    return SAMPLES / name if name in SAMPLE_NAMES else clip_path(name)


@pytest.fixture(scope="module", autouse=True)
def _forget_reference_frames():
    """ffmpeg's 720p frames are ~100 MB: held while this module runs, not for the whole session."""
    yield
    _reference_frames.cache_clear()


@functools.cache
def _probe(path: Path) -> videovlm.VideoInfo:
    return videovlm.probe(path)


@functools.cache
def _facts(path: Path) -> oracle.StreamFacts:
    return oracle.stream_facts(path)


@functools.cache
def _shown_pts(path: Path) -> list[int]:
    """ffmpeg's decoded frames' pts (its whole decode, done once per file)."""
    return oracle.decoded_frame_pts(path)


@functools.cache
def _reference_frames(path: Path) -> dict[int, np.ndarray]:
    """ffmpeg's frames for the plan of N and each planned frame's neighbours, by frame number."""
    info = _probe(path)
    wanted = {j for r in videovlm.plan(info, N) for j in (r.index - 1, r.index, r.index + 1)
              if 0 <= j < info.frame_count}
    return oracle.frames_by_number(path, sorted(wanted), _facts(path).display_size)


def _ffmpeg_time_s(path: Path, index: int) -> float:
    shown = _shown_pts(path)
    return float((shown[index] - shown[0]) * _facts(path).time_base)


@pytest.mark.parametrize("video", VIDEOS, indirect=True)
def test_probe_matches_ffprobe(video):
    info = _probe(video)
    facts = _facts(video)
    packets = oracle.packet_timeline(video)
    tl = info.timeline
    assert info.stream_index == facts.index  # v:0 is the first video stream, not stream 0
    assert tl.time_base == facts.time_base
    assert tl.pts.tolist() == packets.pts.tolist()
    assert tl.keyframe.tolist() == packets.keyframe.tolist()
    assert info.frame_count == len(packets.pts) == len(_shown_pts(video))
    assert _shown_pts(video) == packets.pts.tolist()  # decoded frames: the packets, in pts order
    assert info.rotation == facts.rotation
    assert (info.width, info.height) == facts.display_size
    assert info.start_s == pytest.approx(float(packets.pts[0] * facts.time_base), abs=TIME_TOL)


@pytest.mark.parametrize("video", ["rot90", "rot270", "video_not_stream_0", "start_offset",
                                   "vfr_gap"], indirect=True)
def test_the_oracle_sees_what_each_clip_was_made_for(video):
    """Equality with ffprobe proves nothing if ffprobe saw nothing special: check it did."""
    clip = CLIPS[video.parent.name]
    facts = _facts(video)
    pts = oracle.packet_timeline(video).pts
    times = [t * facts.time_base for t in pts.tolist()]
    assert facts.rotation == clip.rotation
    assert facts.index == clip.stream_index
    assert times[0] == clip.times[0]
    assert max(np.diff(times)) == max(np.diff(clip.times), default=0)  # the 10 s frozen gap


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("video", VIDEOS, indirect=True)
def test_frames_match_ffmpeg(video, backend):
    info = _probe(video)
    refs = videovlm.plan(info, N)
    try:
        frames = videovlm.decode(info, refs, backend=backend)
    except BackendError as exc:  # a non-default backend may refuse a file (one line), not guess
        if backend == "av" or video.name in SAMPLE_NAMES:
            raise
        pytest.skip(f"{backend} refuses {video.name}: {exc}")
    reference = _reference_frames(video)
    synthetic = video.name not in SAMPLE_NAMES
    assert [f.index for f in frames] == [r.index for r in refs]
    for f in frames:
        ours, theirs = f.image, reference[f.index]
        assert ours.shape == theirs.shape
        if synthetic:  # ffmpeg's frame n shows index n: the oracle's own numbering holds
            assert read_index(theirs) == f.index == read_index(ours)
        same = oracle.mean_abs_diff(ours, theirs)
        nearest = min(oracle.mean_abs_diff(ours, reference[j])
                      for j in (f.index - 1, f.index + 1) if j in reference)
        assert same < MAX_MAD, f"frame {f.index}: {same:.3f} from ffmpeg's frame {f.index}"
        assert nearest > 0 and nearest >= NEIGHBOUR_RATIO * same, (
            f"frame {f.index}: {same:.3f} from ffmpeg's frame, {nearest:.3f} from its neighbour"
        )
        assert f.time_s == pytest.approx(_ffmpeg_time_s(video, f.index), abs=TIME_TOL)


@pytest.mark.parametrize("video", VIDEOS, indirect=True)
def test_times_match_ffmpeg(video):
    frames = videovlm.sample_frames(video, n=N)
    info = _probe(video)
    assert [f.index for f in frames] == [r.index for r in videovlm.plan(info, N)]
    tb = _facts(video).time_base
    shown = _shown_pts(video)
    for f in frames:
        expected = (shown[f.index] - shown[0]) * tb
        assert f.time_s == pytest.approx(float(expected), abs=TIME_TOL)


@pytest.mark.parametrize("name", ["mp4_61", "ts_61", "mkv_61"])
def test_cut_off_file_keeps_a_prefix_of_what_ffmpeg_shows(truncated_playable, name):
    """videovlm drops a cut file's tail whose order it cannot know; what it keeps, ffmpeg shows."""
    path, _ = truncated_playable[name]
    info = videovlm.probe(path)
    shown = oracle.decoded_frame_pts(path)
    assert info.timeline.pts.tolist() == shown[: info.frame_count]
    if info.frame_count < len(shown):
        assert any("cut off" in w for w in info.warnings)
