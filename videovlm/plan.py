"""Which frames to take: the selection rule, as a pure function of the probed timeline.

The rule (a contract, see README): cut the video's duration into N equal slices and take, for each
slice, the frame on screen at the slice's centre. Comparisons are exact, in the stream's integer
time base, so a frame that starts exactly at a centre counts as on screen. A frame on screen for
several slices is taken once: a short or frozen video yields fewer than N frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from videovlm.probe import VideoInfo

SeekMode = Literal["exact", "keyframe"]
SEEK_MODES: tuple[str, ...] = ("exact", "keyframe")
TIME_TOLERANCE_S = 1e-6
"""How far a decoded frame's reported time may be from its planned ``time_s`` and still be the
same frame: float rounding only (the contract's 1 µs). Backends that report times as floats
check every frame against it."""


@dataclass(frozen=True)
class FrameRef:
    """One planned frame: its index in presentation order and its real presentation time."""

    index: int
    pts: int  # in the stream's time base, as stored in the file
    time_s: float  # seconds from the first frame's presentation time


def slice_centres(info: VideoInfo, n: int, start_s: float = 0.0, end_s: float | None = None):
    """Centres of ``n`` equal slices of ``[start_s, end_s)``, in time-base units (doubled).

    Returned as integers ``2 * n * pts`` so comparisons against ``2 * n * frame_pts`` are exact
    (no float rounding decides whether a frame starting at a centre is on screen), with the
    range's bounds ``lo``, ``hi`` in time-base units.
    """
    tl = info.timeline
    tb = tl.time_base
    origin = int(tl.pts[0])
    lo = origin + round(start_s / tb) if start_s else origin
    hi = tl.end_pts if end_s is None else min(tl.end_pts, origin + round(end_s / tb))
    span = hi - lo
    k = np.arange(n, dtype=_exact_dtype(info, n))
    # centre_k = lo + (2k + 1) * span / (2n), scaled by 2n to stay integral
    return lo * 2 * n + (2 * k + 1) * span, lo, hi


def _exact_dtype(info: VideoInfo, n: int) -> type:
    """int64 where every ``2 * n * pts`` fits in it, else Python ints (``object``): a header's
    time base and timestamps are the file's word, and one that puts frames 2^60 ticks apart
    must not wrap around into a wrong plan."""
    tl = info.timeline
    biggest = max(abs(int(tl.pts[0])), abs(int(tl.pts[-1])), abs(int(tl.end_pts)))
    return np.int64 if 4 * biggest * n < 2**62 else object


def plan(
    info: VideoInfo,
    n: int = 50,
    seek: SeekMode = "exact",
    start_s: float = 0.0,
    end_s: float | None = None,
) -> list[FrameRef]:
    """Choose up to ``n`` frames of ``info`` by the selection rule; no decoding.

    ``seek="keyframe"`` takes, for each slice centre, the keyframe nearest to it instead of the
    exact frame (much cheaper to decode on long files); times stay the keyframes' real times.
    ``start_s``/``end_s`` restrict the rule to a part of the video (a scene), in seconds from the
    first frame.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if seek not in SEEK_MODES:
        raise ValueError(f"seek must be one of {SEEK_MODES}, got {seek!r}")
    tl = info.timeline
    pts = tl.pts
    centres, lo, hi = slice_centres(info, n, start_s, end_s)
    scaled = pts.astype(_exact_dtype(info, n)) * (2 * n)
    on_screen = np.searchsorted(scaled, centres, side="right") - 1
    on_screen = np.clip(on_screen, 0, len(pts) - 1)
    if seek == "keyframe":
        # only keyframes shown inside [lo, hi) (a scene's frames stay in its scene); none
        # there: the frames on screen, as in exact mode
        inside = (pts >= lo) & (pts < hi)
        key_idx = np.flatnonzero(tl.keyframe & inside)
        if len(key_idx) == 0:
            key_idx = np.unique(on_screen)
        key_scaled = scaled[key_idx]
        pos = np.clip(np.searchsorted(key_scaled, centres), 1, len(key_idx) - 1)
        before, after = key_idx[pos - 1], key_idx[np.minimum(pos, len(key_idx) - 1)]
        if len(key_idx) == 1:
            on_screen = np.full_like(on_screen, key_idx[0])
        else:
            nearer_after = np.abs(scaled[after] - centres) < np.abs(centres - scaled[before])
            on_screen = np.where(nearer_after, after, before)
    chosen = sorted(set(int(i) for i in on_screen))
    origin = int(pts[0])
    tb = tl.time_base
    return [FrameRef(i, int(pts[i]), float((int(pts[i]) - origin) * tb)) for i in chosen]
