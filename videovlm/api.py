"""describe / ask / run_recipe: the calls people make, and the two stages batch engines call.

A run is split where the hardware splits: :func:`load_video` is the CPU stage (probe, scenes,
plan, decode, prepare; :mod:`videovlm.video`) and returns a picklable :class:`VideoInputs` that
a worker process or a Ray task can hand over; :func:`run_model` is the model stage and needs
only the loaded :class:`~videovlm.model.Model`: it looks the recipe's task up in
:mod:`videovlm.tasks` and runs its runner over one :class:`~videovlm.run.ModelRun`.
:func:`describe`, :func:`ask` and :func:`run_recipe` chain the two for one video.

Prompts, sampling and generation settings come from a recipe (``pipelines/*.toml``), never from
this module, so a user changes what is asked by editing a recipe, not code.

A prompt that does not fit the model's context is never cut: the frames are re-planned with the
selection rule for the largest count that fits, decoded again, and a warning says so (in the
log and in ``Result.warnings``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from videovlm import tasks
from videovlm.errors import VideoVLMError
from videovlm.model import Model
from videovlm.pipelines import Recipe, load_recipe
from videovlm.result import Result
from videovlm.run import Asked, Asker, ModelRun, PrefixStore
from videovlm.text import option_texts
from videovlm.video import VideoInputs, load_video
from videovlm.windows import Span

__all__ = ["VideoInputs", "ask", "describe", "find", "load_video", "option_texts", "run_model",
           "run_recipe"]


def _recipe(recipe: Recipe | str) -> Recipe:
    return load_recipe(recipe) if isinstance(recipe, str) else recipe


def run_model(
    model: Model,
    inputs: VideoInputs,
    recipe: Recipe | str,
    *,
    questions: Sequence[str] | None = None,
    choices: Sequence[str] | None = None,
    question_choices: Sequence[Sequence[str] | None] | None = None,
    choice_recipe: Recipe | str | None = None,
    asker: Asker | None = None,
    prefixes: PrefixStore | None = None,
    streamer: Any = None,
) -> Result:
    """The model stage: the recipe's task run over one video's prepared frames.

    ``choices`` are the options of every question; ``question_choices`` gives each question
    its own (None: an open question), as benchmarks and questions files do. Questions with
    options are asked with ``choice_recipe``'s question prompt and generation settings
    (default: ``recipe``). However they mix, the frames are encoded once. Timing merges the CPU
    stage's (``probe``, ``decode``, ``prepare``) with the model stage's (``pack``,
    ``generate``); ``total`` is their sum, so it is the video's cost even when the stages ran
    apart. ``asker`` answers the run's prompts instead of the model itself (batched with other
    videos': :mod:`videovlm.batch.together`); ``prefixes`` and ``streamer`` are
    :class:`~videovlm.run.ModelRun`'s (``serve`` keeps a video's encoded prefix warm and streams
    the tokens).
    """
    rec = _recipe(recipe)
    task = tasks.get(rec.task)
    if inputs.images and inputs.images[0].shape[0] != model.image_size:
        raise VideoVLMError(
            f"frames were prepared at {inputs.images[0].shape[0]} px but {model.id} takes "
            f"{model.image_size} px: call load_video with image_size=model.image_size"
        )
    tasks.check_takes_questions(rec.name, rec.task, questions or [])
    if question_choices is None:
        question_choices = [choices] * len(questions or [])
    elif len(question_choices) != len(questions or []):
        raise ValueError("question_choices needs one entry per question")
    with_choices = _recipe(choice_recipe) if choice_recipe is not None else rec
    asked = [Asked(q, option_texts(c) if c else None, with_choices if c else rec)
             for q, c in zip(questions or [], question_choices, strict=True)]
    s = inputs.sampling

    # a window's recipe: the video's dialogue was read with the run's frames (none found:
    # no window looks again)
    windows_rec = rec if inputs.dialogue is not None else rec.with_overrides(subtitles="none")

    def load(span: Span, n: int) -> VideoInputs:  # a window, decoded like the run's frames
        return load_video(inputs.path, windows_rec, n=n, image_size=model.image_size,
                          backend=s["backend"], fit=s["fit"], seek=s["seek"], info=inputs.info,
                          span=span, dialogue=inputs.dialogue)

    return task.runner(ModelRun(model, inputs, rec, asked, asker=asker, prefixes=prefixes,
                                streamer=streamer, load=load))


def _model(model: Model | str | None, device: str | None, dtype: str | None) -> Model:
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
    """Run any recipe on one video; ``overrides`` are :func:`load_video`'s keywords (n,
    backend...).

    Pass a loaded :class:`~videovlm.model.Model` to reuse it across calls; a name or path loads
    one (and fails with one clear line when it cannot be had, before any decoding).
    """
    rec = _recipe(recipe)
    m = _model(model, device, dtype)
    inputs = load_video(path, rec, image_size=m.image_size, **overrides)
    return run_model(m, inputs, rec, questions=questions, choices=choices)


def describe_recipe(mode: str | None, recipe: Recipe | str | None) -> Recipe:
    """The recipe ``describe`` runs: ``recipe``, or the default one of the describing task
    with ``mode``; a recipe that does not describe, or whose mode is not ``mode``, is one
    line."""
    task = tasks.for_mode(mode) if mode else None
    rec = _recipe(recipe or (task or tasks.get(tasks.DEFAULT_TASK)).recipe)
    own = tasks.get(rec.task)
    _refuse_find(rec)
    if not own.describes:
        raise VideoVLMError(f"recipe {rec.name!r} is a {rec.task!r} recipe: run it with "
                            "`videovlm ask` or `videovlm run`")
    if task is not None and own is not task:
        raise VideoVLMError(f"recipe {rec.name!r} runs in {own.mode} mode, not {mode}: drop "
                            f"--mode, or use a {task.name} recipe")
    return rec


def describe(
    path: str | os.PathLike[str],
    *,
    model: Model | str | None = None,
    mode: str | None = None,
    n: int | None = None,
    recipe: Recipe | str | None = None,
    backend: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    subtitles: str | None = None,
    subtitle_lang: str | None = None,
    transcribe: bool | None = None,
    asr_model: str | None = None,
) -> Result:
    """Timestamped descriptions of one video: per scene (default) or one timeline prompt.

    ``mode`` picks the describing task (:data:`videovlm.tasks.DESCRIBE_MODES`); the recipe
    defaults to that task's. ``n`` is the frame budget for the whole video. ``subtitles``
    (``auto``, ``none`` or a file) and ``subtitle_lang`` override the recipe's ``[dialogue]``;
    ``transcribe`` takes the dialogue from speech recognition instead (``asr_model``: a
    Whisper ``ID|PATH``).
    """
    rec = describe_recipe(mode, recipe).with_overrides(
        subtitles=subtitles, subtitle_lang=subtitle_lang, transcribe=transcribe,
        asr_model=asr_model)
    return run_recipe(rec, path, model=model, device=device, dtype=dtype, n=n, backend=backend)


def ask_recipe(choices: Sequence[str] | None, recipe: Recipe | str | None) -> Recipe:
    """The recipe ``ask`` runs: ``recipe``, or the question task's default (multiple choice
    with ``choices``)."""
    rec = _recipe(recipe or tasks.for_questions(bool(choices)).recipe)
    _refuse_find(rec)
    return rec


def _refuse_find(rec: Recipe) -> None:
    """A find recipe given to ``describe`` or ``ask``: one line naming the command for it."""
    if rec.task == tasks.FIND_TASK:
        raise VideoVLMError(f"recipe {rec.name!r} is a {rec.task!r} recipe: run it with "
                            f"`videovlm {tasks.FIND_TASK} VIDEO QUERY` or `videovlm run`")


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
    subtitles: str | None = None,
    subtitle_lang: str | None = None,
    transcribe: bool | None = None,
    asr_model: str | None = None,
) -> Result:
    """Answer questions about one video, encoding its frames once for all of them.

    With ``choices`` every question is multiple choice: the options are shown as ``A. text``
    lines and each answer's ``choice`` is a valid letter. ``subtitles``, ``subtitle_lang``,
    ``transcribe`` and ``asr_model`` are :func:`describe`'s.
    """
    qs = [questions] if isinstance(questions, str) else list(questions)
    if not qs or not all(q.strip() for q in qs):
        raise VideoVLMError("give at least one non-empty question (-q)")
    if choices is not None and len(choices) < 2:
        raise VideoVLMError("multiple choice needs at least two --choices")
    rec = ask_recipe(choices, recipe).with_overrides(
        subtitles=subtitles, subtitle_lang=subtitle_lang, transcribe=transcribe,
        asr_model=asr_model)
    return run_recipe(rec, path, model=model, questions=qs, choices=choices, device=device,
                      dtype=dtype, n=n, backend=backend)


def find_recipe(recipe: Recipe | str | None, *, window_s: float | None = None,
                threshold: float | None = None, per_call: int | None = None) -> Recipe:
    """The recipe ``find`` runs: ``recipe`` or the find task's, with the window length, the
    threshold and the windows per call overridden where given; a recipe of another task is
    one line."""
    rec = _recipe(recipe or tasks.get(tasks.FIND_TASK).recipe)
    if rec.task != tasks.FIND_TASK:
        raise VideoVLMError(f"recipe {rec.name!r} is a {rec.task!r} recipe, not a "
                            f"{tasks.FIND_TASK!r} one: run it with `videovlm run`")
    return rec.with_overrides(window_s=window_s, score_threshold=threshold,
                              windows_per_call=per_call)


def find(
    path: str | os.PathLike[str],
    query: str,
    *,
    model: Model | str | None = None,
    window_s: float | None = None,
    threshold: float | None = None,
    n: int | None = None,
    per_call: int | None = None,
    recipe: Recipe | str | None = None,
    backend: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Result:
    """When ``query`` is visible in one video: the video cut into windows of ``window_s``
    seconds, each scored from its own ``n`` frames (P(yes) that the query is visible), and the
    windows at or above ``threshold`` merged into ranges (``result.relevance``; the ranges are
    also ``result.segments``). ``per_call`` windows decode together in one batched call.
    Defaults are the find recipe's."""
    rec = find_recipe(recipe, window_s=window_s, threshold=threshold, per_call=per_call)
    text = tasks.check_query(None, query)
    return run_recipe(rec, path, model=model, questions=[text], device=device, dtype=dtype,
                      n=n, backend=backend)
