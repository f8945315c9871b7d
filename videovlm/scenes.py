"""Where the shots change, and how many frames each shot gets.

A small model asked for a whole timeline at once loses the times; describing each scene with its
own frames keeps them. The cuts come from PySceneDetect (a well-kept detector with published
accuracy) fed by our own downscaled PyAV decode: PyAV hands us each frame's real presentation
timestamp, so a cut is mapped to the probed :class:`~videovlm.probe.Timeline` exactly (no
``frame / fps`` arithmetic), and a reused swscale context shrinks and converts each frame in one
step, which measured faster than scenedetect's own decode-then-resize on our samples.

Scene boundaries are always presentation times of frames on the timeline (seconds from the first
frame), so segments, subtitles and the selection rule inside a scene agree to the frame.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

import videovlm.isolation as isolation
from videovlm.errors import InputError
from videovlm.probe import VideoInfo, check_frame_size, decoded

Scene = tuple[float, float]

# Detector name -> (scenedetect class name, its threshold keyword). Thresholds left unset keep the
# detector's own default (adaptive 3.0, content 27, threshold 12, histogram 0.20, hash 0.35).
DETECTORS: dict[str, str] = {
    "adaptive": "AdaptiveDetector",
    "content": "ContentDetector",
    "threshold": "ThresholdDetector",
    "histogram": "HistogramDetector",
    "hash": "HashDetector",
}
_THRESHOLD_KW = {"adaptive": "adaptive_threshold"}

# scenedetect's own default: frames are shrunk to about this width before scoring.
DOWNSCALE_WIDTH = 256
# scene detection decodes every frame of the file, at its full size, then scores it: its time
# limit is this many times a decode's (which already allows ~10x a plain decode of every frame)
SCENES_TIMEOUT_FACTOR = 4


@dataclass(frozen=True)
class SceneSettings:
    """How scenes are found and shaped; the ``[scenes]`` table of a recipe.

    ``min_scene_len`` is the detector's own guard (seconds that must pass after a cut before the
    next one, 0.6 as the ``scenedetect`` CLI); ``min_scene_s`` then merges what is still short
    into a neighbour and ``max_scene_s`` splits long scenes into equal windows (0 = never), so a
    long static shot still gets several descriptions.
    """

    detector: str = "adaptive"
    threshold: float | None = None
    min_scene_len: float = 0.6
    min_scene_s: float = 1.0
    max_scene_s: float = 60.0
    downscale_width: int = DOWNSCALE_WIDTH

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {sorted(DETECTORS)}, got {self.detector!r}")
        if self.min_scene_s < 0 or self.max_scene_s < 0 or self.min_scene_len < 0:
            raise ValueError("scene lengths must be >= 0")
        if self.max_scene_s and self.max_scene_s < 2 * self.min_scene_s:
            raise ValueError(
                f"max_scene_s ({self.max_scene_s}) must be 0 or at least twice min_scene_s "
                f"({self.min_scene_s}), or split windows would be merged again"
            )
        if self.downscale_width < 16:
            raise ValueError("downscale_width must be at least 16")


def detect_cuts(info: VideoInfo, settings: SceneSettings | None = None, *,
                skip_nonref: bool = False) -> list[int]:
    """Indices (in presentation order) of the frames that start a new shot, as detected.

    Decodes the whole video once at about ``downscale_width`` pixels wide; frames whose timestamp
    is not on the probed timeline (none on a sane file) are scored but never become cuts.

    ``skip_nonref`` (long videos) has the decoder skip frames no other frame refers to (B-frames,
    ``skip_frame = "NONREF"``): on a B-frame encode that is about half the frames, and 40 % of the
    detection's time on 720p H.264. Cuts stay on their frames because encoders start a shot with
    an I- or P-frame, which is always decoded; a short-clip run keeps every frame, as the
    ``scenedetect`` CLI does.

    It runs in the decode process (:mod:`videovlm.isolation`), as decodes do: a crash of
    FFmpeg's decoder on a damaged file is one line there, and so is an overrun of the decode
    time limit.
    """
    if isolation.isolated():
        return isolation.call_isolated(
            "videovlm.scenes:detect_cuts_in_process", (info, settings, skip_nonref),
            path=info.path, doing=f"detecting scenes in {info.path}",
            limit=SCENES_TIMEOUT_FACTOR * isolation.timeout_s(info), tag="scenes")
    return detect_cuts_in_process(info, settings, skip_nonref)


def detect_cuts_in_process(info: VideoInfo, settings: SceneSettings | None = None,
                           skip_nonref: bool = False) -> list[int]:
    """:func:`detect_cuts` in this process (what the decode process runs)."""
    import av
    import scenedetect
    from av.video.reformatter import VideoReformatter
    from scenedetect.common import FrameTimecode, Timecode

    s = settings or SceneSettings()
    cls = getattr(scenedetect, DETECTORS[s.detector])
    kwargs: dict[str, Any] = {"min_scene_len": float(s.min_scene_len)}
    if s.threshold is not None:
        kwargs[_THRESHOLD_KW.get(s.detector, "threshold")] = float(s.threshold)
    detector = cls(**kwargs)

    tl = info.timeline
    rate = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
    cuts: list[Any] = []
    last = None
    try:
        container = av.open(info.path, metadata_errors="ignore")  # as probe: odd tags are no error
    except (OSError, av.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot open {info.path} for scene detection: {exc}") from exc
    with container:
        stream = container.streams[info.stream_index]
        stream.thread_type = "AUTO"
        if skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        cc = stream.codec_context
        check_frame_size(info.path, cc.width, cc.height)  # the header's size sets the output's
        width, height = _small_size(cc.width, cc.height, s)
        reformatter = VideoReformatter()  # reused: a fresh swscale context per frame costs 2x
        try:
            for frame in decoded(container, stream):
                if frame.pts is None:
                    continue
                image = reformatter.reformat(
                    frame, width=width, height=height, format="bgr24", interpolation="AREA"
                ).to_ndarray()
                last = FrameTimecode(Timecode(int(frame.pts), tl.time_base), rate)
                cuts += detector.process_frame(last, image)
        except av.FFmpegError as exc:
            raise InputError(f"cannot decode {info.path} for scene detection: {exc}") from exc
    if last is not None:
        cuts += detector.post_process(last)
    indices = set()
    for cut in cuts:
        i = int(np.searchsorted(tl.pts, cut.pts))
        if 0 < i < len(tl.pts) and int(tl.pts[i]) == cut.pts:
            indices.add(i)
    return sorted(indices)


def detect_scenes(info: VideoInfo, **settings: Any) -> list[Scene]:
    """Scenes as ``(start_s, end_s)`` covering ``[0, duration]`` contiguously, in order.

    ``settings`` are :class:`SceneSettings` fields (a recipe's ``[scenes]`` table); a
    ``max_scenes`` keyword additionally merges the shortest scenes until at most that many remain
    (pass the frame budget, so every scene can get a frame).
    """
    max_scenes = settings.pop("max_scenes", None)
    s = SceneSettings(**settings)
    bounds = [0, *detect_cuts(info, s)]
    return scenes_from_cuts(info, bounds, s, max_scenes=max_scenes)


def scenes_from_cuts(
    info: VideoInfo,
    starts: Sequence[int],
    settings: SceneSettings | None = None,
    *,
    max_scenes: int | None = None,
    span: Scene | None = None,
) -> list[Scene]:
    """Turn shot-start frame indices into merged, split scenes in seconds.

    Separate from detection so the shaping rules are testable without decoding. Short scenes
    merge first (so a flash does not become its own description), then long ones split into
    equal windows whose boundaries snap to the nearest frame start, then ``max_scenes`` merges.
    With ``span`` (a window's ``(start_s, end_s)``, on frame starts) only the cuts inside it
    count and the scenes cover exactly the span: the cuts of a long video are found once and
    each window's scenes are made from its own.
    """
    s = settings or SceneSettings()
    tl = info.timeline
    origin = int(tl.pts[0])
    tb = tl.time_base
    lo, hi = 0, tl.end_pts - origin
    if span is not None:
        lo, hi = (round(Fraction(t) / tb) for t in span)
    # boundaries in time-base units from the first frame; the last one is the end of the span
    edges = sorted({int(tl.pts[i]) - origin for i in starts if 0 <= i < len(tl.pts)}
                   | {lo})
    edges = [e for e in edges if lo <= e < hi]
    edges.append(hi)
    if s.min_scene_s > 0:
        edges = _merge_shortest(edges, lambda e: _shortest(e)[1] * tb < s.min_scene_s)
    if s.max_scene_s > 0:
        edges = split_long(edges, tl.pts - origin, round(Fraction(s.max_scene_s) / tb))
    if max_scenes is not None:
        if max_scenes < 1:
            raise ValueError(f"max_scenes must be at least 1, got {max_scenes}")
        edges = _merge_shortest(edges, lambda e: len(e) - 1 > max_scenes)
    return [(float(a * tb), float(b * tb)) for a, b in itertools.pairwise(edges)]


def merge_scenes(scenes: Sequence[Scene], max_scenes: int) -> list[Scene]:
    """Merge the shortest scene into its shorter neighbour until at most ``max_scenes`` remain.

    Used when a frame budget is smaller than the number of scenes: the scenes a viewer would
    notice least are folded into the one beside them that is itself shorter, so long shots keep
    their own descriptions.
    """
    if max_scenes < 1:
        raise ValueError(f"max_scenes must be at least 1, got {max_scenes}")
    edges = [scenes[0][0], *(end for _, end in scenes)]
    edges = _merge_shortest(edges, lambda e: len(e) - 1 > max_scenes)
    return list(itertools.pairwise(edges))


def allocate_frames(scenes: Sequence[Scene], n: int) -> list[int]:
    """Share one frame budget ``n`` across scenes by duration, at least one frame each.

    Scenes whose proportional share is below one frame get exactly one, and the rest of the
    budget is shared again among the others (repeated until every share is at least one); then
    the largest-remainder method rounds the shares so they sum to exactly ``n``. Ties go to the
    earlier scene. More scenes than frames is an error: call :func:`merge_scenes` first (or
    :func:`detect_scenes` with ``max_scenes=n``).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not scenes:
        return []
    if len(scenes) > n:
        raise ValueError(
            f"{len(scenes)} scenes cannot each get a frame from a budget of {n}; "
            "merge them first with merge_scenes(scenes, n)"
        )
    lengths = [max(0.0, end - start) for start, end in scenes]
    counts = [0] * len(scenes)
    rest = list(range(len(scenes)))
    budget = n
    while True:
        total = sum(lengths[i] for i in rest)
        shares = {i: budget * lengths[i] / total if total > 0 else budget / len(rest) for i in rest}
        small = [i for i in rest if shares[i] < 1]
        if not small:
            break
        for i in small:
            counts[i] = 1
        budget -= len(small)
        rest = [i for i in rest if shares[i] >= 1]
        if not rest:
            return counts
    for i in rest:
        counts[i] = math.floor(shares[i])
    left = budget - sum(counts[i] for i in rest)
    by_remainder = sorted(rest, key=lambda i: (-(shares[i] - counts[i]), i))
    for i in by_remainder[:left]:
        counts[i] += 1
    return counts


def _small_size(width: int, height: int, s: SceneSettings) -> tuple[int, int]:
    """The scoring size: scenedetect's rule (shrink to ``downscale_width``, never enlarge)."""
    if width <= s.downscale_width:
        return width, height
    factor = width / s.downscale_width
    return max(1, round(width / factor)), max(2, round(height / factor))


def _shortest(edges: Sequence[Any]) -> tuple[int, Any]:
    """Index and length of the shortest interval (first one on ties)."""
    lengths = [b - a for a, b in itertools.pairwise(edges)]
    i = min(range(len(lengths)), key=lambda k: (lengths[k], k))
    return i, lengths[i]


def _merge_shortest(edges: list[Any], keep_merging: Any) -> list[Any]:
    """Remove boundaries, joining the shortest interval to its shorter neighbour, while asked."""
    edges = list(edges)
    while len(edges) > 2 and keep_merging(edges):
        i, _ = _shortest(edges)
        left = edges[i] - edges[i - 1] if i > 0 else None
        right = edges[i + 2] - edges[i + 1] if i + 2 < len(edges) else None
        if right is None or (left is not None and left <= right):
            del edges[i]  # join with the previous interval
        else:
            del edges[i + 1]  # join with the next interval
    return edges


def split_long(edges: list[int], frame_pts: np.ndarray, max_len: int) -> list[int]:
    """Split intervals longer than ``max_len`` into equal windows snapped to frame starts."""
    starts = [int(p) for p in frame_pts]
    out = [edges[0]]
    for a, b in itertools.pairwise(edges):
        k = math.ceil((b - a) / max_len) if max_len > 0 else 1
        # edges sit on frame starts, so there are never more windows than frames in (a, b):
        # a gap of years between two timestamps must not mean a loop over years of windows
        inside = bisect.bisect_left(starts, b) - bisect.bisect_right(starts, a)
        k = min(k, inside + 1)
        for j in range(1, k):
            target = a + (b - a) * j / k
            pos = bisect.bisect_left(starts, target)
            near = min(
                (starts[p] for p in (pos - 1, pos) if 0 <= p < len(starts)),
                key=lambda t: abs(t - target),
            )
            if out[-1] < near < b:
                out.append(near)
        out.append(b)
    return out
