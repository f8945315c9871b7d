"""describe / ask: the two stages of a run, and the calls people make.

A run is split where the hardware splits: :func:`load_video` is the CPU stage (probe, scenes,
plan, decode, prepare) and returns a picklable :class:`VideoInputs` that a worker process or a
Ray task can hand over; :func:`run_model` is the model stage (pack, generate, parse) and needs
only the loaded :class:`~videovlm.model.Model`. :func:`describe`, :func:`ask` and
:func:`run_recipe` chain the two for one video; the batch engines call them separately.

Prompts, sampling and generation settings come from a recipe (``pipelines/*.toml``), never from
this module, so a user changes what is asked by editing a recipe, not code.

A prompt that does not fit the model's context is never cut: the frames are re-planned with the
selection rule for the largest count that fits, decoded again, and a warning says so (in the
log and in ``Result.warnings``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from videovlm.decode import Frame, decode_with_backend
from videovlm.errors import VideoVLMError
from videovlm.plan import FrameRef, plan
from videovlm.probe import VideoInfo, probe
from videovlm.result import Answer, Result, Segment

if TYPE_CHECKING:
    from videovlm.model import Model
    from videovlm.pack import Prompt
    from videovlm.pipelines import Recipe

log = logging.getLogger("videovlm")

MODES = ("scenes", "timeline")
_MODE_RECIPE = {"scenes": "describe", "timeline": "timeline"}
_DEFAULT_MAX_NEW_TOKENS = 512


@dataclass
class Group:
    """Frames described together: the whole video (timeline, questions) or one scene."""

    start_s: float
    end_s: float
    frames: list[int]  # positions in VideoInputs.frames / .images


@dataclass
class VideoInputs:
    """The CPU stage's output for one video: everything the model stage needs, nothing heavy.

    Picklable (numpy arrays and plain data, no model or file handles) so decoding can run in
    another process or on another machine than the model.
    """

    path: str
    info: VideoInfo
    mode: str  # "scenes" | "timeline" | "ask"
    frames: list[Frame]  # decoded, upright, at decoded resolution (reports, re-planning)
    images: list[np.ndarray]  # prepared for the model, same order as frames
    groups: list[Group]
    sampling: dict[str, Any]
    timing_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def whole(self) -> Group:
        """Every frame as one group: a timeline or questions over the whole video (also when
        the frames were chosen per scene)."""
        return Group(0.0, self.info.duration_s, list(range(len(self.frames))))


def _recipe(recipe: Recipe | str) -> Recipe:
    from videovlm.pipelines import load_recipe

    return load_recipe(recipe) if isinstance(recipe, str) else recipe


def _refs_for(info: VideoInfo, mode: str, n: int, seek: str, scene_settings: dict[str, Any]
              ) -> tuple[list[FrameRef], list[tuple[float, float, list[int]]]]:
    """The planned frames and, per group, its time span and frame indices."""
    if mode != "scenes":
        refs = plan(info, n, seek=seek)
        return refs, [(0.0, info.duration_s, [r.index for r in refs])]
    from videovlm.scenes import allocate_frames, detect_scenes

    scenes = detect_scenes(info, **{**scene_settings, "max_scenes": n})
    counts = allocate_frames(scenes, n)
    by_index: dict[int, FrameRef] = {}
    spans = []
    for (start, end), k in zip(scenes, counts, strict=True):
        refs = plan(info, k, seek=seek, start_s=start, end_s=end)
        by_index.update((r.index, r) for r in refs)
        spans.append((start, end, [r.index for r in refs]))
    return sorted(by_index.values(), key=lambda r: r.index), spans


def load_video(
    path: str | os.PathLike[str],
    recipe: Recipe | str,
    *,
    n: int | None = None,
    image_size: int = 384,
    backend: str | None = None,
    mode: str | None = None,
    fit: str | None = None,
    seek: str | None = None,
) -> VideoInputs:
    """The CPU stage: probe, find scenes (scene mode), plan, decode and prepare one video.

    ``n``, ``backend``, ``fit`` and ``seek`` override the recipe's ``[sampling]``; ``mode``
    defaults to ``scenes`` for the ``describe`` task, ``timeline`` for ``timeline`` and ``ask``
    for question tasks. ``image_size`` is the model's (``Model.image_size``).
    """
    from videovlm.prepare import prepare

    rec = _recipe(recipe).with_overrides(n=n, backend=backend, fit=fit, seek=seek)
    n, backend = rec.sampling["n"], rec.sampling["backend"]
    fit, seek = rec.sampling["fit"], rec.sampling["seek"]
    mode = mode or {"describe": "scenes", "timeline": "timeline"}.get(rec.task, "ask")
    if mode not in (*MODES, "ask"):
        raise VideoVLMError(f"unknown mode {mode!r}: use scenes or timeline")
    if mode == "scenes" and rec.task != "describe":
        raise VideoVLMError(f"scene mode needs a describe recipe; {rec.name!r} is {rec.task!r}")

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    info = probe(path)
    timing["probe"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    refs, spans = _refs_for(info, mode, n, seek, dict(rec.scenes))
    if mode == "scenes":
        timing["scenes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    frames, used_backend = decode_with_backend(info, refs, backend)
    timing["decode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    images = prepare(frames, image_size, fit)  # type: ignore[arg-type]
    timing["prepare"] = time.perf_counter() - t0

    pos = {f.index: i for i, f in enumerate(frames)}
    groups = [Group(s, e, [pos[i] for i in idx]) for s, e, idx in spans]
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
    )


# --- the model stage -------------------------------------------------------------------------


def _generation(recipe: Recipe) -> dict[str, Any]:
    """Every generation parameter the run uses (defaults made explicit, for the result JSON)."""
    return {"max_new_tokens": _DEFAULT_MAX_NEW_TOKENS, "do_sample": False,
            **dict(recipe.generation)}


class _Stage:
    """The model stage's working state for one video: frames actually used, warnings, timing."""

    def __init__(self, model: Model, inputs: VideoInputs, recipe: Recipe) -> None:
        self.model = model
        self.inputs = inputs
        self.recipe = recipe
        self.generation = _generation(recipe)
        self.used: dict[int, Frame] = {}
        self.prompts: list[Prompt] = []
        self.warnings: list[str] = list(inputs.warnings)
        self.extra_decode = 0.0

    def fill(self, key: str, n_frames: int, **values: Any) -> str:
        """The recipe's prompt ``key`` with its placeholders filled.

        ``{duration}``, ``{start}`` and ``{end}`` read like the frames' own stamps (``MM:SS``),
        so the model sees one time format throughout.
        """
        from videovlm.pack import timestamp_text

        return self.recipe.prompt(key, n_frames=n_frames,
                                  duration=timestamp_text(self.inputs.info.duration_s), **values)

    def intro(self, n_frames: int) -> str | None:
        return self.fill("intro", n_frames) if self.recipe.prompts.get("intro") else None

    def prompt(self, group: Group, task: str) -> tuple[Prompt, list[Frame]]:
        """The prompt for ``group`` with ``task``; re-planned with fewer frames if over budget."""
        from videovlm.pack import OverBudget, build_prompt

        frames = [self.inputs.frames[i] for i in group.frames]
        images = [self.inputs.images[i] for i in group.frames]
        max_new = int(self.generation["max_new_tokens"])
        try:
            prompt = build_prompt(self.model, frames, images, task,
                                  intro=self.intro(len(frames)), max_new_tokens=max_new)
        except OverBudget as exc:
            prompt, frames = self._replan(group, task, len(frames), exc)
        self.prompts.append(prompt)
        self.used.update((f.index, f) for f in frames)
        return prompt, frames

    def _replan(self, group: Group, task: str, had: int, exc: Exception
                ) -> tuple[Prompt, list[Frame]]:
        from videovlm.pack import OverBudget, build_prompt, frames_that_fit
        from videovlm.prepare import prepare

        info, s = self.inputs.info, self.inputs.sampling
        max_new = int(self.generation["max_new_tokens"])
        k = frames_that_fit(self.model, had, task=task, intro=self.intro(had),
                            max_new_tokens=max_new, duration_s=group.end_s - group.start_s)
        while k >= 1:
            t0 = time.perf_counter()
            refs = plan(info, k, seek=s["seek"], start_s=group.start_s,
                        end_s=None if group.end_s >= info.duration_s else group.end_s)
            frames, _ = decode_with_backend(info, refs, s["backend"])
            images = prepare(frames, s["image_size"], s["fit"])
            self.extra_decode += time.perf_counter() - t0
            try:
                prompt = build_prompt(self.model, frames, images, task,
                                      intro=self.intro(len(frames)), max_new_tokens=max_new)
            except OverBudget:
                k -= 1  # timestamps or the intro cost a token more than counted: one fewer
                continue
            span = ("" if group.start_s == 0 and group.end_s >= info.duration_s else
                    f" for the scene at {group.start_s:.1f}-{group.end_s:.1f} s")
            msg = (f"{had} frames do not fit the model's context{span} ({exc}); "
                   f"re-planned with {len(frames)} frames")
            log.warning("%s: %s", Path(self.inputs.path).name, msg)
            self.warnings.append(msg)
            return prompt, frames
        raise VideoVLMError(
            f"not even one frame fits the model's context of {self.model.context} tokens with "
            f"max_new_tokens={max_new}: lower max_new_tokens in the recipe"
        )

    def generate(self, prompt: Prompt) -> str:
        return self.model.generate(prompt, **self.generation)

    def result(self, **fields: Any) -> Result:
        info = self.inputs.info
        frames = sorted(self.used.values(), key=lambda f: f.index)
        sampling = {**self.inputs.sampling,
                    "frames": [{"index": f.index, "time_s": round(f.time_s, 6)} for f in frames]}
        prompt = {"tokens": max(p.tokens for p in self.prompts),
                  "budget": self.prompts[0].budget, "recipe": self.recipe.name}
        if len(self.prompts) > 1:
            prompt.update(calls=len(self.prompts), total_tokens=sum(p.tokens for p in self.prompts))
        return Result(
            video=info.to_dict(),
            sampling=sampling,
            model=self.model.info(),
            prompt=prompt,
            generation=dict(self.generation),
            warnings=self.warnings,
            frames=frames,
            **fields,
        )


def _frames_in(frames: Sequence[Frame], start: float, end: float, last: bool) -> list[int]:
    return [f.index for f in frames if start <= f.time_s < end or (last and f.time_s == end)]


def _run_timeline(stage: _Stage) -> Result:
    rec, info = stage.recipe, stage.inputs.info
    group = stage.inputs.whole()
    prompt, frames = stage.prompt(group, stage.fill("task", len(group.frames)))
    text = stage.generate(prompt)
    segments, parsed = _parse(text, info.duration_s)
    for i, seg in enumerate(segments):
        seg.frames = _frames_in(frames, seg.start_s, seg.end_s, i == len(segments) - 1)
    # from the timeline's text, not the frames: a text-only call, no second pass over the images
    summary = _summary(stage, segments) if "summary" in rec.prompts else None
    if not parsed:
        msg = "the model's timeline had no usable times: one segment holds its whole text"
        log.warning("%s: %s", Path(stage.inputs.path).name, msg)
        stage.warnings.append(msg)
    return stage.result(segments=segments, segments_parsed=parsed, summary=summary,
                        mode="timeline")


def _parse(text: str, duration_s: float) -> tuple[list[Segment], bool]:
    from videovlm.text import parse_segments

    return parse_segments(text, duration_s)


def _summary(stage: _Stage, segments: Sequence[Segment]) -> str:
    from videovlm.pack import timestamp_text

    lines = "\n".join(f"{timestamp_text(s.start_s)}-{timestamp_text(s.end_s)}: {s.text}"
                      for s in segments)
    text = stage.fill("summary", len(stage.used), descriptions=lines)
    return stage.model.generate_text(text, **stage.generation)


def _run_scenes(stage: _Stage) -> Result:
    from videovlm.pack import timestamp_text

    rec = stage.recipe
    segments = []
    for group in stage.inputs.groups:
        task = stage.fill("scene", len(group.frames), start=timestamp_text(group.start_s),
                          end=timestamp_text(group.end_s))
        prompt, frames = stage.prompt(group, task)
        text = stage.generate(prompt).strip()
        segments.append(Segment(group.start_s, group.end_s, text, [f.index for f in frames]))
    summary = _summary(stage, segments) if "summary" in rec.prompts else None
    return stage.result(segments=segments, summary=summary, mode="scenes")


def _check_user_text(model: Model, texts: Sequence[str]) -> None:
    """Refuse questions or options that hold the model's control tokens (``<image>``,
    ``<end_of_utterance>``...): they would be read as markup, not as words."""
    special = [t for t in model.tokenizer.all_special_tokens if len(t) > 2]
    for text in texts:
        hit = next((t for t in special if t in text), None)
        if hit:
            raise VideoVLMError(f"{text!r} contains {hit}, one of the model's control tokens: "
                                "reword it without that text")


def option_texts(choices: Sequence[str]) -> list[str]:
    """Option texts without labels: ``["A. red", "B) blue"]`` and ``["red", "blue"]`` agree.

    Users paste options with or without their letters; the letters are ours to assign (A, B,
    ...), so labels that match their position are removed rather than shown twice.
    """
    import re

    from videovlm.text import LETTERS, choice_letters

    if len(choices) > len(LETTERS):
        raise VideoVLMError(f"{len(choices)} choices given; at most {len(LETTERS)} (A-Z) are "
                            "supported")
    letters = choice_letters(choices)
    pats = [re.compile(rf"^\s*(?:\({ltr}\)|{ltr}[.):])\s+") for ltr in letters]
    if choices and all(p.match(c) for p, c in zip(pats, choices, strict=True)):
        return [p.sub("", c, count=1).strip() for p, c in zip(pats, choices, strict=True)]
    return [c.strip() for c in choices]


def _run_ask(stage: _Stage, questions: Sequence[str],
             choices: Sequence[Sequence[str] | None]) -> Result:
    """Every question continues from one encoded prefix (the intro and the frames), each with
    its own options: open questions are answered together, multiple-choice ones together per
    option count (the fallback letter must be one of theirs)."""
    from videovlm.text import choice_letters, extract_choice

    options = [option_texts(c) if c else None for c in choices]
    _check_user_text(stage.model, [*questions, *(o for opts in options for o in opts or [])])
    group = stage.inputs.whole()
    n_frames = len(group.frames)

    def task(question: str, opts: list[str] | None) -> str:
        shown = "\n".join(f"{ltr}. {opt}" for ltr, opt
                          in zip(choice_letters(opts or []), opts or [], strict=True))
        return stage.fill("question", n_frames, question=question, options=shown)

    tasks = [task(q, o) for q, o in zip(questions, options, strict=True)]
    # the longest question (in tokens) decides the budget: every question reuses this prefix
    tokenizer = stage.model.tokenizer
    prefix, _ = stage.prompt(group, max(tasks, key=lambda t: len(
        tokenizer(t, add_special_tokens=False)["input_ids"])))
    groups: dict[int, list[int]] = {}  # option count (0: open) -> positions
    for i, opts in enumerate(options):
        groups.setdefault(len(opts or []), []).append(i)
    texts: list[str] = [""] * len(tasks)
    picks: list[str | None] = [None] * len(tasks)
    fallback = False
    for count, positions in groups.items():
        batch = [tasks[i] for i in positions]
        if not count:
            for i, text in zip(positions, stage.model.answer(prefix, batch, **stage.generation),
                               strict=True):
                texts[i] = text
            continue
        # Each answer comes with the letter the model scores highest at its first token, from
        # the same pass over the frames. It is used when the text commits to no letter (small
        # models ramble), so `choice` is always valid: what multiple-choice benchmarks score.
        letters = choice_letters(options[positions[0]] or [])
        chosen = stage.model.choose(prefix, batch, letters, **stage.generation)
        for i, (text, best) in zip(positions, chosen, strict=True):
            texts[i] = text
            picks[i] = extract_choice(text, options[i] or [])
            if picks[i] is None:
                picks[i] = best
                fallback = True
    if fallback:  # recorded after generating: generation parameters, not model arguments
        stage.generation["choice_fallback"] = (
            "letter logits (the option letter scored highest at the answer's first token)")
    answers = [Answer(question=q, answer=t, choices=o, choice=p)
               for q, t, o, p in zip(questions, texts, options, picks, strict=True)]
    return stage.result(answers=answers, mode="ask")


def run_model(
    model: Model,
    inputs: VideoInputs,
    recipe: Recipe | str,
    *,
    questions: Sequence[str] | None = None,
    choices: Sequence[str] | None = None,
    question_choices: Sequence[Sequence[str] | None] | None = None,
) -> Result:
    """The model stage: prompts within the budget, generation, parsing, one :class:`Result`.

    ``choices`` are the options of every question; ``question_choices`` gives each question
    its own (None: an open question), as benchmarks do. Either way the frames are encoded once.
    Timing merges the CPU stage's (``probe``, ``decode``, ``prepare``) with ``generate``;
    ``total`` is their sum, so it is the video's cost even when the stages ran apart.
    """
    rec = _recipe(recipe)
    if inputs.images and inputs.images[0].shape[0] != model.image_size:
        raise VideoVLMError(
            f"frames were prepared at {inputs.images[0].shape[0]} px but {model.id} takes "
            f"{model.image_size} px: call load_video with image_size=model.image_size"
        )
    stage = _Stage(model, inputs, rec)
    t0 = time.perf_counter()
    if questions:
        if question_choices is None:
            question_choices = [choices] * len(questions)
        elif len(question_choices) != len(questions):
            raise ValueError("question_choices needs one entry per question")
        result = _run_ask(stage, questions, question_choices)
    elif rec.task in ("qa", "mcq"):
        raise VideoVLMError(f"recipe {rec.name!r} asks questions: give at least one with -q")
    elif inputs.mode == "scenes":
        result = _run_scenes(stage)
    else:
        result = _run_timeline(stage)
    generate_s = time.perf_counter() - t0 - stage.extra_decode
    timing = {k: round(v, 4) for k, v in inputs.timing_s.items()}
    timing["decode"] = round(timing.get("decode", 0.0) + stage.extra_decode, 4)
    timing["generate"] = round(generate_s, 4)
    timing["total"] = round(sum(v for k, v in timing.items()), 4)
    result.timing_s = timing
    return result


# --- the calls people make -------------------------------------------------------------------


def _model(model: Model | str | None, device: str | None, dtype: str | None) -> Model:
    from videovlm.model import Model

    if isinstance(model, Model):
        return model
    return Model.load(model, device=device, dtype=dtype)


def run_recipe(
    recipe: Recipe | str,
    path: str | os.PathLike[str],
    *,
    model: Model | str | None = None,
    questions: Sequence[str] | None = None,
    choices: Sequence[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    **overrides: Any,
) -> Result:
    """Run any recipe on one video; ``overrides`` are :func:`load_video`'s keywords (n, mode...).

    Pass a loaded :class:`~videovlm.model.Model` to reuse it across calls; a name or path loads
    one (and fails with one clear line when it cannot be had, before any decoding).
    """
    rec = _recipe(recipe)
    m = _model(model, device, dtype)
    inputs = load_video(path, rec, image_size=m.image_size, **overrides)
    return run_model(m, inputs, rec, questions=questions, choices=choices)


def describe(
    path: str | os.PathLike[str],
    *,
    model: Model | str | None = None,
    mode: str = "scenes",
    n: int | None = None,
    recipe: Recipe | str | None = None,
    backend: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Result:
    """Timestamped descriptions of one video: per scene (default) or one timeline prompt.

    The recipe defaults to ``describe`` for scenes and ``timeline`` for timeline mode; ``n`` is
    the frame budget for the whole video.
    """
    if mode not in MODES:
        raise VideoVLMError(f"unknown mode {mode!r}: use scenes or timeline")
    return run_recipe(recipe or _MODE_RECIPE[mode], path, model=model, device=device,
                      dtype=dtype, n=n, backend=backend, mode=mode)


def ask(
    path: str | os.PathLike[str],
    questions: str | Sequence[str],
    *,
    choices: Sequence[str] | None = None,
    model: Model | str | None = None,
    n: int | None = None,
    recipe: Recipe | str | None = None,
    backend: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Result:
    """Answer questions about one video, encoding its frames once for all of them.

    With ``choices`` every question is multiple choice: the options are shown as ``A. text``
    lines and each answer's ``choice`` is a valid letter.
    """
    qs = [questions] if isinstance(questions, str) else list(questions)
    if not qs or not all(q.strip() for q in qs):
        raise VideoVLMError("give at least one non-empty question (-q)")
    if choices is not None and len(choices) < 2:
        raise VideoVLMError("multiple choice needs at least two --choices")
    return run_recipe(recipe or ("mcq" if choices else "qa"), path, model=model, questions=qs,
                      choices=choices, device=device, dtype=dtype, n=n, backend=backend)
