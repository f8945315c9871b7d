"""The model stage for one video: :class:`ModelRun`, what a task's runner works with.

A run holds one video's prepared frames (:class:`~videovlm.video.VideoInputs`), the loaded
model and the recipe, and gives a runner (:mod:`videovlm.tasks`) the few things it needs: the
recipe's prompts filled in for the model's family (:meth:`ModelRun.fill`), prompts within the
context (:meth:`ModelRun.prompt`, re-planned with fewer frames when the frames do not fit, never
cut), the model's calls, and the finished :class:`~videovlm.result.Result`. Each thing is kept
where it belongs: generation settings are only what the model was given, warnings are said to
the log and kept for the result, and every stage's seconds are measured where that stage runs
(``pack`` for prompts, ``vision`` for encoding frames, ``generate`` for the language model's
calls, ``decode``/``prepare`` added when a re-plan decodes again), never found by subtraction.
Every prompt with frames goes through one path (:meth:`ModelRun.encode`), so the frame cache
serves scenes, timelines and questions alike.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from num2words import num2words

from videovlm.decode import Frame, decode_with_backend
from videovlm.errors import VideoVLMError
from videovlm.model import DEFAULT_MAX_NEW_TOKENS, Ask, Model, Prefix
from videovlm.pack import OverBudget, Prompt, build_prompt, frames_that_fit, timestamp_text
from videovlm.plan import plan
from videovlm.prepare import prepare
from videovlm.result import Result

if TYPE_CHECKING:
    from videovlm.pipelines import Recipe
    from videovlm.video import Group, VideoInputs

log = logging.getLogger("videovlm")

Answers = list[tuple[str, str | None]]
Asker = Callable[[Ask, Mapping[str, Any]], tuple[Answers, float]]
"""Who answers a run's prompts when it is not the run itself: given an :class:`Ask` and its
generation settings, the answers (:meth:`Model.answer_one`'s) and the seconds of generation
they cost. ``batch --batch-size`` passes one that gathers several videos' asks into one
batched call (:mod:`videovlm.batch.together`); its seconds are that call's, shared."""


def generation_settings(recipe: Recipe) -> dict[str, Any]:
    """Every generation parameter a recipe runs with, defaults made explicit (the result
    JSON's ``generation``)."""
    return {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "do_sample": False,
            **dict(recipe.generation)}


class PrefixStore(Protocol):
    """Encoded prefixes kept beyond one run (``serve``'s warm videos), by the prompt head's
    text: for one video's prepared frames, the head (intro, frame labels and image
    placeholders) says which frames are in it, so equal heads are equal prefixes."""

    def get(self, head: str) -> Prefix | None: ...

    def put(self, head: str, prefix: Prefix) -> None: ...


@dataclass(frozen=True)
class Asked:
    """One question of a run: its text, its options (None: open), and the recipe whose
    question prompt and generation settings answer it."""

    question: str
    options: list[str] | None
    recipe: Recipe


class ModelRun:
    """One video through the model stage; a task's runner turns it into a :class:`Result`.

    ``questions`` are the run's questions, each with its own options and recipe (the frames
    are encoded once for all of them). Runners read ``model``, ``inputs``, ``recipe``,
    ``generation`` and ``questions``, and use the methods; they never write the fields.
    ``asker`` answers the run's prompts instead of the model itself (:data:`Asker`).
    ``prefixes`` keeps encoded prefixes across runs (a follow-up question then costs only the
    question); ``streamer`` (transformers' ``put``/``end`` protocol) sees every model call's
    tokens as they are generated, and is never part of the recorded generation settings.
    ``windowed``: the run is one window of a longer video (``inputs.span``), so the task's
    whole-video steps (the summary) are left to its ``finish``, made once every window is done.
    """

    def __init__(self, model: Model, inputs: VideoInputs, recipe: Recipe,
                 questions: Sequence[Asked] = (), *, asker: Asker | None = None,
                 prefixes: PrefixStore | None = None, streamer: Any = None,
                 windowed: bool = False) -> None:
        self.model = model
        self.windowed = windowed
        self.inputs = inputs
        self.recipe = recipe
        self.questions = list(questions)
        self.generation = generation_settings(recipe)
        self.prefixes = prefixes
        self._live = {} if streamer is None else {"streamer": streamer}
        self._warnings: list[str] = []
        self._timing: dict[str, float] = {"pack": 0.0, "generate": 0.0}
        self._used: dict[int, Frame] = {}
        self._prompts: list[Prompt] = []
        self._asker = asker
        cache = model.frame_cache
        self._cache_before = cache.stats.to_dict() if cache else None

    # -- bookkeeping ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the seconds spent inside to ``stage`` of the result's ``timing_s``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._timing[stage] = self._timing.get(stage, 0.0) + time.perf_counter() - start

    def warn(self, message: str) -> None:
        """Say ``message`` in the log (with the video's name) and keep it for the result."""
        log.warning("%s: %s", Path(self.inputs.path).name, message)
        self._warnings.append(message)

    # -- prompts -------------------------------------------------------------------------------

    def fill(self, key: str, n_frames: int, recipe: Recipe | None = None, **values: Any) -> str:
        """The recipe's prompt ``key`` (the model family's own text where the recipe has one),
        its placeholders filled.

        ``{duration}``, ``{start}`` and ``{end}`` read like the frames' own stamps (``MM:SS``);
        ``{duration_hms}`` and ``{frames_in_words}`` are what SmolVLM2's video intro was
        trained on (``0:01:05``, ``fifty``).
        """
        duration = self.inputs.info.duration_s
        return (recipe or self.recipe).prompt(
            key, family=self.model.family, n_frames=n_frames,
            frames_in_words=num2words(n_frames), duration=timestamp_text(duration),
            duration_hms=str(_dt.timedelta(seconds=int(duration))), **values)

    def _intro(self, n_frames: int) -> str | None:
        return self.fill("intro", n_frames) if self.recipe.has_prompt("intro") else None

    def prompt(self, group: Group, task: str, *, max_new_tokens: int | None = None
               ) -> tuple[Prompt, list[Frame]]:
        """The prompt for ``group``'s frames and ``task`` (final text), with room for
        ``max_new_tokens`` (default: the recipe's); re-planned with fewer frames if over budget.
        Returns the frames it holds."""
        max_new = int(max_new_tokens or self.generation["max_new_tokens"])
        frames = [self.inputs.frames[i] for i in group.frames]
        images = [self.inputs.images[i] for i in group.frames]
        try:
            with self.timed("pack"):
                prompt = build_prompt(self.model, frames, images, task,
                                      intro=self._intro(len(frames)), max_new_tokens=max_new)
        except OverBudget as exc:
            prompt, frames = self._replan(group, task, len(frames), max_new, exc)
        self._prompts.append(prompt)
        self._used.update((f.index, f) for f in frames)
        return prompt, frames

    def _replan(self, group: Group, task: str, had: int, max_new: int, exc: Exception
                ) -> tuple[Prompt, list[Frame]]:
        info, s = self.inputs.info, self.inputs.sampling
        with self.timed("pack"):
            k = frames_that_fit(self.model, had, task=task, intro=self._intro(had),
                                max_new_tokens=max_new, duration_s=group.end_s - group.start_s)
        while k >= 1:
            with self.timed("decode"):
                refs = plan(info, k, seek=s["seek"], start_s=group.start_s,
                            end_s=None if group.end_s >= info.duration_s else group.end_s)
                frames, _ = decode_with_backend(info, refs, s["backend"])
            with self.timed("prepare"):
                images = prepare(frames, s["image_size"], s["fit"])
            try:
                with self.timed("pack"):
                    prompt = build_prompt(self.model, frames, images, task,
                                          intro=self._intro(len(frames)), max_new_tokens=max_new)
            except OverBudget:
                k -= 1  # timestamps or the intro cost a token more than counted: one fewer
                continue
            span = ("" if group.start_s == 0 and group.end_s >= info.duration_s else
                    f" for the scene at {group.start_s:.1f}-{group.end_s:.1f} s")
            self.warn(f"{had} frames do not fit the model's context{span} ({exc}); "
                      f"re-planned with {len(frames)} frames")
            return prompt, frames
        raise VideoVLMError(
            f"not even one frame fits the model's context of {self.model.context} tokens with "
            f"max_new_tokens={max_new}: lower max_new_tokens in the recipe"
        )

    # -- the model's calls ---------------------------------------------------------------------

    def generate(self, prompt: Prompt) -> str:
        """The model's answer to one prompt, with the recipe's generation settings (its frames
        from the frame cache where they are there)."""
        prefix = self.encode(prompt)
        return self._answers(Ask(prefix, (prompt.tail,)), self.generation)[0][0]

    def generate_text(self, text: str) -> str:
        """The model's answer to a text-only prompt (a summary), with the recipe's settings."""
        return self._answers(Ask(None, (text,)), self.generation)[0][0]

    def _answers(self, ask: Ask, generation: Mapping[str, Any]) -> Answers:
        """Every model answer of a run comes through here: from the model itself, or from the
        run's asker (answered together with other videos' prompts)."""
        if self._asker is None:
            with self.timed("generate"):
                return self.model.answer_one(ask, **generation, **self._live)
        answers, seconds = self._asker(ask, generation)
        self._timing["generate"] += seconds
        return answers

    def encode(self, prompt: Prompt) -> Prefix:
        """``prompt``'s frames encoded (``vision``: the vision tower, or the frame cache) and
        its head run through the language model once, for answers to continue from; taken
        from ``prefixes`` instead when they hold it."""
        kept = self.prefixes.get(prompt.head) if self.prefixes is not None else None
        if kept is not None:
            return kept
        with self.timed("vision"):
            features = self.model.image_features(prompt.images)
        with self.timed("generate"):
            prefix = self.model.encode_prefix(prompt.head, features)
        if self.prefixes is not None:
            self.prefixes.put(prompt.head, prefix)
        return prefix

    def answer(self, prefix: Prefix, prompt: Prompt, tasks: Sequence[str],
               generation: dict[str, Any], letters: Sequence[str] | None = None
               ) -> list[tuple[str, str | None]]:
        """Answers to ``tasks`` (final question texts) from ``prefix``, each with the letter
        the model scores highest when ``letters`` are given (else None)."""
        tails = tuple(prompt.tail_for(t) for t in tasks)
        return self._answers(Ask(prefix, tails, None if letters is None else tuple(letters)),
                             generation)

    # -- the result ----------------------------------------------------------------------------

    @property
    def frames_used(self) -> int:
        return len(self._used)

    @property
    def timing_s(self) -> dict[str, float]:
        """The seconds this run's own stages took so far (``pack``, ``vision``, ``generate``)."""
        return dict(self._timing)

    def result(self, **fields: Any) -> Result:
        """The run's :class:`Result`: the frames its prompts held, its prompts' token counts,
        its warnings and timings, and the runner's ``fields`` (segments, answers...)."""
        info = self.inputs.info
        frames = sorted(self._used.values(), key=lambda f: f.index)
        sampling = {**self.inputs.sampling,
                    "frames": [{"index": f.index, "time_s": round(f.time_s, 6)} for f in frames]}
        prompt = {"tokens": max(p.tokens for p in self._prompts),
                  "budget": self._prompts[0].budget, "recipe": self.recipe.name}
        if len(self._prompts) > 1:
            prompt.update(calls=len(self._prompts),
                          total_tokens=sum(p.tokens for p in self._prompts))
        timing = dict(self.inputs.timing_s)
        for stage, seconds in self._timing.items():
            timing[stage] = timing.get(stage, 0.0) + seconds
        timing = {k: round(v, 4) for k, v in timing.items()}
        timing["total"] = round(sum(timing.values()), 4)
        cache = None
        if self.model.frame_cache is not None and self._cache_before is not None:
            now = self.model.frame_cache.stats.to_dict()
            cache = {k: now[k] - self._cache_before[k] for k in now}
        return Result(
            video=info.to_dict(),
            sampling=sampling,
            model=self.model.info(),
            prompt=prompt,
            generation=dict(self.generation),
            warnings=list(self._warnings),
            frames=frames,
            timing_s=timing,
            cache=cache,
            mode=self.inputs.mode,
            **fields,
        )
