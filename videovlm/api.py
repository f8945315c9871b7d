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

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videovlm import tasks
from videovlm.errors import VideoVLMError
from videovlm.model import Model
from videovlm.pack import timestamp_text
from videovlm.pipelines import Recipe, load_recipe
from videovlm.result import Result
from videovlm.run import Asked, Asker, ModelRun, PrefixStore, generation_settings
from videovlm.text import option_texts
from videovlm.video import VideoInputs, WindowedVideo, load_video, read_once, stage_video
from videovlm.windows import (
    OnStart,
    OnWindow,
    Progress,
    Record,
    Span,
    combine,
    drive,
    window_overrides,
    window_record,
)

log = logging.getLogger("videovlm")

__all__ = ["VideoInputs", "WindowedVideo", "ask", "describe", "find", "load_video",
           "option_texts", "run_model", "run_recipe", "run_windows", "stage_video"]


def _recipe(recipe: Recipe | str) -> Recipe:
    return load_recipe(recipe) if isinstance(recipe, str) else recipe


def run_model(
    model: Model,
    inputs: VideoInputs | WindowedVideo,
    recipe: Recipe | str,
    *,
    questions: Sequence[str] | None = None,
    choices: Sequence[str] | None = None,
    question_choices: Sequence[Sequence[str] | None] | None = None,
    question_subtitles: Sequence[str | None] | None = None,
    choice_recipe: Recipe | str | None = None,
    asker: Asker | None = None,
    prefixes: PrefixStore | None = None,
    streamer: Any = None,
    progress_file: str | os.PathLike[str] | None = None,
    on_start: OnStart | None = None,
    on_window: OnWindow | None = None,
) -> Result:
    """The model stage: the recipe's task run over one video's prepared frames, or over a long
    video's windows one after another (a :class:`~videovlm.video.WindowedVideo`, see
    :func:`run_windows`; ``progress_file``, ``on_start`` and ``on_window`` are its).

    ``choices`` are the options of every question; ``question_choices`` gives each question
    its own (None: an open question), as benchmarks and questions files do;
    ``question_subtitles`` each one's own subtitles for a question prompt's ``{subtitles}``
    (CinePile's scene subtitles; None: the video's, at the frames). Questions with
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
    if isinstance(inputs, WindowedVideo):
        tasks.check_takes_questions(rec.name, rec.task, questions or [])
        return run_windows(model, inputs, rec, asker=asker, progress_file=progress_file,
                           on_start=on_start, on_window=on_window)
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
    if question_subtitles is None:
        question_subtitles = [None] * len(questions or [])
    elif len(question_subtitles) != len(questions or []):
        raise ValueError("question_subtitles needs one entry per question")
    asked = [Asked(q, option_texts(c) if c else None, with_choices if c else rec, sub)
             for q, c, sub in zip(questions or [], question_choices, question_subtitles,
                                  strict=True)]
    s = inputs.sampling

    windows_rec = read_once(rec, inputs.dialogue)  # the dialogue was read with the run's frames

    def load(span: Span, n: int) -> VideoInputs:  # a window, decoded like the run's frames
        return load_video(inputs.path, windows_rec, n=n, image_size=model.image_size,
                          backend=s["backend"], fit=s["fit"], seek=s["seek"], info=inputs.info,
                          span=span, dialogue=inputs.dialogue)

    return task.runner(ModelRun(model, inputs, rec, asked, asker=asker, prefixes=prefixes,
                                streamer=streamer, load=load, on_start=on_start,
                                on_window=on_window))


def run_windows(
    model: Model,
    video: WindowedVideo,
    recipe: Recipe,
    *,
    asker: Asker | None = None,
    progress_file: str | os.PathLike[str] | None = None,
    on_start: OnStart | None = None,
    on_window: OnWindow | None = None,
) -> Result:
    """A long video's model stage: each window's frames loaded in turn (the next one while this
    one runs) and put through the task's runner as a run of its own, then the records combined
    and the task's ``finish`` run once (the summary of every window's segments).

    With ``progress_file`` every finished window is kept there (:class:`~videovlm.windows.
    Progress`, keyed by the video, the recipe, the model and the windows), so the same call
    after a kill goes on after the last finished window and returns what an uninterrupted run
    returns (greedy decoding). The caller removes the file once its outputs are written.
    """
    if video.image_size != model.image_size:
        raise VideoVLMError(f"frames are prepared at {video.image_size} px but {model.id} takes "
                            f"{model.image_size} px: stage the video with "
                            "image_size=model.image_size")
    task = tasks.get(recipe.task)
    log.info("%s: %s, in %d windows of about %s, %d frames each (--window changes this)",
             Path(video.path).name, timestamp_text(video.info.duration_s), len(video.spans),
             timestamp_text(float(recipe.windows["length_s"])), video.recipe.sampling["n"])
    progress = None
    if progress_file is not None:
        st = os.stat(video.path)
        key = {"video": {"path": os.path.abspath(video.path), "size": st.st_size,
                         "mtime_ns": st.st_mtime_ns},
               "recipe": video.recipe.to_dict(),  # with the run's -n, backend... applied
               "model": model.info(), "spans": video.spans,
               "image_size": video.image_size}
        progress = Progress(progress_file, key)

    def work(i: int, inputs: VideoInputs) -> Record:
        run = ModelRun(model, inputs, recipe, asker=asker, windowed=True)
        return window_record(video.spans[i], task.runner(run))

    records = drive(video.spans, video.load, work, progress=progress, on_start=on_start,
                    on_window=on_window)
    result = combine(records, video=video.info.to_dict(), model=model.info(),
                     generation=generation_settings(recipe), mode=recipe.mode,
                     length_s=float(recipe.windows["length_s"]), timing_s=video.timing_s,
                     dialogue=None if video.dialogue is None else video.dialogue.source)
    if task.finish is not None:
        whole = VideoInputs(video.path, video.info, recipe.mode, [], [], [], {})
        run = ModelRun(model, whole, recipe, asker=asker)
        task.finish(run, result)
        for stage, seconds in run.timing_s.items():
            result.timing_s[stage] = result.timing_s.get(stage, 0.0) + seconds
    timing = {k: round(v, 4) for k, v in result.timing_s.items()}
    timing["total"] = round(sum(timing.values()), 4)
    result.timing_s = timing
    return result


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
    window: float | None = None,
    progress_file: str | os.PathLike[str] | None = None,
    on_start: OnStart | None = None,
    on_window: OnWindow | None = None,
    **overrides: Any,
) -> Result:
    """Run any recipe on one video; ``overrides`` are :func:`load_video`'s keywords (n,
    backend...).

    A describing recipe cuts a video longer than its ``[windows] after_s`` into windows
    (``window``: seconds, overrides both the length and the threshold; 0: never), each described
    from its own ``n`` frames (:func:`run_windows`, where ``progress_file``, ``on_start`` and
    ``on_window`` go). Pass a loaded :class:`~videovlm.model.Model` to reuse it across calls; a
    name or path loads one (and fails with one clear line when it cannot be had, before any
    decoding).
    """
    rec = windowed_recipe(_recipe(recipe), window)
    m = _model(model, device, dtype)
    inputs = stage_video(path, rec, image_size=m.image_size, **overrides)
    return run_model(m, inputs, rec, questions=questions, choices=choices,
                     progress_file=progress_file, on_start=on_start, on_window=on_window)


def windowed_recipe(recipe: Recipe, window: float | None) -> Recipe:
    """``recipe`` with ``window`` seconds (``--window``) as its windows: videos longer than that
    are cut into windows that long; 0 turns windows off; None keeps the recipe's."""
    if window is None:
        return recipe
    if not tasks.get(recipe.task).windowed:
        raise VideoVLMError(f"recipe {recipe.name!r} ({recipe.task}) is not run in windows: "
                            "drop --window (only describing recipes are; find cuts its own: "
                            "videovlm find --window)")
    if 0 < window < 1:
        raise VideoVLMError(f"a window of {window} s is too short: give at least 1 second, or "
                            "0 for no windows")
    return recipe.with_overrides(**window_overrides(window))


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
    window: float | None = None,
    subtitles: str | None = None,
    subtitle_lang: str | None = None,
    transcribe: bool | None = None,
    asr_model: str | None = None,
) -> Result:
    """Timestamped descriptions of one video: per scene (default) or one timeline prompt.

    ``mode`` picks the describing task (:data:`videovlm.tasks.DESCRIBE_MODES`); the recipe
    defaults to that task's. ``n`` is the frame budget for the whole video, or for each window
    of a long one (``window`` seconds; by default a video over 10 minutes is cut into 5-minute
    windows, the recipe's ``[windows]``). ``subtitles`` (``auto``, ``none`` or a file) and
    ``subtitle_lang`` override the recipe's ``[dialogue]``; ``transcribe`` takes the dialogue
    from speech recognition instead (``asr_model``: a Whisper ``ID|PATH``).
    """
    rec = describe_recipe(mode, recipe).with_overrides(
        subtitles=subtitles, subtitle_lang=subtitle_lang, transcribe=transcribe,
        asr_model=asr_model)
    return run_recipe(rec, path, model=model, device=device, dtype=dtype, n=n, backend=backend,
                      window=window)


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
    return rec.with_overrides(length_s=window_s, score_threshold=threshold,
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
    on_start: OnStart | None = None,
    on_window: OnWindow | None = None,
) -> Result:
    """When ``query`` is visible in one video: the video cut into windows of ``window_s``
    seconds, each scored from its own ``n`` frames (P(yes) that the query is visible), and the
    windows at or above ``threshold`` merged into ranges (``result.relevance``; the ranges are
    also ``result.segments``). ``per_call`` windows decode together in one batched call.
    Defaults are the find recipe's; ``on_start`` and ``on_window`` hear of the windows as
    they are scored (:func:`videovlm.windows.drive`'s hooks: a progress bar)."""
    rec = find_recipe(recipe, window_s=window_s, threshold=threshold, per_call=per_call)
    text = tasks.check_query(None, query)
    return run_recipe(rec, path, model=model, questions=[text], device=device, dtype=dtype,
                      n=n, backend=backend, on_start=on_start, on_window=on_window)
