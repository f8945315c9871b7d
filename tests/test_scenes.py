"""Scene cuts land on the right frames, scenes cover the video, and the frame budget is shared."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import SHOT_INSET, make_shots, read_index
from videovlm.probe import probe
from videovlm.scenes import (
    SceneSettings,
    allocate_frames,
    detect_cuts,
    detect_scenes,
    merge_scenes,
    scenes_from_cuts,
)

ROOT = Path(__file__).resolve().parent.parent
BIKES = ROOT / "samples" / "bikes.mp4"
WORLD = ROOT / "samples" / "world.mp4"


def frame_at(path: Path, index: int) -> np.ndarray:
    """Decode frame ``index`` (presentation order) by counting, independent of videovlm."""
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise IndexError(index)


NO_SHAPING = {"min_scene_s": 0.0, "max_scene_s": 0.0}


@pytest.mark.parametrize(("start_pts_s", "slow_after"), [(0.0, None), (7.5, None), (0.0, 30)])
def test_cuts_on_generated_shots_are_exact(
    tmp_path: Path, start_pts_s: float, slow_after: int | None
) -> None:
    truth = [0, 20, 47, 90]
    path = make_shots(tmp_path / "shots.mp4", truth, 120, start_pts_s=start_pts_s,
                      slow_after=slow_after)
    info = probe(path)
    times = [info.timeline.time_s(i) for i in range(info.frame_count)]
    found = detect_cuts(info)
    assert len(found) == len(truth) - 1
    assert all(abs(f - t) <= 1 for f, t in zip(found, truth[1:], strict=True)), found

    scenes = detect_scenes(info, **NO_SHAPING)
    assert len(scenes) == len(truth)
    assert scenes[0][0] == 0.0 and scenes[-1][1] == pytest.approx(info.duration_s, abs=1e-9)
    for (start, _), cut in zip(scenes, truth, strict=True):
        # the boundary is a frame's presentation time, within one frame of the true cut ...
        index = times.index(start)
        assert abs(index - cut) <= 1
        assert abs(start - times[cut]) <= max(np.diff(times)) + 1e-9
        # ... and the frame shown at that time carries the shot's first index in its pixels
        assert abs(read_index(frame_at(path, index)[: SHOT_INSET[1], : SHOT_INSET[0]]) - cut) <= 1


def test_scenes_are_contiguous_and_cover_the_video() -> None:
    info = probe(BIKES)
    for settings in (NO_SHAPING, {}, {"max_scene_s": 2.0}, {"min_scene_s": 2.5, "max_scene_s": 0}):
        scenes = detect_scenes(info, **settings)
        assert scenes[0][0] == 0.0
        assert scenes[-1][1] == pytest.approx(info.duration_s, abs=1e-9)
        for (_, end), (start, _) in itertools.pairwise(scenes):
            assert end == start
        assert all(b > a for a, b in scenes)


def test_bikes_matches_the_scenedetect_cli(tmp_path: Path) -> None:
    """Our decode + detector must find the cuts the `scenedetect` CLI finds with its defaults."""
    exe = Path(sys.executable).parent / "scenedetect"
    cmd = [str(exe), "-q", "-i", str(BIKES), "-o", str(tmp_path), "detect-adaptive",
           "list-scenes", "-s", "-f", "scenes.csv"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    with open(tmp_path / "scenes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cli_cuts = [int(r["Start Frame"]) - 1 for r in rows[1:]]  # the CLI counts frames from 1
    assert len(cli_cuts) >= 3  # bikes.mp4 is a scene-detection clip with several shot changes

    ours = detect_cuts(probe(BIKES))
    assert len(ours) == len(cli_cuts)
    assert all(abs(a - b) <= 1 for a, b in zip(ours, cli_cuts, strict=True)), (ours, cli_cuts)


def test_short_scenes_merge_and_long_scenes_split() -> None:
    info = probe(BIKES)  # 250 frames, 25 fps
    tl = info.timeline
    frame_times = {tl.time_s(i) for i in range(info.frame_count)} | {info.duration_s}

    # a 2-frame flash at 100..101 merges into its shorter neighbour (the one before: 50..99)
    s = SceneSettings(min_scene_s=0.5, max_scene_s=0)
    assert scenes_from_cuts(info, [0, 50, 100, 102, 200], s) == [
        (0.0, 2.0), (2.0, 4.08), (4.08, 8.0), (8.0, 10.0)]

    # one 10 s scene split into windows of at most 3 s: 4 equal windows on frame starts
    s = SceneSettings(min_scene_s=0, max_scene_s=3.0)
    windows = scenes_from_cuts(info, [0], s)
    assert len(windows) == 4
    assert all(a in frame_times and b in frame_times for a, b in windows)
    assert all(abs((b - a) - 2.5) <= 1 / 25 for a, b in windows)

    # max_scenes folds the shortest scenes away
    assert len(scenes_from_cuts(info, [0, 50, 100, 102, 200], SceneSettings(), max_scenes=2)) == 2


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="detector"):
        SceneSettings(detector="magic")
    with pytest.raises(ValueError, match="twice min_scene_s"):
        SceneSettings(min_scene_s=5, max_scene_s=6)
    with pytest.raises(TypeError):
        detect_scenes(probe(BIKES), min_scene=1.0)


def test_other_detectors_run() -> None:
    info = probe(BIKES)
    content = detect_cuts(info, SceneSettings(detector="content"))
    assert content  # the hard cuts in bikes.mp4 are hard for every detector
    assert detect_cuts(info, SceneSettings(detector="adaptive", threshold=1000.0)) == []


def test_world_is_one_long_scene_split_into_windows() -> None:
    info = probe(WORLD)
    assert detect_scenes(info, max_scene_s=0) == [(0.0, info.duration_s)]
    windows = detect_scenes(info, max_scene_s=10.0)
    assert len(windows) == 4 and windows[-1][1] == info.duration_s


def test_allocate_frames_by_duration() -> None:
    scenes = [(0.0, 1.0), (1.0, 4.0), (4.0, 10.0)]
    counts = allocate_frames(scenes, 10)
    assert counts == [1, 3, 6] and sum(counts) == 10
    # shares 0.3 / 0.9 / 1.8 of 3: the two short scenes get their guaranteed frame, the rest 1
    assert allocate_frames(scenes, 3) == [1, 1, 1]
    # largest remainder: shares 2.5/2.5/5 of 10 -> ties go to the earlier scene
    assert allocate_frames([(0, 1), (1, 2), (2, 4)], 11) == [3, 3, 5]
    # a sliver of a scene still gets one frame; budget stays exact
    counts = allocate_frames([(0.0, 0.01), (0.01, 100.0)], 50)
    assert counts == [1, 49]
    for n in range(3, 60):
        counts = allocate_frames(scenes, n)
        assert sum(counts) == n and min(counts) >= 1
        assert counts[0] <= counts[1] <= counts[2]


def test_allocate_frames_needs_a_frame_per_scene() -> None:
    scenes = [(0.0, 1.0), (1.0, 1.5), (1.5, 5.0), (5.0, 5.2), (5.2, 9.0)]
    with pytest.raises(ValueError, match="merge_scenes"):
        allocate_frames(scenes, 3)
    merged = merge_scenes(scenes, 3)
    # the 0.2 s scene joins its shorter neighbour (3.5 s < 3.8 s), then the 0.5 s one joins 1.0 s
    assert merged == [(0.0, 1.5), (1.5, 5.2), (5.2, 9.0)]
    assert allocate_frames(merged, 3) == [1, 1, 1]
