"""The CPU stage: one video made ready for the model (probe, scenes, plan, decode, prepare).

:func:`load_video` returns a picklable :class:`VideoInputs` that a worker process or a Ray task
can hand over to the model stage (:mod:`videovlm.run`), which needs nothing else from the file.
How the frames are picked and grouped is the recipe's task's mode (:mod:`videovlm.tasks`):
``scenes`` finds the cuts and shares the frame budget across scenes; ``windows`` only probes
(its task decodes one window at a time in the model stage, through :func:`load_video` with a
span, so memory never holds the whole video's frames); every other mode plans the whole video
at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videovlm import tasks
from videovlm.decode import Frame, decode_with_backend
from videovlm.dialogue import Dialogue, DialogueSettings, find_dialogue
from videovlm.pipelines import Recipe, load_recipe
from videovlm.plan import FrameRef, plan
from videovlm.prepare import prepare
from videovlm.probe import VideoInfo, probe
from videovlm.scenes import (
    SceneSettings,
    allocate_frames,
    detect_cuts,
    detect_scenes,
    scenes_from_cuts,
)
from videovlm.speech import speech_dialogue
from videovlm.windows import Span, window_length, window_spans
from videovlm.writers import Thumbnail

log = logging.getLogger("videovlm")


@dataclass
class Group:
    """Frames described together: the whole video (timeline, questions) or one scene."""

    start_s: float
    end_s: float
    frames: list[int]  # positions in VideoInputs.frames / .images
    planned: int = 0  # frames the selection rule was asked for over the span (0: several plans)


@dataclass
class VideoInputs:
    """The CPU stage's output for one video: everything the model stage needs, nothing heavy.

    Picklable (numpy arrays and plain data, no model or file handles) so decoding can run in
    another process or on another machine than the model.
    """

    path: str
    info: VideoInfo
    mode: str  # the task's mode: "scenes" | "timeline" | "ask"
    frames: list[Frame]  # decoded, upright, at decoded resolution (reports, re-planning)
    images: list[np.ndarray]  # prepared for the model, same order as frames
    groups: list[Group]
    sampling: dict[str, Any]
    timing_s: dict[str, float] = field(default_factory=dict)
    span: Span | None = None  # the window these frames were planned in (None: the whole video)
    dialogue: Dialogue | None = None  # subtitles on the frames' clock (None: none found / off)

    def whole(self) -> Group:
        """Every frame as one group: a timeline or questions over the whole video, or over the
        window (also when the frames were chosen per scene)."""
        if len(self.groups) == 1 and len(self.groups[0].frames) == len(self.frames):
            return self.groups[0]
        start, end = self.span or (0.0, self.info.duration_s)
        return Group(start, end, list(range(len(self.frames))))


def _scene_settings(scene_settings: dict[str, Any], n: int, span: Span,
                    scene_frames: int | None) -> SceneSettings:
    """The ``[scenes]`` settings inside one window: with ``scene_frames``, scenes shorter than
    that many of the window's ``n`` frames merge (and the split length grows to keep twice
    that), so a window of a film with hundreds of shots gets a few scenes of several frames
    each, not ``n`` scenes of one frame."""
    s = SceneSettings(**scene_settings)
    if not scene_frames:
        return s
    shortest = max(s.min_scene_s, scene_frames * (span[1] - span[0]) / n)
    longest = max(s.max_scene_s, 2 * shortest) if s.max_scene_s else 0.0
    return dataclasses.replace(s, min_scene_s=shortest, max_scene_s=longest)


def _refs_for(info: VideoInfo, mode: str, n: int, seek: str, scene_settings: dict[str, Any],
              span: Span | None = None, cuts: Sequence[int] | None = None,
              scene_frames: int | None = None,
              ) -> tuple[list[FrameRef], list[tuple[float, float, list[int], int]]]:
    """The planned frames and, per group, its time span, frame indices and the count the
    selection rule was asked for (inside ``span`` when one is given). ``cuts`` are the video's
    cuts when already found (a windowed video's, found once for the whole file); scene mode
    finds them otherwise."""
    if mode == "windows" and span is None:
        return [], [(0.0, info.duration_s, [], 0)]  # each window is planned when it is decoded
    start, end = span or (0.0, info.duration_s)
    if mode != "scenes":
        refs = plan(info, n, seek=seek, start_s=start,
                    end_s=None if end >= info.duration_s else end)
        return refs, [(start, end, [r.index for r in refs], n)]
    if span is None and cuts is None:
        scenes = detect_scenes(info, **{**scene_settings, "max_scenes": n})
    else:
        settings = _scene_settings(scene_settings, n, (start, end), scene_frames)
        if cuts is None:
            cuts = detect_cuts(info, settings)
        scenes = scenes_from_cuts(info, [0, *cuts], settings, max_scenes=n, span=span)
    counts = allocate_frames(scenes, n)
    by_index: dict[int, FrameRef] = {}
    spans = []
    for (a, b), k in zip(scenes, counts, strict=True):
        refs = plan(info, k, seek=seek, start_s=a, end_s=b)
        by_index.update((r.index, r) for r in refs)
        spans.append((a, b, [r.index for r in refs], k))
    return sorted(by_index.values(), key=lambda r: r.index), spans


def read_dialogue(path: str | os.PathLike[str], info: VideoInfo, recipe: Recipe
                  ) -> Dialogue | None:
    """The video's dialogue as the recipe's ``[dialogue]`` asks: speech recognition with
    ``transcribe``, else its subtitles (found, or the file named); None when there is none."""
    settings = DialogueSettings.from_recipe(recipe.dialogue)
    source = speech_dialogue if settings.transcribe else find_dialogue
    return source(path, info, settings)


def load_video(
    path: str | os.PathLike[str],
    recipe: Recipe | str,
    *,
    n: int | None = None,
    image_size: int = 384,
    backend: str | None = None,
    fit: str | None = None,
    seek: str | None = None,
    info: VideoInfo | None = None,
    span: Span | None = None,
    cuts: Sequence[int] | None = None,
    dialogue: Dialogue | None = None,
) -> VideoInputs:
    """Probe, find scenes (scene mode), plan, decode and prepare one video for ``recipe``.

    ``recipe`` is a :class:`~videovlm.pipelines.Recipe` or a built-in name / TOML path; ``n``,
    ``backend``, ``fit`` and ``seek`` override its ``[sampling]``; ``image_size`` is the model's
    (``Model.image_size``). How frames are grouped is the recipe's task's mode.

    ``span`` (``(start_s, end_s)``, e.g. one of :func:`~videovlm.windows.window_spans`) plans
    ``n`` frames inside that part of the video only, so a long video is decoded and described
    one window at a time; ``info`` is the video's :func:`~videovlm.probe.probe`, passed so the
    timeline of a long file is read once, not once per window; ``cuts`` (scene mode) are the
    video's cuts found once for the whole file (:func:`~videovlm.scenes.detect_cuts`), so each
    window's scenes come from the cuts inside it, and the recipe's ``[windows] scene_frames``
    then keeps a window's scenes long enough for that many frames each.

    The video's dialogue (the recipe's ``[dialogue]``: subtitles found next to it or inside
    it, or a file it names) is read here too, on the frames' clock; ``dialogue`` passes one
    already read (a long video's windows read it once).
    """
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    rec = rec.with_overrides(n=n, backend=backend, fit=fit, seek=seek)
    n, backend = rec.sampling["n"], rec.sampling["backend"]
    fit, seek = rec.sampling["fit"], rec.sampling["seek"]
    mode = rec.mode

    timing: dict[str, float] = {}
    if info is None:
        t0 = time.perf_counter()
        info = probe(path)
        timing["probe"] = time.perf_counter() - t0

    if dialogue is None:
        t0 = time.perf_counter()
        dialogue = read_dialogue(path, info, rec)
        timing["dialogue"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    refs, spans = _refs_for(info, mode, n, seek, dict(rec.scenes), span, cuts,
                            rec.windows.get("scene_frames") if span is not None else None)
    if mode == "scenes":
        timing["scenes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    frames, used_backend = decode_with_backend(info, refs, backend)
    timing["decode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    images = prepare(frames, image_size, fit)  # type: ignore[arg-type]
    timing["prepare"] = time.perf_counter() - t0

    pos = {f.index: i for i, f in enumerate(frames)}
    groups = [Group(s, e, [pos[i] for i in idx], k) for s, e, idx, k in spans]
    return VideoInputs(
        path=str(path),
        info=info,
        mode=mode,
        frames=frames,
        images=images,
        groups=groups,
        span=span,
        sampling={"backend": used_backend, "requested": n, "seek": seek,
                  "image_size": image_size, "fit": fit},
        timing_s=timing,
        dialogue=dialogue,
    )


@dataclass
class WindowedVideo:
    """The CPU stage's output for a long video: its probe, its cuts (found once for the whole
    file) and its windows, and no frames yet.

    Each window's frames are decoded when the model stage reaches it (:meth:`load`, one window
    ahead at most), so however long the video, memory holds one or two windows' frames, never
    all of them; a worker process or a Ray task hands this over as cheaply as a path.
    """

    path: str
    info: VideoInfo
    recipe: Recipe  # with the run's sampling overrides applied
    image_size: int
    spans: list[Span]
    cuts: list[int] | None  # None: not detected (no snapping, not scene mode)
    timing_s: dict[str, float] = field(default_factory=dict)
    dialogue: Dialogue | None = None  # read once for the whole file (None: none found / off)

    @property
    def mode(self) -> str:
        return self.recipe.mode

    def load(self, i: int) -> VideoInputs:
        """Window ``i``'s frames, planned, decoded and prepared; the decoded frames are kept
        only as report thumbnails (a 720p frame is 2.7 MB, its thumbnail a few kB)."""
        inputs = load_video(self.path, read_once(self.recipe, self.dialogue),
                            image_size=self.image_size, info=self.info, span=self.spans[i],
                            cuts=self.cuts, dialogue=self.dialogue)
        inputs.frames = [Thumbnail.of(f) for f in inputs.frames]  # type: ignore[misc]
        return inputs


def read_once(recipe: Recipe, dialogue: Dialogue | None) -> Recipe:
    """The recipe for a later part of a video whose dialogue was already read: pass that
    :class:`Dialogue` to :func:`load_video` as well; none found, no part looks again."""
    return (recipe if dialogue is not None
            else recipe.with_overrides(subtitles="none", transcribe=False))


def stage_video(
    path: str | os.PathLike[str],
    recipe: Recipe | str,
    *,
    n: int | None = None,
    image_size: int = 384,
    backend: str | None = None,
    fit: str | None = None,
    seek: str | None = None,
) -> VideoInputs | WindowedVideo:
    """The CPU stage of any run: :func:`load_video`'s inputs for a video the recipe does not cut
    into windows (every short clip: exactly as before windows existed), else the
    :class:`WindowedVideo` of a long one (a describing task's ``[windows]``: longer than
    ``after_s``; find reads the table too, but scores its own windows in the model stage).
    The video's dialogue is read here once, for every window.

    Cuts are found here, once for the whole file, when the windows snap to them or the task
    describes scenes; on a long file the detector skips non-reference frames (about half the
    decoding, cuts unchanged: :func:`~videovlm.scenes.detect_cuts`).
    """
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    rec = rec.with_overrides(n=n, backend=backend, fit=fit, seek=seek)
    t0 = time.perf_counter()
    info = probe(path)
    timing = {"probe": time.perf_counter() - t0}
    length = window_length(rec.windows, info.duration_s) if tasks.get(rec.task).windowed else None
    if length is None:
        inputs = load_video(path, rec, image_size=image_size, info=info)
        inputs.timing_s = {**timing, **inputs.timing_s}
        return inputs
    t0 = time.perf_counter()
    snap = float(rec.windows.get("snap_s", 0.0))
    cuts = None
    if rec.mode == "scenes" or snap > 0:
        log.info("%s: finding the scene cuts (one small decode of the whole file)",
                 Path(str(path)).name)
        cuts = detect_cuts(info, SceneSettings(**rec.scenes), skip_nonref=True)
        timing["scenes"] = time.perf_counter() - t0
    spans = window_spans(info, length, cuts or (), snap)
    t0 = time.perf_counter()
    dialogue = read_dialogue(path, info, rec)
    timing["dialogue"] = time.perf_counter() - t0
    return WindowedVideo(str(path), info, rec, image_size, spans, cuts, timing, dialogue)
