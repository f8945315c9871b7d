"""Windows over a long video: consecutive spans on frame starts, snapped to nearby cuts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from videovlm.pipelines import load_recipe
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


def test_scenes_inside_a_span_come_from_the_cuts_inside_it() -> None:
    from videovlm.scenes import SceneSettings, scenes_from_cuts

    info = probe(BIKES)  # 25 fps: frame i starts at i / 25 s
    cuts = [0, 50, 110, 160, 230]
    settings = SceneSettings(min_scene_s=0.0, max_scene_s=0.0)
    inside = scenes_from_cuts(info, cuts, settings, span=(4.0, 8.0))
    assert inside == [(4.0, 4.4), (4.4, 6.4), (6.4, 8.0)]  # cuts at 110 and 160 only
    whole = scenes_from_cuts(info, cuts, settings)
    assert [a for a, _ in whole] == [0.0, 2.0, 4.4, 6.4, 9.2]
    assert scenes_from_cuts(info, cuts, settings, span=(9.2, info.duration_s)) == \
        [(9.2, info.duration_s)]


def test_scene_mode_inside_a_span_plans_from_cuts_found_once() -> None:
    info = probe(BIKES)
    inputs = load_video(BIKES, "describe", n=8, info=info, span=(2.0, 6.0), cuts=[110])
    # scene_frames = 8 of the span's 8 frames is all of its 4 s: the cut at 4.4 s is merged
    assert [(g.start_s, g.end_s) for g in inputs.groups] == [(2.0, 6.0)]
    assert all(2.0 <= f.time_s < 6.0 for f in inputs.frames) and len(inputs.frames) == 8
    loose = load_video(BIKES, load_recipe("describe").with_overrides(scene_frames=1), n=8,
                       info=info, span=(2.0, 6.0), cuts=[110])
    assert [(g.start_s, g.end_s) for g in loose.groups] == [(2.0, 4.4), (4.4, 6.0)]


def test_a_timeline_is_read_inside_its_window() -> None:
    from videovlm.text import parse_segments

    segs, parsed = parse_segments("00:05 - 00:12: a\n00:14 - 00:30: b\n00:31: c", 25.0, 10.0)
    assert parsed and [(s.start_s, s.end_s, s.text) for s in segs] == [
        (10.0, 12.0, "a"), (14.0, 25.0, "b")]
    whole, parsed = parse_segments("no times here", 25.0, 10.0)
    assert not parsed and (whole[0].start_s, whole[0].end_s) == (10.0, 25.0)
