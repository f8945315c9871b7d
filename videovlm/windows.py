"""Windows: a long video cut into consecutive spans, each described from its own frames.

One budget of 50 frames over a one-hour film is a frame every 72 s; the tools people use on long
footage cut it into windows and spend a budget inside each. A window's boundaries are
presentation times of frames on the probed timeline (as scene boundaries are, so the selection
rule inside a window and the segments agree to the frame), the windows cover ``[0, duration]``
exactly once, and a boundary moves to a scene cut when one lies near it, so a window starts
where a shot starts rather than a few seconds into it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from fractions import Fraction

from videovlm.probe import VideoInfo
from videovlm.scenes import Scene, split_long

Span = Scene
"""``(start_s, end_s)`` in seconds from the first frame."""


def window_spans(info: VideoInfo, length_s: float, cuts: Sequence[int] = (),
                 snap_s: float = 0.0) -> list[Span]:
    """Consecutive windows of about ``length_s`` seconds covering the whole video once.

    The video is split into ``ceil(duration / length_s)`` equal windows whose boundaries sit on
    frame starts; a boundary with a cut (``cuts``: indices of frames that start a shot, as
    :func:`~videovlm.scenes.detect_cuts` returns) within ``snap_s`` seconds moves to the nearest
    such cut. A video no longer than ``length_s`` is one window.
    """
    if length_s <= 0:
        raise ValueError(f"a window must be longer than 0 s, got {length_s}")
    tl = info.timeline
    tb = tl.time_base
    origin = int(tl.pts[0])
    starts = tl.pts - origin
    edges = split_long([0, tl.end_pts - origin], starts, round(Fraction(length_s) / tb))
    cut_edges = sorted({int(starts[i]) for i in cuts if 0 < i < len(starts)})
    reach = round(Fraction(snap_s) / tb)
    if cut_edges and reach > 0:
        for k in range(1, len(edges) - 1):
            pos = bisect.bisect_left(cut_edges, edges[k])
            near = [c for c in cut_edges[max(0, pos - 1):pos + 1] if abs(c - edges[k]) <= reach]
            if near:
                best = min(near, key=lambda c: abs(c - edges[k]))
                if edges[k - 1] < best < edges[k + 1]:
                    edges[k] = best
    return [(float(a * tb), float(b * tb)) for a, b in itertools.pairwise(edges)]
