"""FFmpeg's own command-line tools as an oracle the project did not write.

videovlm reads files through PyAV (and decord, OpenCV, torchcodec); these helpers ask the
``ffprobe`` and ``ffmpeg`` programs the same questions in their own words, so a test can compare
the two answers. Nothing here imports videovlm: the oracle must not share the code under test.
Each helper runs one subprocess and parses its output strictly (a shape or count that does not
add up raises), because a lenient parser would turn an oracle disagreement into a silent pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

FFPROBE = shutil.which("ffprobe")
FFMPEG = shutil.which("ffmpeg")


@dataclass(frozen=True)
class StreamFacts:
    """ffprobe's view of the first video stream (``-select_streams v:0``)."""

    index: int  # the stream's index among all the file's streams
    codec: str
    coded_width: int  # the stored picture, before rotation
    coded_height: int
    time_base: Fraction
    rotation: int  # degrees clockwise a player turns the stored picture (0 when no matrix)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, after rotation: what ``ffmpeg`` outputs by default."""
        if self.rotation in (90, 270):
            return self.coded_height, self.coded_width
        return self.coded_width, self.coded_height


@dataclass(frozen=True)
class PacketTimeline:
    """The video packets' timestamps in presentation order, from ffprobe (no decoding)."""

    pts: np.ndarray  # int64, sorted ascending, in the stream's time base
    keyframe: np.ndarray  # bool, packet flag 'K', aligned with ``pts``
    discarded: int  # packets flagged 'D' (decoded but never shown, e.g. cut by an edit list)


def _run(args: list[str], what: str) -> bytes:
    proc = subprocess.run(args, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[-500:]}")
    return proc.stdout


def _probe_json(path: str | os.PathLike[str], *entries: str) -> dict:
    assert FFPROBE is not None
    args = [FFPROBE, "-v", "error", "-select_streams", "v:0", *entries, "-of", "json",
            os.fspath(path)]
    return json.loads(_run(args, "ffprobe"))


def stream_facts(path: str | os.PathLike[str]) -> StreamFacts:
    """The first video stream's header facts, rotation from its display-matrix side data."""
    data = _probe_json(path, "-show_entries",
                       "stream=index,codec_name,width,height,time_base:stream_side_data")
    (s,) = data["streams"]
    # ffprobe reports the display matrix's angle counter-clockwise (av_display_rotation_get);
    # a player turns the picture the other way, clockwise, by its negation.
    ccw = 0.0
    for side in s.get("side_data_list", []):
        if "rotation" in side:
            ccw = float(side.get("rotation", 0))
    return StreamFacts(
        index=int(s["index"]),
        codec=s["codec_name"],
        coded_width=int(s["width"]),
        coded_height=int(s["height"]),
        time_base=Fraction(s["time_base"]),
        rotation=round(-ccw) % 360,
    )


def packet_timeline(path: str | os.PathLike[str]) -> PacketTimeline:
    """Every shown video packet's pts, sorted, with its keyframe flag ('K').

    Packets flagged 'D' (discard) are counted, not listed: FFmpeg decodes them for reference but
    never outputs them, so they are not frames of the video as a viewer sees it. A packet without
    a pts fails loudly: the oracle then has no answer, and the test must say so.
    """
    data = _probe_json(path, "-show_entries", "packet=pts,flags")
    rows = []
    discarded = 0
    for p in data["packets"]:
        flags = p.get("flags", "")
        if "D" in flags:
            discarded += 1
            continue
        if "pts" not in p:
            raise RuntimeError(f"{path}: ffprobe lists a video packet with no pts: {p}")
        rows.append((int(p["pts"]), "K" in flags))
    rows.sort(key=lambda r: r[0])
    return PacketTimeline(
        pts=np.array([r[0] for r in rows], dtype=np.int64),
        keyframe=np.array([r[1] for r in rows], dtype=bool),
        discarded=discarded,
    )


def decoded_frame_pts(path: str | os.PathLike[str]) -> list[int]:
    """The pts of each frame FFmpeg's decoder outputs, in output (presentation) order.

    ``best_effort_timestamp`` is the time FFmpeg's own tools give a decoded frame; frame ``n``
    here is the frame ``ffmpeg``'s ``select`` filter calls ``n``.
    """
    data = _probe_json(path, "-show_entries", "frame=best_effort_timestamp")
    return [int(f["best_effort_timestamp"]) for f in data["frames"]]


def frames_by_number(path: str | os.PathLike[str], numbers: list[int],
                     size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Frames ``numbers`` (0-based, presentation order) as ``ffmpeg`` shows them: RGB, upright.

    ``ffmpeg`` applies the display matrix by default (autorotate), so ``size`` is the display
    (width, height). The output must hold exactly one picture per requested number, else this
    raises: a frame ffmpeg never reached is an oracle failure, not a smaller comparison.
    """
    assert FFMPEG is not None
    wanted = sorted(set(numbers))
    expr = "+".join(f"eq(n\\,{n})" for n in wanted)
    args = [FFMPEG, "-v", "error", "-nostdin", "-i", os.fspath(path), "-map", "0:v:0",
            "-vf", f"select='{expr}'", "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = _run(args, "ffmpeg")
    w, h = size
    if len(raw) != len(wanted) * w * h * 3:
        raise RuntimeError(f"{Path(path).name}: ffmpeg gave {len(raw)} bytes, expected "
                           f"{len(wanted)} frames of {w}x{h} RGB ({len(wanted) * w * h * 3})")
    images = np.frombuffer(raw, dtype=np.uint8).reshape(len(wanted), h, w, 3)
    return dict(zip(wanted, images, strict=True))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two same-shaped uint8 images, on the 0-255 scale."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
