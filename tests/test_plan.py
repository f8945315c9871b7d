"""The selection rule (a contract): slice centres, exact comparison, dedup, keyframe mode.

Pure unit tests on hand-built timelines, plus a brute-force oracle in exact fractions that the
vectorised rule must agree with on random variable-frame-rate timelines.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from videovlm.plan import plan
from videovlm.probe import Timeline, VideoInfo


def make_info(pts, end_pts: int, time_base=Fraction(1, 1), keyframe=None) -> VideoInfo:
    pts = np.asarray(pts, dtype=np.int64)
    key = np.ones(len(pts), bool) if keyframe is None else np.asarray(keyframe, bool)
    tl = Timeline(pts=pts, keyframe=key, end_pts=end_pts, time_base=time_base)
    duration = float((end_pts - pts[0]) * time_base)
    return VideoInfo(
        path="synthetic", stream_index=0, codec="h264", width=64, height=48, rotation=0,
        fps=len(pts) / duration, frame_count=len(pts), duration_s=duration,
        start_s=float(pts[0] * time_base), has_audio=False, frame_count_header=None,
        duration_s_header=None, fps_header=None, timeline=tl,
    )


def oracle(pts: list[int], end_pts: int, n: int) -> list[int]:
    """The rule as DESIGN words it, in exact fractions, one centre at a time."""
    span = Fraction(end_pts - pts[0])
    chosen = set()
    for k in range(n):
        centre = pts[0] + span * (2 * k + 1) / (2 * n)
        on_screen = [i for i, p in enumerate(pts) if p <= centre]
        chosen.add(on_screen[-1] if on_screen else 0)
    return sorted(chosen)


def indices(refs) -> list[int]:
    return [r.index for r in refs]


def test_takes_the_frame_on_screen_at_each_slice_centre():
    info = make_info(range(10), 10)  # frames at 0..9 s, each 1 s long
    # slices of 2 s: centres at 1, 3, 5, 7, 9
    assert indices(plan(info, 5)) == [1, 3, 5, 7, 9]
    # slices of 2.5 s: centres 1.25, 3.75, 6.25, 8.75
    assert indices(plan(info, 4)) == [1, 3, 6, 8]


def test_a_frame_starting_exactly_at_a_centre_counts_as_on_screen():
    # 29.97 fps in a 90 kHz time base: the centres of 2 slices of 4 frames land exactly on
    # frames 1 and 3; float rounding must not pick frames 0 and 2
    tick = 3003
    info = make_info([k * tick for k in range(4)], 4 * tick, Fraction(1, 90000))
    assert indices(plan(info, 2)) == [1, 3]
    info = make_info([k * tick for k in range(6)], 6 * tick, Fraction(1, 90000))
    assert indices(plan(info, 3)) == [1, 3, 5]
    assert indices(plan(info, 6)) == [0, 1, 2, 3, 4, 5]


def test_times_are_real_presentation_times_from_the_first_frame():
    info = make_info([1000, 1512, 2024, 2536], 3048, Fraction(1, 15360))  # starts at 65 ms
    refs = plan(info, 4)
    assert indices(refs) == [0, 1, 2, 3]
    assert [r.pts for r in refs] == [1000, 1512, 2024, 2536]
    assert [r.time_s for r in refs] == pytest.approx([0, 512 / 15360, 1024 / 15360, 1536 / 15360])


def test_a_frame_on_screen_for_several_slices_is_taken_once():
    info = make_info([0, 1, 2], 3)
    assert indices(plan(info, 10)) == [0, 1, 2]
    assert indices(plan(info, 50)) == [0, 1, 2]


def test_a_single_frame_gives_one_frame():
    info = make_info([0], 1)
    refs = plan(info, 50)
    assert indices(refs) == [0] and refs[0].time_s == 0.0


def test_frozen_gap_yields_fewer_frames_and_real_times():
    # frames every 1 s, then frame 4 stays on screen for 10 s (4 .. 14), then 14, 15
    pts = [0, 1, 2, 3, 4, 14, 15]
    info = make_info(pts, 16)
    refs = plan(info, 16)  # centres at 0.5, 1.5, ..., 15.5
    assert indices(refs) == [0, 1, 2, 3, 4, 5, 6]
    assert [r.time_s for r in refs] == [0, 1, 2, 3, 4, 14, 15]


def test_start_offset_does_not_change_the_choice():
    base = make_info([0, 3, 5, 9, 10, 11], 14)
    shifted = make_info([p + 7_000 for p in [0, 3, 5, 9, 10, 11]], 7_014)
    for n in (1, 2, 3, 5, 8, 13):
        a, b = plan(base, n), plan(shifted, n)
        assert indices(a) == indices(b)
        assert [r.time_s for r in a] == [r.time_s for r in b]


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_the_exact_oracle_on_random_vfr_timelines(seed):
    rng = np.random.default_rng(seed)
    gaps = rng.integers(1, 50, size=int(rng.integers(1, 80)))
    start = int(rng.integers(-1000, 1000))
    pts = [start, *(start + np.cumsum(gaps)).tolist()]
    end = pts[-1] + int(rng.integers(1, 50))
    info = make_info(pts, end, Fraction(1, int(rng.integers(1, 100_000))))
    for n in (1, 2, 3, 7, 10, 50, 101):
        assert indices(plan(info, n)) == oracle(pts, end, n), n


def test_keyframe_mode_takes_the_keyframe_nearest_each_centre():
    key = [k % 10 == 0 for k in range(30)]  # keyframes at 0, 10, 20
    info = make_info(range(30), 30, keyframe=key)
    # centres 3.75, 11.25, 18.75, 26.25 -> nearest keyframes 0, 10, 20, 20
    refs = plan(info, 4, seek="keyframe")
    assert indices(refs) == [0, 10, 20]
    assert all(key[r.index] for r in refs)
    assert [r.time_s for r in refs] == [0.0, 10.0, 20.0]


def test_keyframe_mode_with_one_keyframe_gives_it_once():
    key = [True] + [False] * 9
    info = make_info(range(10), 10, keyframe=key)
    assert indices(plan(info, 5, seek="keyframe")) == [0]


def test_part_of_the_video_can_be_planned():
    info = make_info(range(100), 100)
    # slices of 2 s over [20, 30): centres 21, 23, ..., 29
    assert indices(plan(info, 5, start_s=20, end_s=30)) == [21, 23, 25, 27, 29]


@pytest.mark.parametrize("bad", [{"n": 0}, {"n": -3}, {"seek": "nearest"}])
def test_bad_arguments_are_refused(bad):
    info = make_info(range(5), 5)
    with pytest.raises(ValueError):
        plan(info, **{"n": 5, **bad})


def test_keyframe_mode_keeps_a_part_inside_its_range():
    # 90 frames at 1 s each, keyframes at 0, 30, 60: a scene [30, 60) takes no frame of the next
    info = make_info(list(range(90)), 90, keyframe=[i % 30 == 0 for i in range(90)])
    assert indices(plan(info, 2, seek="keyframe", start_s=30, end_s=60)) == [30]
    assert indices(plan(info, 3, seek="keyframe", start_s=0, end_s=30)) == [0]
    # a part with no keyframe of its own falls back to the frames on screen
    assert indices(plan(info, 2, seek="keyframe", start_s=40, end_s=50)) == [42, 47]
    assert indices(plan(info, 50, seek="keyframe")) == [0, 30, 60]
