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

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videovlm.decode import Frame, decode_with_backend
from videovlm.dialogue import Dialogue, DialogueSettings, find_dialogue
from videovlm.pipelines import Recipe, load_recipe
from videovlm.plan import FrameRef, plan
from videovlm.prepare import prepare
from videovlm.probe import VideoInfo, probe
from videovlm.scenes import allocate_frames, detect_scenes
from videovlm.speech import speech_dialogue
from videovlm.windows import Span


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
    dialogue: Dialogue | None = None  # subtitles on the frames' clock (None: none found / off)

    def whole(self) -> Group:
        """Every frame as one group: a timeline or questions over the whole video (also when
        the frames were chosen per scene)."""
        if len(self.groups) == 1 and len(self.groups[0].frames) == len(self.frames):
            return self.groups[0]
        return Group(0.0, self.info.duration_s, list(range(len(self.frames))))


def _refs_for(info: VideoInfo, mode: str, n: int, seek: str, scene_settings: dict[str, Any],
              span: Span | None = None
              ) -> tuple[list[FrameRef], list[tuple[float, float, list[int], int]]]:
    """The planned frames and, per group, its time span, frame indices and the count the
    selection rule was asked for (inside ``span`` when one is given)."""
    if mode == "windows" and span is None:
        return [], [(0.0, info.duration_s, [], 0)]  # each window is planned when it is decoded
    if mode != "scenes":
        start, end = span or (0.0, info.duration_s)
        refs = plan(info, n, seek=seek, start_s=start,
                    end_s=None if end >= info.duration_s else end)
        return refs, [(start, end, [r.index for r in refs], n)]
    if span is not None:
        raise ValueError("scene mode inside a span is not supported yet")
    scenes = detect_scenes(info, **{**scene_settings, "max_scenes": n})
    counts = allocate_frames(scenes, n)
    by_index: dict[int, FrameRef] = {}
    spans = []
    for (start, end), k in zip(scenes, counts, strict=True):
        refs = plan(info, k, seek=seek, start_s=start, end_s=end)
        by_index.update((r.index, r) for r in refs)
        spans.append((start, end, [r.index for r in refs], k))
    return sorted(by_index.values(), key=lambda r: r.index), spans


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
    dialogue: Dialogue | None = None,
) -> VideoInputs:
    """Probe, find scenes (scene mode), plan, decode and prepare one video for ``recipe``.

    ``recipe`` is a :class:`~videovlm.pipelines.Recipe` or a built-in name / TOML path; ``n``,
    ``backend``, ``fit`` and ``seek`` override its ``[sampling]``; ``image_size`` is the model's
    (``Model.image_size``). How frames are grouped is the recipe's task's mode.

    ``span`` (``(start_s, end_s)``, e.g. one of :func:`~videovlm.windows.window_spans`) plans
    ``n`` frames inside that part of the video only, so a long video is decoded and described
    one window at a time; ``info`` is the video's :func:`~videovlm.probe.probe`, passed so the
    timeline of a long file is read once, not once per window.

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
        settings = DialogueSettings.from_recipe(rec.dialogue)
        source = speech_dialogue if settings.transcribe else find_dialogue
        dialogue = source(path, info, settings)
        timing["dialogue"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    refs, spans = _refs_for(info, mode, n, seek, dict(rec.scenes), span)
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
        sampling={"backend": used_backend, "requested": n, "seek": seek,
                  "image_size": image_size, "fit": fit},
        timing_s=timing,
        dialogue=dialogue,
    )
