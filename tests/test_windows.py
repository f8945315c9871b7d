"""Windows over a long video: consecutive spans on frame starts, snapped to nearby cuts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from videovlm.probe import probe
from videovlm.video import load_video
from videovlm.windows import window_spans

BIKES = Path(__file__).resolve().parent.parent / "samples" / "bikes.mp4"


def test_windows_cover_the_video_once_on_frame_starts() -> None:
    info = probe(BIKES)  # 250 frames at 25 fps: 10 s
    tl = info.timeline
    starts = {tl.time_s(i) for i in range(info.frame_count)} | {info.duration_s}
    spans = window_spans(info, 3.0)
    assert len(spans) == 4
    assert spans[0][0] == 0.0 and spans[-1][1] == info.duration_s
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(a in starts and b in starts for a, b in spans)
    assert window_spans(info, 60.0) == [(0.0, info.duration_s)]
    with pytest.raises(ValueError, match="longer than 0"):
        window_spans(info, 0)


def test_a_boundary_moves_to_a_cut_within_reach() -> None:
    info = probe(BIKES)
    plain = window_spans(info, 5.0)  # one boundary at 5.0 s (frame 125)
    assert plain[0][1] == 5.0
    assert window_spans(info, 5.0, cuts=[110], snap_s=1.0)[0][1] == info.timeline.time_s(110)
    assert window_spans(info, 5.0, cuts=[100], snap_s=0.5) == plain  # 1 s away: out of reach
    assert window_spans(info, 5.0, cuts=[110, 130], snap_s=1.0)[0][1] == info.timeline.time_s(130)


def test_load_video_plans_inside_a_span_with_a_probe_given() -> None:
    info = probe(BIKES)
    inputs = load_video(BIKES, "timeline", n=4, info=info, span=(2.0, 4.0))
    assert [round(f.time_s, 2) for f in inputs.frames] == [2.24, 2.72, 3.24, 3.72]
    assert inputs.groups[0].start_s == 2.0 and inputs.groups[0].end_s == 4.0
    assert "probe" not in inputs.timing_s
