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
from videovlm.dialogue import Cue, assign_cues, at_times, frame_slices, trim_lines, word_count
from videovlm.errors import VideoVLMError
from videovlm.model import DEFAULT_MAX_NEW_TOKENS, Ask, Model, Prefix, Reply
from videovlm.pack import (
    OverBudget,
    Prompt,
    build_prompt,
    frames_that_fit,
    timestamp_text,
    words_that_fit,
)
from videovlm.plan import plan
from videovlm.prepare import prepare
from videovlm.result import Result

if TYPE_CHECKING:
    from videovlm.pipelines import Recipe
    from videovlm.video import Group, VideoInputs
    from videovlm.windows import OnStart, OnWindow, Span

log = logging.getLogger("videovlm")

Answers = list[Reply]
Asker = Callable[[Ask, Mapping[str, Any]], tuple[Answers, float]]
"""Who answers a run's prompts when it is not the run itself: given an :class:`Ask` and its
generation settings, the answers (:meth:`Model.answer_one`'s) and the seconds of generation
they cost. ``batch --batch-size`` passes one that gathers several videos' asks into one
batched call (:mod:`videovlm.batch.together`); its seconds are that call's, shared."""
Loader = Callable[["Span", int], "VideoInputs"]
"""The CPU stage for one part of a run's video: ``n`` frames inside a span, decoded and
prepared like the run's own (:func:`videovlm.video.load_video` with the run's probe and
sampling settings). Handed to the run by whoever made it (:func:`videovlm.api.run_model`):
the CPU stage's module sits above this one in the import graph."""


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
    subtitles: str | None = None
    """The question's own subtitles (a benchmark's, CinePile's scene subtitles) for a question
    prompt's ``{subtitles}``; None: the video's dialogue at the frames, if any."""


class ModelRun:
    """One video through the model stage; a task's runner turns it into a :class:`Result`.

    ``questions`` are the run's questions, each with its own options and recipe (the frames
    are encoded once for all of them). Runners read ``model``, ``inputs``, ``recipe``,
    ``generation`` and ``questions``, and use the methods; they never write the fields.
    ``asker`` answers the run's prompts instead of the model itself (:data:`Asker`).
    ``prefixes`` keeps encoded prefixes across runs (a follow-up question then costs only the
    question); ``streamer`` (transformers' ``put``/``end`` protocol) sees every model call's
    tokens as they are generated, and is never part of the recorded generation settings.
    ``load`` decodes a part of the video on demand (:meth:`window`); a task that works
    through windows itself (``find``) tells ``on_start`` and ``on_window`` of its progress, as
    :func:`videovlm.windows.drive` does (the command's bar).

    A run keeps its prompts' token counts and the times of the frames they held, not the
    prompts or frames themselves (only those :meth:`prompt` is told to keep, or
    :meth:`keep`), so a run over hundreds of windows holds one batch of windows at a time.
    ``windowed``: the run is one window of a longer video (``inputs.span``), so the task's
    whole-video steps (the summary) are left to its ``finish``, made once every window is done.
    """

    def __init__(self, model: Model, inputs: VideoInputs, recipe: Recipe,
                 questions: Sequence[Asked] = (), *, asker: Asker | None = None,
                 prefixes: PrefixStore | None = None, streamer: Any = None,
                 load: Loader | None = None, windowed: bool = False,
                 on_start: OnStart | None = None, on_window: OnWindow | None = None) -> None:
        self.model = model
        self.on_start, self.on_window = on_start, on_window
        self.windowed = windowed
        self.inputs = inputs
        self.recipe = recipe
        self.questions = list(questions)
        self.generation = generation_settings(recipe)
        self.prefixes = prefixes
        self._live = {} if streamer is None else {"streamer": streamer}
        self._warnings: list[str] = []
        self._timing: dict[str, float] = {"pack": 0.0, "generate": 0.0}
        self._seen: dict[int, float] = {}  # every frame a prompt held: index -> time_s
        self._kept: dict[int, Frame] = {}  # the frames the result carries (reports)
        self._tokens: list[tuple[int, int]] = []  # each prompt's (tokens, budget)
        self._shown: dict[Cue, None] = {}  # cues some prompt showed, in order
        self._trimmed = False
        self._asker = asker
        self._load = load
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

    def prompt(self, group: Group, task: str, *, max_new_tokens: int | None = None,
               inputs: VideoInputs | None = None, keep: bool = True
               ) -> tuple[Prompt, list[Frame]]:
        """The prompt for ``group``'s frames and task (final text), with room for
        ``max_new_tokens`` (default: the recipe's), each frame followed by its dialogue; over
        budget: re-planned with fewer frames, or the dialogue trimmed (the recipe's
        ``[dialogue] over_budget``). Returns the frames it holds. ``group`` indexes ``inputs``
        (default: the run's; a window's from :meth:`window`); ``keep=False`` records the
        frames' times, not their pixels."""
        max_new = int(max_new_tokens or self.generation["max_new_tokens"])
        source = inputs or self.inputs
        frames = [source.frames[i] for i in group.frames]
        images = [source.images[i] for i in group.frames]
        cues = self._cues_for(group, [f.time_s for f in frames], group.planned)
        try:
            with self.timed("pack"):
                prompt = build_prompt(self.model, frames, images, task,
                                      intro=self._intro(len(frames)),
                                      dialogue=self._dialogue(cues), max_new_tokens=max_new)
        except OverBudget as exc:
            trim = self.recipe.dialogue.get("over_budget") == "trim"
            trimmed = None
            if trim and cues is not None and any(cues):
                trimmed = self._trim(group, task, frames, images, cues, max_new, exc)
            if trimmed is not None:
                prompt, cues = trimmed
            else:  # fewer frames: with all their dialogue, or (trim) the frames alone
                prompt, frames, cues = self._replan(group, task, len(frames), max_new, exc,
                                                    with_dialogue=not trim)
        self._tokens.append((prompt.tokens, prompt.budget))
        self._seen.update((f.index, f.time_s) for f in frames)
        self._shown.update(dict.fromkeys(c for frame_cues in cues or [] for c in frame_cues))
        if keep:
            self.keep(frames)
        return prompt, frames

    def keep(self, frames: Sequence[Frame]) -> None:
        """Carry ``frames`` in the result (the HTML report's thumbnails, the contact sheet)."""
        self._kept.update((f.index, f) for f in frames)

    def window(self, span: Span, n: int | None = None) -> VideoInputs:
        """``n`` frames inside ``span`` (default: the run's frame budget) decoded and prepared
        by the selection rule, as one group: a windowed task decodes a window when it gets to
        it, so memory holds the windows at hand, not the video. Its decode and prepare seconds
        count in the run's timing."""
        if self._load is None:
            raise RuntimeError("this run was made without a loader: it cannot decode windows")
        inputs = self._load(span, n or int(self.inputs.sampling["requested"]))
        for stage in ("decode", "prepare"):
            self._timing[stage] = self._timing.get(stage, 0.0) + inputs.timing_s.get(stage, 0.0)
        return inputs

    # -- dialogue ------------------------------------------------------------------------------

    def transcript(self, start_s: float, end_s: float) -> list[Cue] | None:
        """The dialogue said during ``[start_s, end_s)`` (a segment's ``transcript``); None
        when the video has no dialogue source."""
        d = self.inputs.dialogue
        return None if d is None else d.during(start_s, end_s)

    def _cues_for(self, group: Group, times: Sequence[float], planned: int
                  ) -> list[list[Cue]] | None:
        """Per frame (at ``times``, chosen by ``planned`` slices of ``group``), the cues shown
        after it; None when there is no dialogue or the recipe shows none."""
        d = self.inputs.dialogue
        if (d is None or not d.cues or not self.recipe.has_prompt("dialogue")
                or self.recipe.uses("question", "subtitles")):
            return None
        slices = frame_slices(times, group.start_s, group.end_s, planned,
                              self.inputs.sampling.get("seek", "exact"))
        return assign_cues(d.during(group.start_s, group.end_s), slices)

    def subtitles(self, asked: Asked, group: Group) -> str:
        """What a question prompt's ``{subtitles}`` says: the question's own subtitles when it
        has them (CinePile's, verbatim), else the lines of the video's dialogue on screen at
        ``group``'s frames (Video-MME's rule in lmms-eval: :func:`~videovlm.dialogue.at_times`),
        one per line; the recipe's ``prompts.no_subtitles`` (else nothing) when the video has
        no dialogue source. A recipe whose question prompt holds ``{subtitles}`` shows the
        dialogue there only, never also after each frame.

        The lines are those of the planned frames: a prompt re-planned with fewer frames to fit
        keeps them (the warning says it was re-planned)."""
        if asked.subtitles is not None or not asked.recipe.uses("question", "subtitles"):
            return asked.subtitles or ""
        d = self.inputs.dialogue
        if d is None:
            return (asked.recipe.prompt("no_subtitles", family=self.model.family)
                    if asked.recipe.has_prompt("no_subtitles") else "")
        said = at_times(d.cues, [self.inputs.frames[i].time_s for i in group.frames])
        self._shown.update(dict.fromkeys(said))
        return "\n".join(c.text for c in said)

    def _dialogue(self, cues: list[list[Cue]] | None, words: int | None = None
                  ) -> list[str | None] | None:
        """Each frame's dialogue as the recipe writes it (``prompts.dialogue``), cut to
        ``words`` words per frame when given."""
        if cues is None:
            return None
        out: list[str | None] = []
        for frame_cues in cues:
            lines = [c.text for c in frame_cues]
            if words is not None:
                lines = trim_lines(lines, words)
            out.append(self.recipe.prompt(
                "dialogue", family=self.model.family, text="\n".join(lines),
                start=timestamp_text(frame_cues[0].start_s),
                end=timestamp_text(frame_cues[-1].end_s)) if lines else None)
        return out

    def _where(self, group: Group) -> str:
        info = self.inputs.info
        return ("" if group.start_s == 0 and group.end_s >= info.duration_s else
                f" for the scene at {group.start_s:.1f}-{group.end_s:.1f} s")

    def _trim(self, group: Group, task: str, frames: list[Frame], images: list[Any],
              cues: list[list[Cue]], max_new: int, exc: Exception
              ) -> tuple[Prompt, list[list[Cue]]] | None:
        """The frames kept and each one's dialogue cut to the most words per frame that fit;
        None when the frames do not fit even without dialogue."""
        lines = [[c.text for c in frame_cues] for frame_cues in cues]
        intro = self._intro(len(frames))
        with self.timed("pack"):
            words = words_that_fit(self.model, frames, task, intro=intro,
                                   dialogue=lambda w: self._dialogue(cues, w) or [],
                                   most=max(word_count(ln) for ln in lines),
                                   max_new_tokens=max_new)
            if words is None:
                return None
            prompt = build_prompt(self.model, frames, images, task, intro=intro,
                                  dialogue=self._dialogue(cues, words), max_new_tokens=max_new)
        total = sum(word_count(ln) for ln in lines)
        kept = sum(min(words, word_count(ln)) for ln in lines)
        self._trimmed = True
        self.warn(f"the dialogue does not fit the model's context with {len(frames)} "
                  f"frames{self._where(group)} ({exc}); trimmed it to {words} words per frame, "
                  f"{total - kept} of {total} words left out ([dialogue] over_budget = "
                  "\"trim\"; \"fewer_frames\" keeps it whole)")
        shown = [frame_cues[:len(trim_lines(ln, words))]
                 for frame_cues, ln in zip(cues, lines, strict=True)]
        return prompt, shown

    def _replan(self, group: Group, task: str, had: int, max_new: int, exc: Exception, *,
                with_dialogue: bool) -> tuple[Prompt, list[Frame], list[list[Cue]] | None]:
        info, s = self.inputs.info, self.inputs.sampling
        end_s = None if group.end_s >= info.duration_s else group.end_s

        def refs(k: int) -> list[Any]:
            return plan(info, k, seek=s["seek"], start_s=group.start_s, end_s=end_s)

        def layout(k: int) -> tuple[list[float], list[str | None] | None]:
            times = [r.time_s for r in refs(k)]
            cues = self._cues_for(group, times, k) if with_dialogue else None
            return times, self._dialogue(cues)

        with self.timed("pack"):
            k = frames_that_fit(self.model, had, task=task, intro=self._intro(had),
                                max_new_tokens=max_new, layout=layout)
        while k >= 1:
            with self.timed("decode"):
                frames, _ = decode_with_backend(info, refs(k), s["backend"])
            with self.timed("prepare"):
                images = prepare(frames, s["image_size"], s["fit"])
            cues = (self._cues_for(group, [f.time_s for f in frames], k) if with_dialogue
                    else None)
            try:
                with self.timed("pack"):
                    prompt = build_prompt(self.model, frames, images, task,
                                          intro=self._intro(len(frames)),
                                          dialogue=self._dialogue(cues), max_new_tokens=max_new)
            except OverBudget:
                k -= 1  # the intro cost a token more than counted: one fewer
                continue
            said = self.inputs.dialogue is not None and self.inputs.dialogue.during(
                group.start_s, group.end_s) and self.recipe.has_prompt("dialogue")
            if not said:
                how = ""
            elif with_dialogue:
                how = (", the dialogue kept whole ([dialogue] over_budget = \"fewer_frames\"; "
                       "\"trim\" keeps the frames and shortens the dialogue)")
            else:
                how = ", without their dialogue: the frames alone did not fit"
            self.warn(f"{had} frames do not fit the model's context{self._where(group)} "
                      f"({exc}); re-planned with {len(frames)} frames{how}")
            return prompt, frames, cues
        if with_dialogue and self.inputs.dialogue is not None:
            raise VideoVLMError(
                f"not even one frame and the dialogue fit the model's context of "
                f"{self.model.context} tokens with max_new_tokens={max_new}: set [dialogue] "
                "over_budget = \"trim\" in the recipe, or pass --subtitles none")
        raise VideoVLMError(
            f"not even one frame fits the model's context of {self.model.context} tokens with "
            f"max_new_tokens={max_new}: lower max_new_tokens in the recipe"
        )

    # -- the model's calls ---------------------------------------------------------------------

    def generate(self, prompt: Prompt) -> str:
        """The model's answer to one prompt, with the recipe's generation settings (its frames
        from the frame cache where they are there)."""
        prefix = self.encode(prompt)
        return self._answers(Ask(prefix, (prompt.tail,)), self.generation)[0].text

    def generate_text(self, text: str) -> str:
        """The model's answer to a text-only prompt (a summary), with the recipe's settings."""
        return self._answers(Ask(None, (text,)), self.generation)[0].text

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
               ) -> list[Reply]:
        """Answers to ``tasks`` (final question texts) from ``prefix``, each with the letter
        the model scores highest and the letters' probabilities when ``letters`` are given."""
        tails = tuple(prompt.tail_for(t) for t in tasks)
        return self._answers(Ask(prefix, tails, None if letters is None else tuple(letters)),
                             generation)

    def answer_together(self, asks: Sequence[Ask], per_call: int) -> list[Answers]:
        """Several prompts with their own prefixes (a batch of windows) answered with the
        recipe's settings, ``per_call`` rows per batched generation
        (:meth:`Model.answer_together`: each answer is the one it gets alone). Through the
        run's asker one ask at a time, which batches them with other videos' instead; one at a
        time also when a streamer watches (it follows one sequence)."""
        if self._asker is not None or self._live:
            return [self._answers(ask, self.generation) for ask in asks]
        with self.timed("generate"):
            return self.model.answer_together(asks, batch_size=per_call, **self.generation)

    # -- the result ----------------------------------------------------------------------------

    @property
    def frames_used(self) -> int:
        return len(self._seen)

    def _dialogue_record(self) -> dict[str, Any] | None:
        """The result's ``dialogue``: where it came from, how many cues, how many the prompts
        showed, and whether they were trimmed."""
        d = self.inputs.dialogue
        if d is None:
            return None
        if d.cues and not self.recipe.has_prompt("dialogue"):
            self.warn(f"recipe {self.recipe.name!r} has no prompts.dialogue: the subtitles are "
                      "in the transcripts but not in the prompt; add one (with {text})")
        return {**d.source, "cues": len(d.cues), "in_prompt": len(self._shown),
                "over_budget": self.recipe.dialogue.get("over_budget"),
                "trimmed": self._trimmed}

    @property
    def timing_s(self) -> dict[str, float]:
        """The seconds this run's own stages took so far (``pack``, ``vision``, ``generate``)."""
        return dict(self._timing)

    def result(self, **fields: Any) -> Result:
        """The run's :class:`Result`: the frames its prompts held, its prompts' token counts,
        its warnings and timings, and the runner's ``fields`` (segments, answers...)."""
        info = self.inputs.info
        sampling = {**self.inputs.sampling,
                    "frames": [{"index": i, "time_s": round(t, 6)}
                               for i, t in sorted(self._seen.items())]}
        prompt = {"tokens": max(t for t, _ in self._tokens),
                  "budget": self._tokens[0][1], "recipe": self.recipe.name}
        if len(self._tokens) > 1:
            prompt.update(calls=len(self._tokens),
                          total_tokens=sum(t for t, _ in self._tokens))
        timing = dict(self.inputs.timing_s)
        for stage, seconds in self._timing.items():
            timing[stage] = timing.get(stage, 0.0) + seconds
        timing = {k: round(v, 4) for k, v in timing.items()}
        timing["total"] = round(sum(timing.values()), 4)
        cache = None
        if self.model.frame_cache is not None and self._cache_before is not None:
            now = self.model.frame_cache.stats.to_dict()
            cache = {k: now[k] - self._cache_before[k] for k in now}
        dialogue = self._dialogue_record()  # (it may warn: before the warnings are taken)
        return Result(
            video=info.to_dict(),
            sampling=sampling,
            model=self.model.info(),
            prompt=prompt,
            generation=dict(self.generation),
            warnings=list(self._warnings),
            frames=sorted(self._kept.values(), key=lambda f: f.index),
            timing_s=timing,
            cache=cache,
            mode=self.inputs.mode,
            dialogue=dialogue,
            **fields,
        )
