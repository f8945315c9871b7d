"""Shared pytest fixtures (file owned by H1; the model-stage block below is H3's).

Sampler fixtures: every synthetic clip is described once, as a :class:`Clip` with the facts the
generator guarantees (an oracle independent of the decoders under test), and made once per test
session, on first use, in a temporary folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.media import frame_times, make_video

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@dataclass(frozen=True)
class Clip:
    """One synthetic test video and what it must probe to (from the generator's own numbers)."""

    name: str
    filename: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any) -> Any:
        return self.kwargs.get(key, default)

    @property
    def n_frames(self) -> int:
        return self.get("n_frames", 30)

    @property
    def fps(self) -> float:
        return self.get("fps", 30)

    @property
    def size(self) -> tuple[int, int]:
        """Upright display size (width, height)."""
        return self.get("size", (64, 48))

    @property
    def rotation(self) -> int:
        return self.get("rotation", 0)

    @property
    def codec(self) -> str:
        return self.get("codec", "h264")

    @property
    def stream_index(self) -> int:
        return 1 if self.get("extra_stream_first", False) else 0

    @property
    def has_audio(self) -> bool:
        return self.get("audio", False) or self.get("extra_stream_first", False)

    @property
    def times(self) -> list[Fraction]:
        """Each frame's presentation time as written, in seconds."""
        return frame_times(self.n_frames, self.fps, self.get("vfr_gap", None),
                           self.get("start_pts_s", 0.0))

    def time_s(self, index: int) -> float:
        """Seconds from the first frame to frame ``index``: the contract's ``time_s``."""
        t = self.times
        return float(t[index] - t[0])

    @property
    def duration_s(self) -> float:
        """Last frame's time plus one frame interval (what the generator wrote)."""
        t = self.times
        return float(t[-1] - t[0] + 1 / Fraction(self.fps).limit_denominator(1001))


CLIPS: dict[str, Clip] = {c.name: c for c in [
    Clip("long_gop_bframes", "long gop.mp4", {"n_frames": 300, "gop": 250, "bframes": 3}),
    Clip("vfr_gap", "vfr.mp4", {"n_frames": 40, "vfr_gap": (19, 10.0), "bframes": 2}),
    Clip("rot90", "rot90.mp4", {"rotation": 90, "bframes": 2}),
    Clip("rot180", "rot180.mov", {"rotation": 180}),
    Clip("rot270", "rot270.mp4", {"rotation": 270, "size": (80, 48)}),
    Clip("start_offset", "start.mp4", {"start_pts_s": 7.5, "bframes": 2, "n_frames": 45}),
    Clip("start_offset_ts", "start.ts", {"start_pts_s": 3.0, "n_frames": 45, "gop": 15,
                                         "bframes": 3}),  # no index: seeks land anywhere
    Clip("video_not_stream_0", "second.mp4", {"extra_stream_first": True}),
    Clip("fewer_than_n", "short.mp4", {"n_frames": 12}),
    Clip("single_frame", "single.mp4", {"n_frames": 1}),
    Clip("vp9_webm", "clip.webm", {"codec": "vp9", "n_frames": 60, "gop": 25}),
    Clip("hevc_10bit", "hevc10.mp4", {"codec": "hevc", "pix_fmt": "yuv420p10le", "n_frames": 60,
                                      "gop": 25, "bframes": 2}),
    Clip("av1", "av1.mkv", {"codec": "av1", "n_frames": 60, "gop": 25}),
    Clip("mpeg4_avi", "clip.avi", {"codec": "mpeg4", "n_frames": 60, "gop": 12}),
    Clip("mpeg4_bframes_avi", "bframes.avi", {"codec": "mpeg4", "n_frames": 60, "gop": 12,
                                              "bframes": 2}),  # AVI stores no pts
    Clip("mjpeg_mov", "mjpeg.mov", {"codec": "mjpeg", "n_frames": 30}),
    Clip("odd_size", "odd.mp4", {"size": (321, 239), "n_frames": 20}),
    Clip("odd_size_vp9", "odd.webm", {"codec": "vp9", "size": (321, 239), "n_frames": 20}),
    Clip("non_ascii_name", "vidéo à la plage 日本 ✓.mp4", {"n_frames": 30, "audio": True}),
]}


class ClipFactory:
    """Makes each clip the first time a test asks for it; the same file afterwards."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self.made:
            clip = CLIPS[name]
            folder = self.folder / name
            folder.mkdir(exist_ok=True)
            self.made[name] = make_video(folder / clip.filename, **clip.kwargs)
        return self.made[name]


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> ClipFactory:
    """``clip_path(name)``: the path of the synthetic clip ``CLIPS[name]``, made once."""
    return ClipFactory(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files a user might pass that are not readable videos, by what is wrong with them."""
    from tests import media

    d = tmp_path_factory.mktemp("bad")
    full = make_video(d / "full.mp4", n_frames=60, gop=10)  # moov written at the end
    (d / "folder.mp4").mkdir()
    (d / "empty.mp4").write_bytes(b"")
    return {
        "missing": d / "missing.mp4",
        "empty": d / "empty.mp4",
        "directory": d / "folder.mp4",
        "text": media.make_text(d / "notes.mp4"),
        "random_bytes": media.make_random(d / "noise.mp4"),
        "audio_only": media.make_audio_only(d / "sound.mp4"),
        "truncated_moov_at_end": media.truncate(full, d / "cut.mp4", 0.5),
    }


@pytest.fixture(scope="session")
def truncated_playable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    """Cut-off files that still play up to the cut: name -> (path, frames in the uncut file).

    With B-frames a cut in decode order loses frames that display before some that survive;
    the probe must keep only frames whose predecessors are all there.
    """
    from tests import media

    d = tmp_path_factory.mktemp("trunc")
    kw = {"n_frames": 90, "gop": 10, "bframes": 3, "size": (96, 64)}
    mp4 = make_video(d / "full.mp4", faststart=True, **kw)  # index first: playable when cut
    ts = make_video(d / "full.ts", **kw)
    mkv = make_video(d / "full.mkv", **kw)
    return {
        "mp4_37": (media.truncate(mp4, d / "cut off 37.mp4", 0.37), 90),
        "mp4_61": (media.truncate(mp4, d / "cut off 61.mp4", 0.61), 90),
        "ts_61": (media.truncate(ts, d / "cut off 61.ts", 0.61), 90),
        "ts_83": (media.truncate(ts, d / "cut off 83.ts", 0.83), 90),
        "mkv_61": (media.truncate(mkv, d / "cut off 61.mkv", 0.61), 90),
    }


# --- No unexpected error logs ----------------------------------------------------------------


class _ErrorRecords(logging.Handler):
    """Keeps every ERROR-or-worse record it sees, once (it listens on two loggers)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not any(r is record for r in self.records):
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_logs_gte_error(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that logs an ERROR (or worse) unless it is marked
    ``@pytest.mark.allow_error_logs``, as PySceneDetect's tests do: an error log is what a user
    sees when something went wrong, so one that no test expects is a bug even when the test's
    assertions pass.

    The handler listens on the root logger and on ``videovlm``'s: the CLI's ``setup_logging``
    stops that one propagating to the root, in the middle of a test, where ``caplog`` (which
    looks for non-propagating loggers only when a test starts) would miss its records.
    """
    handler = _ErrorRecords()
    loggers = [logging.getLogger(), logging.getLogger("videovlm")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("allow_error_logs") is None:
        lines = "\n".join(f"  {r.name}: {r.levelname}: {r.getMessage()}" for r in handler.records)
        pytest.fail(f"the test logged {len(handler.records)} unexpected ERROR record(s) (mark "
                    f"it @pytest.mark.allow_error_logs if they are expected):\n{lines}",
                    pytrace=False)


# --- Model-stage fixtures (H3): random-weight checkpoints of the real architectures -------------
# Built once per session with videovlm.testing.make_checkpoint (a few seconds, a few MB each) and
# loaded by Model.load(path) through the same code path as a downloaded model.


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory: pytest.TempPathFactory):
    """A tiny SmolVLM v1 checkpoint (Idefics3, 384 px, 81 tokens per image, 16k context)."""
    from videovlm.testing import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny_idefics3"), "idefics3", "tiny")


@pytest.fixture(scope="session")
def tiny_smolvlm(tmp_path_factory: pytest.TempPathFactory):
    """A tiny SmolVLM2 checkpoint (SmolVLM, 512 px, 64 tokens per image, 8k context)."""
    from videovlm.testing import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny_smolvlm"), "smolvlm", "tiny")


@pytest.fixture(autouse=True, scope="session")
def frame_cache_of_this_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Encoded frames go to a folder of this test session, never to the user's cache (and
    child processes the tests start inherit it). Tests of the cache itself make their own."""
    folder = tmp_path_factory.mktemp("frame-cache")
    before = os.environ.get("VIDEOVLM_CACHE")
    os.environ["VIDEOVLM_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("VIDEOVLM_CACHE", None)
    else:
        os.environ["VIDEOVLM_CACHE"] = before


# --- Speech-recognition fixtures (asr): a random-weight Whisper of the real architecture ---------


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory):
    """A tiny WhisperForConditionalGeneration (80 mel bins, 30 s windows, Whisper's token
    layout with timestamps), loaded by SpeechModel.load(path) like a downloaded one."""
    from videovlm.testing import make_whisper_checkpoint

    return make_whisper_checkpoint(tmp_path_factory.mktemp("tiny_whisper"), "tiny")
